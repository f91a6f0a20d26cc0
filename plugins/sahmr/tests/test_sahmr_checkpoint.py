"""SA-HMR checkpoints: the released layout (4437 keys), strict loading, dropped entries, errors."""

from __future__ import annotations

import pytest
import torch

from meshrec.errors import CheckpointError
from meshrec_sahmr.checkpoint import NUM_KEYS, load_sahmr_network, network_from_state, sahmr_state_dict
from meshrec_sahmr.model import SAHMRNetwork
from sahmr_synthetic import released_layout, tiny_network

# Shapes the released checkpoint holds (shared/reference/sahmr.md section 3), without the "net." prefix.
RELEASED_SHAPES = {
    "rcnet.root_net.out_conv.weight": (41, 64, 1, 1),
    "rcnet.root_net.hrnet.transition3.3.0.0.weight": (512, 256, 3, 3),
    "rcnet.contact_net.fc_in.weight": (35, 35),
    "rcnet.contact_net.stem.0.kernel": (27, 35, 32),
    "rcnet.contact_net.stage2.1.downsample.0.kernel": (32, 64),
    "rcnet.contact_net.up1.0.net.0.kernel": (8, 256, 256),
    "rcnet.contact_net.up1.1.0.net.0.kernel": (27, 384, 256),
    "rcnet.contact_net.classifier.0.weight": (12, 96),
    "rcnet.contact_net.point_transforms.0.0.weight": (256, 32),
    "metro_enhanced.backbone.final_layer.0.weight": (2048, 1024, 1, 1),
    "metro_enhanced.backbone.classifier.weight": (1000, 2048),
    "metro_enhanced.backbone.downsamp_modules.2.0.bias": (1024,),
    "metro_enhanced.trans_encoder.0.bert.img_embedding.weight": (1024, 2051),
    "metro_enhanced.trans_encoder.0.bert.embeddings.word_embeddings.weight": (30522, 1024),
    "metro_enhanced.trans_encoder.0.bert.position_embeddings.weight": (512, 1024),
    "metro_enhanced.trans_encoder.0.bert.encoder.layer.3.intermediate.dense.weight": (3072, 1024),
    "metro_enhanced.trans_encoder.1.bert.encoder.linear_cp.1.mlp.0.weight": (512, 512),
    "metro_enhanced.trans_encoder.2.bert.encoder.loftr_layer.mlp.2.weight": (128, 256),
    "metro_enhanced.trans_encoder.2.bert.encoder.layer.0.intermediate.dense.weight": (3072, 128),
    "metro_enhanced.trans_encoder.2.cls_head.weight": (3, 128),
    "metro_enhanced.trans_encoder.2.residual.weight": (3, 128),
    "metro_enhanced.conv_learn_tokens.weight": (445, 49, 1),
    "metro_enhanced.upsampling.weight": (1723, 431),
    "metro_enhanced.upsampling2.weight": (6890, 1723),
}


@pytest.fixture(scope="module")
def released_state():
    with torch.device("meta"):  # the layout only: no 1.7 GB of weights
        return SAHMRNetwork().state_dict()


def test_released_architecture_has_the_checkpoint_keys(released_state):
    assert len(released_state) == NUM_KEYS == 4437
    def count(prefix):
        return sum(key.startswith(prefix + ".") for key in released_state)

    assert count("rcnet.root_net.hrnet") == 1830
    assert count("rcnet.root_net.out_conv") == 2
    assert count("rcnet.contact_net") == 319
    assert count("metro_enhanced.backbone") == 1956
    for i in range(3):
        assert count(f"metro_enhanced.trans_encoder.{i}") == 108
    for name in ("conv_learn_tokens", "upsampling", "upsampling2"):
        assert sum(key.startswith(f"metro_enhanced.{name}.") for key in released_state) == 2
    for key, shape in RELEASED_SHAPES.items():
        assert tuple(released_state[key].shape) == shape, key
    assert not any(key.endswith(("img_mean", "img_std", "init_verts431", "part_average")) for key in released_state)


def test_architecture_is_read_back_from_the_released_shapes(released_state):
    with torch.device("meta"):
        rebuilt = network_from_state(released_state).state_dict()
    assert {k: tuple(v.shape) for k, v in rebuilt.items()} == {k: tuple(v.shape) for k, v in released_state.items()}


def test_synthetic_checkpoint_in_the_released_layout_loads_strictly(tmp_path):
    network = tiny_network(seed=3)
    checkpoint = released_layout(network)
    assert all(key.startswith("net.") for key in checkpoint["network"])
    path = tmp_path / "sahmr_prox_e30.pth"
    torch.save(checkpoint, path)
    loaded = load_sahmr_network(path)
    for key, value in network.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert len(loaded.state_dict()) == len(checkpoint["network"])


def test_body_model_copies_are_dropped_and_bare_state_dicts_accepted():
    network = tiny_network()
    checkpoint = released_layout(network)
    checkpoint["network"]["net.smpl.v_template"] = torch.zeros(6890, 3)
    checkpoint["network"]["net.mesh_sampler._D_0"] = torch.zeros(3)
    state = sahmr_state_dict(checkpoint)
    assert set(state) == set(network.state_dict())
    assert set(sahmr_state_dict({k[4:]: v for k, v in checkpoint["network"].items()})) == set(state)


def test_key_errors_name_the_keys(tmp_path):
    checkpoint = released_layout(tiny_network())
    del checkpoint["network"]["net.rcnet.contact_net.stem.0.kernel"]
    torch.save(checkpoint, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="stem.0.kernel"):
        load_sahmr_network(tmp_path / "missing.pth")
    checkpoint = released_layout(tiny_network())
    checkpoint["network"]["net.metro_enhanced.extra_head.weight"] = torch.zeros(2)
    torch.save(checkpoint, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="extra_head"):
        load_sahmr_network(tmp_path / "extra.pth")
    checkpoint = released_layout(tiny_network())
    checkpoint["network"]["net.metro_enhanced.upsampling.bias"] = torch.zeros(5)
    torch.save(checkpoint, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match="upsampling"):
        load_sahmr_network(tmp_path / "shape.pth")


def test_not_an_sahmr_checkpoint(tmp_path):
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(1)}}, tmp_path / "hmr.pth")
    with pytest.raises(CheckpointError, match="a dict with a .network."):
        load_sahmr_network(tmp_path / "hmr.pth")
    rcnet_only = {"network": {k: v for k, v in released_layout(tiny_network())["network"].items()
                              if k.startswith("net.rcnet.")}}
    torch.save(rcnet_only, tmp_path / "rcnet.pth")
    with pytest.raises(CheckpointError, match="RCNet-only"):
        load_sahmr_network(tmp_path / "rcnet.pth")
    with pytest.raises(CheckpointError, match="SA-HMR checkpoint"):
        sahmr_state_dict([1, 2])


class _Payload:
    def __reduce__(self):
        return (print, ("this must not run",))


def test_loading_is_weights_only(tmp_path):
    checkpoint = released_layout(tiny_network())
    checkpoint["meta"] = _Payload()
    torch.save(checkpoint, tmp_path / "payload.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_sahmr_network(tmp_path / "payload.pth")


def test_metro_3dpw_state_dict_initialises_module_2(tmp_path):
    from meshrec_sahmr.checkpoint import load_metro_pretrained

    source = tiny_network(seed=4).metro_enhanced
    metro = {k: v for k, v in source.state_dict().items() if "linear_cp" not in k and "loftr_layer" not in k}
    metro["cam_param_fc.weight"] = torch.zeros(1, 3)  # METRO's camera head: not part of SA-HMR
    torch.save(metro, tmp_path / "metro_3dpw_state_dict.bin")
    target = tiny_network(seed=5).metro_enhanced
    left = load_metro_pretrained(target, tmp_path / "metro_3dpw_state_dict.bin")
    assert left and all("linear_cp" in k or "loftr_layer" in k for k in left)
    for key, value in metro.items():
        if key in target.state_dict():
            assert torch.equal(target.state_dict()[key], value), key
    del metro["upsampling.weight"]
    torch.save(metro, tmp_path / "broken.bin")
    with pytest.raises(CheckpointError, match="upsampling.weight"):
        load_metro_pretrained(target, tmp_path / "broken.bin")
