"""Released checkpoint layouts load strictly; bad files are refused with clear errors."""

from __future__ import annotations

import pytest
import torch

from mahmr_checkpoints import FULL, SMALL, SMALL_OVERRIDES, synthetic_state, upstream_shapes
from meshrec.errors import CheckpointError
from meshrec_mahmr.checkpoint import init_from_dinov2, load_dinov2, load_mahmr_network, mahmr_state_dict
from meshrec_mahmr.model import MAHMRNetwork


@pytest.mark.parametrize("preset, layout, keys", [
    ("mahmr_stage3", dict(kid=True, fov=True, dn=False), 679),
    ("mahmr_stage2", dict(kid=False, fov=True, dn=False), 679),
    ("mahmr_stage1", dict(kid=False, fov=False, dn=True), 673),
    ("sat_644", dict(kid=False, fov=False, dn=True), 673),
])
def test_real_size_layout_matches_the_network(preset, layout, keys):
    """Key names and shapes of the released files (687 / 681 keys with the 8 SMPL arrays), checked
    on the meta device so no 224 M parameters are allocated."""
    expected = upstream_shapes(FULL, smpl=False, **layout)
    assert len(expected) == keys and len(upstream_shapes(FULL, **layout)) == keys + 8
    with torch.device("meta"):
        network = MAHMRNetwork(preset)
    state = network.state_dict()
    assert set(state) == set(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected


@pytest.mark.slow
def test_real_size_synthetic_checkpoint_loads_strictly(tmp_path):
    path = tmp_path / "mahmr_stage3.bin"
    torch.save(synthetic_state(FULL, seed=1), path)
    network, info = load_mahmr_network(path, return_info=True)
    assert info["keys_in_file"] == 687 and info["keys_loaded"] == 679 and info["keys_dropped"] == 8
    assert sum(p.numel() for p in network.parameters()) > 220e6


def test_small_checkpoint_loads_strictly_with_all_values(small_checkpoint):
    network, info = load_mahmr_network(small_checkpoint, return_info=True, **SMALL_OVERRIDES)
    assert info["keys_dropped"] == 8 and info["keys_loaded"] == info["keys_in_file"] - 8
    config = info["config"]
    assert (config.input_size, config.embed_dim, config.depth, config.dec_layers, config.num_queries,
            config.dim_shape, config.use_fov, config.use_dn) == (224, 64, 5, 3, 7, 11, True, False)
    saved = torch.load(small_checkpoint, weights_only=True)
    for key, value in network.state_dict().items():
        torch.testing.assert_close(value, saved[key].to(value.dtype), rtol=0, atol=0, msg=key)
    # the aliased box heads are one module in the network, as upstream
    assert network.decoder.decoder.bbox_embed is network.bbox_embed


def test_sathmr_layout_and_module_prefix(tmp_path):
    state = synthetic_state(SMALL, seed=2, kid=False, fov=False, dn=True)
    path = tmp_path / "sat_644.pth"
    torch.save({"module." + k: v for k, v in state.items()}, path)  # Accelerate multi-GPU save
    network = load_mahmr_network(path, "sathmr", **SMALL_OVERRIDES)
    assert network.config.depth_output == "pelvis" and not network.config.use_fov
    assert network.dn_enc.weight.shape == (64, 82)


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path):
    state = synthetic_state(SMALL, seed=0)
    broken = dict(state)
    del broken["conf_head.weight"]
    broken["extra_head.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="conf_head.weight.*extra_head.weight|missing keys: conf_head.weight"):
        load_mahmr_network(broken, **SMALL_OVERRIDES)
    wrong = dict(state)
    wrong["level_embed"] = torch.zeros(4, 64)
    with pytest.raises(CheckpointError, match="level_embed"):
        load_mahmr_network(wrong, **SMALL_OVERRIDES)
    with pytest.raises(CheckpointError, match="not an MA-HMR"):
        mahmr_state_dict({"backbone.conv1.weight": torch.zeros(1)}, "x.pth")


def test_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.bin"
    torch.save({"state": synthetic_state(SMALL), "note": object.__new__(_Payload)}, path)
    with pytest.raises(CheckpointError, match="safe loader"):
        load_mahmr_network(path, **SMALL_OVERRIDES)


class _Payload:
    pass


def _dinov2_state(seed=0, embed=64, depth=5, grid=37):
    g = torch.Generator().manual_seed(seed)
    state = {"cls_token": torch.randn(1, 1, embed, generator=g), "pos_embed": torch.randn(1, grid * grid + 1, embed, generator=g),
             "mask_token": torch.zeros(1, embed), "patch_embed.proj.weight": torch.randn(embed, 3, 14, 14, generator=g),
             "patch_embed.proj.bias": torch.randn(embed, generator=g), "norm.weight": torch.rand(embed, generator=g),
             "norm.bias": torch.randn(embed, generator=g)}
    for i in range(depth):
        for name, shape in (("norm1.weight", (embed,)), ("norm1.bias", (embed,)), ("attn.qkv.weight", (3 * embed, embed)),
                            ("attn.qkv.bias", (3 * embed,)), ("attn.proj.weight", (embed, embed)), ("attn.proj.bias", (embed,)),
                            ("ls1.gamma", (embed,)), ("norm2.weight", (embed,)), ("norm2.bias", (embed,)),
                            ("mlp.fc1.weight", (4 * embed, embed)), ("mlp.fc1.bias", (4 * embed,)),
                            ("mlp.fc2.weight", (embed, 4 * embed)), ("mlp.fc2.bias", (embed,)), ("ls2.gamma", (embed,))):
            state[f"blocks.{i}.{name}"] = torch.randn(shape, generator=g)
    return state


def test_dinov2_weights_load_and_initialise_the_encoder(tmp_path):
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    state = _dinov2_state()
    torch.save(state, path)
    vit = load_dinov2(path)
    assert vit.patch_size == 14 and len(vit.blocks) == 5 and vit.pos_embed.shape == (1, 1370, 64)
    tokens = vit.forward_features(torch.randn(1, 3, 56, 70))["x_norm_patchtokens"]
    assert tokens.shape == (1, 4 * 5, 64)
    network = MAHMRNetwork("mahmr_stage3", input_size=224, embed_dim=64, depth=5, num_heads=4, hidden_dim=64,
                           dec_layers=3, dim_feedforward=96, num_queries=7)
    init_from_dinov2(network, vit)
    torch.testing.assert_close(network.encoder.additional_blocks[2].attn.qkv.weight, state["blocks.2.attn.qkv.weight"])
    torch.testing.assert_close(network.encoder.blocks[4].mlp.fc2.bias, state["blocks.4.mlp.fc2.bias"])
    torch.testing.assert_close(network.encoder_patch_proj[0].weight, state["patch_embed.proj.weight"])
    torch.testing.assert_close(network.encoder_cr_token, state["cls_token"][0] + state["pos_embed"][:, 0])
    assert network.encoder_pos_embeds.shape == (16, 16, 64)
    # the table is DINOv2's own 37 x 37 grid resized (bicubic, 0.1 offset), not a copy
    torch.testing.assert_close(network.encoder_pos_embeds, vit.position_table(16, 16))
