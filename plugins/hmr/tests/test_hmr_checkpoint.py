"""Loading mmhuman3d HMR checkpoints: layout, strictness, safety, and the network's maths."""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from meshrec.testing.fixtures import CodeRunningPayload
from meshrec.errors import CheckpointError
from meshrec_hmr.checkpoint import DROPPED_PREFIXES, hmr_state_dict, load_hmr_network
from hmr_checkpoints import RESNET50_STAGES, mmhuman3d_hmr_state_dict, mmhuman3d_meta


def test_loads_with_numpy_metadata_and_drops_training_and_smpl_entries(hmr_checkpoint):
    network = load_hmr_network(hmr_checkpoint)
    state = mmhuman3d_hmr_state_dict()
    loaded = network.state_dict()
    assert not any(key.startswith(DROPPED_PREFIXES) for key in loaded)
    assert set(loaded) == {key for key in state if key.startswith(("backbone.", "head."))}
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key


def _batch_norm(x, state, prefix):
    return F.batch_norm(x, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                        state[f"{prefix}.weight"], state[f"{prefix}.bias"], training=False, eps=1e-5)


def upstream_hmr(images: torch.Tensor, state: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HMR straight from the raw state_dict, written independently of meshrec's modules:
    mmhuman3d's ResNet-50 (style 'pytorch': stride in the 3x3), HMRHead (3 iterations, fc1 ->
    dropout -> fc2 -> dropout, no activation, residual decoders) and SPIN's rot6d_to_rotmat."""
    x = F.relu(_batch_norm(F.conv2d(images, state["backbone.conv1.weight"], stride=2, padding=3), state, "backbone.bn1"))
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    for stage, (blocks, _) in enumerate(RESNET50_STAGES, start=1):
        for block in range(blocks):
            p = f"backbone.layer{stage}.{block}"
            stride = 2 if block == 0 and stage > 1 else 1
            out = F.relu(_batch_norm(F.conv2d(x, state[f"{p}.conv1.weight"]), state, f"{p}.bn1"))
            out = F.relu(_batch_norm(F.conv2d(out, state[f"{p}.conv2.weight"], stride=stride, padding=1), state, f"{p}.bn2"))
            out = _batch_norm(F.conv2d(out, state[f"{p}.conv3.weight"]), state, f"{p}.bn3")
            shortcut = x
            if block == 0:
                shortcut = _batch_norm(F.conv2d(x, state[f"{p}.downsample.0.weight"], stride=stride), state, f"{p}.downsample.1")
            x = F.relu(out + shortcut)
    features = x.mean(dim=(2, 3))
    pose, shape, cam = state["head.init_pose"], state["head.init_shape"], state["head.init_cam"]
    pose, shape, cam = (t.expand(len(images), -1) for t in (pose, shape, cam))
    for _ in range(3):
        h = F.linear(torch.cat([features, pose, shape, cam], 1), state["head.fc1.weight"], state["head.fc1.bias"])
        h = F.linear(h, state["head.fc2.weight"], state["head.fc2.bias"])
        pose = pose + F.linear(h, state["head.decpose.weight"], state["head.decpose.bias"])
        shape = shape + F.linear(h, state["head.decshape.weight"], state["head.decshape.bias"])
        cam = cam + F.linear(h, state["head.deccam.weight"], state["head.deccam.bias"])
    # SPIN: view each joint's 6 numbers as a 3x2 matrix filled row by row; its columns a1, a2.
    m = pose.reshape(-1, 3, 2)
    a1, a2 = m[:, :, 0], m[:, :, 1]
    b1 = a1 / a1.norm(dim=1, keepdim=True)
    b2 = a2 - (b1 * a2).sum(1, keepdim=True) * b1
    b2 = b2 / b2.norm(dim=1, keepdim=True)
    b3 = torch.cross(b1, b2, dim=1)
    return torch.stack([b1, b2, b3], dim=-1).view(len(images), 24, 3, 3), shape, cam


def test_network_equals_the_upstream_maths(hmr_checkpoint):
    network = load_hmr_network(hmr_checkpoint).double().eval()
    state = {key: value.double() if value.is_floating_point() else value for key, value in mmhuman3d_hmr_state_dict().items()}
    images = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        ours = network(images)
        rotmat, betas, cam = upstream_hmr(images, state)
    torch.testing.assert_close(ours["rotmat"], rotmat, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ours["betas"], betas, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ours["cam"], cam, atol=1e-10, rtol=1e-10)
    assert ours["rotmat"].shape == (2, 24, 3, 3) and ours["betas"].shape == (2, 10) and ours["cam"].shape == (2, 3)


def _save(tmp_path, state, name="ckpt.pth", meta=True):
    path = tmp_path / name
    torch.save({"meta": mmhuman3d_meta(), "state_dict": state} if meta else state, path)
    return path


def test_bare_state_dict_and_ddp_prefix(tmp_path):
    state = mmhuman3d_hmr_state_dict()
    load_hmr_network(_save(tmp_path, state, meta=False))
    load_hmr_network(_save(tmp_path, {f"module.{k}": v for k, v in state.items()}, "ddp.pth"))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("head.fc2.bias"), r"missing keys: head\.fc2\.bias"),
        (lambda s: s.__setitem__("head.extra.weight", torch.zeros(3)), r"unexpected keys: head\.extra\.weight"),
        (lambda s: s.__setitem__("head.decpose.weight", torch.zeros(138, 1024)),
         r"wrong shapes: head\.decpose\.weight: checkpoint \(138, 1024\), network \(144, 1024\)"),
        (lambda s: s.__setitem__("backbone.layer4.2.bn3.running_var", torch.zeros(1024)),
         r"backbone\.layer4\.2\.bn3\.running_var: checkpoint \(1024,\), network \(2048,\)"),
    ],
)
def test_strict_loading_names_the_key(tmp_path, edit, message):
    state = mmhuman3d_hmr_state_dict()
    edit(state)
    with pytest.raises(CheckpointError, match=message):
        load_hmr_network(_save(tmp_path, state))


def test_not_an_hmr_checkpoint(tmp_path):
    other = {"state_dict": {"encoder.weight": torch.zeros(2), "decoder.weight": torch.zeros(2)}}
    path = tmp_path / "other.pth"
    torch.save(other, path)
    with pytest.raises(CheckpointError, match=r"not an HMR checkpoint in mmhuman3d's layout.*\['decoder\.', 'encoder\.'\]"):
        load_hmr_network(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not an HMR checkpoint: expected a dict"):
        load_hmr_network(path)
    with pytest.raises(CheckpointError, match="not an HMR checkpoint"):
        hmr_state_dict({"state_dict": {"backbone.conv1.weight": torch.zeros(1)}}, "x")


def test_corrupt_and_missing_files(tmp_path, hmr_checkpoint):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(hmr_checkpoint.read_bytes()[:100000])
    with pytest.raises(CheckpointError, match="damaged or truncated torch checkpoint"):
        load_hmr_network(truncated)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_hmr_network(tmp_path / "nope.pth")


def test_code_in_a_checkpoint_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    torch.save({"meta": {"payload": CodeRunningPayload(marker)}, "state_dict": mmhuman3d_hmr_state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"safe loader .* refused this checkpoint: it asks for posix.system.*nothing from it was run.*trust_checkpoint=True"):
        load_hmr_network(path)
    assert not marker.exists()
