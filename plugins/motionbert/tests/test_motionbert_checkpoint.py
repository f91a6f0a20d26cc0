"""Loading MotionBERT's checkpoint layouts: strict, safe, with errors naming keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meshrec.errors import CheckpointError
from meshrec_motionbert.checkpoint import load_backbone, load_mesh_network, load_pretrained_backbone, mesh_state_dict
from motionbert_checkpoints import SMPL_COPY
from motionbert_small import SMALL, small_network


@pytest.mark.slow
def test_released_layout_loads_strictly(motionbert_checkpoint):
    saved = torch.load(motionbert_checkpoint, weights_only=False)
    assert sorted(saved) == ["best_jpe", "epoch", "lr", "model", "optimizer"]
    assert isinstance(saved["best_jpe"], np.float64)
    model = saved["model"]
    assert len(model) == 293 and all(k.startswith("module.") for k in model)
    assert sum(k.startswith("module.head.smpl.") for k in model) == len(SMPL_COPY) == 13
    with pytest.raises(Exception, match="weights_only|Unsupported global|WeightsUnpickler"):
        torch.load(motionbert_checkpoint, weights_only=True)  # the numpy scalar needs the allowlist
    network = load_mesh_network(motionbert_checkpoint)
    state = network.state_dict()
    assert len(state) == 280
    for key, value in state.items():
        assert torch.equal(value, model[f"module.{key}"]), key


def test_pretrained_backbone_alone(tmp_path):
    """MB_release's layout (model_pos, DataParallel prefix) at small sizes."""
    source = small_network(seed=3, dtype=torch.float32).backbone.state_dict()
    path = tmp_path / "mb_release.bin"
    torch.save({"epoch": 90, "lr": 1e-4, "optimizer": {"state": {}, "param_groups": []},
                "model_pos": {f"module.{k}": v for k, v in source.items()}, "min_loss": np.float64(0.05)}, path)
    backbone = load_backbone(path, **SMALL)
    assert all(torch.equal(v, source[k]) for k, v in backbone.state_dict().items())
    network = load_pretrained_backbone(small_network(seed=5, dtype=torch.float32), path)
    assert all(torch.equal(v, source[k]) for k, v in network.backbone.state_dict().items())
    with pytest.raises(CheckpointError, match="pre-trained backbone"):
        load_mesh_network(path, hidden_dim=8, **SMALL)


@pytest.mark.slow
def test_released_backbone_layout_has_260_keys(tmp_path):
    from motionbert_checkpoints import backbone_shapes

    shapes = backbone_shapes()
    assert len(shapes) == 260
    from meshrec_motionbert.model import DSTformer

    assert {k: tuple(v.shape) for k, v in DSTformer().state_dict().items()} == shapes


def _small_checkpoint(path, state, **extra):
    torch.save({"epoch": 1, "lr": [1e-4], "optimizer": {"state": {}, "param_groups": []},
                "model": {f"module.{k}": v for k, v in state.items()}, "best_jpe": np.float64(1.0), **extra}, path)
    return path


def test_small_checkpoint_round_trip_with_smpl_copy_dropped(tmp_path):
    network = small_network(seed=4, dtype=torch.float32)
    state = dict(network.state_dict())
    state["head.smpl.v_template"] = torch.zeros(6890, 3)  # licensed arrays in the file: dropped
    path = _small_checkpoint(tmp_path / "small.bin", state)
    loaded = load_mesh_network(path, hidden_dim=8, **SMALL)
    for key, value in network.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path):
    state = dict(small_network(dtype=torch.float32).state_dict())
    del state["head.fc1.bias"]
    state["head.extra.weight"] = torch.zeros(2)
    state["backbone.norm.weight"] = torch.zeros(7)
    path = _small_checkpoint(tmp_path / "broken.bin", state)
    with pytest.raises(CheckpointError) as error:
        load_mesh_network(path, hidden_dim=8, **SMALL)
    message = str(error.value)
    assert "missing keys: head.fc1.bias" in message
    assert "unexpected keys: head.extra.weight" in message
    assert "backbone.norm.weight: checkpoint (7,), network (16,)" in message


def test_refiner_and_other_files_are_recognised(tmp_path):
    refiner = {"backbone.norm.weight": torch.zeros(512), "head.fc2.weight": torch.zeros(512, 144, 5)}
    with pytest.raises(CheckpointError, match="refiner"):
        mesh_state_dict({"model": refiner})
    with pytest.raises(CheckpointError, match="'backbone.\\*' and 'head.\\*'"):
        mesh_state_dict({"model": {"layer.weight": torch.zeros(2)}})
    with pytest.raises(CheckpointError, match="state_dict of tensors"):
        mesh_state_dict({"model": {"a": 1}})


class _Payload:
    def __reduce__(self):
        return (print, ("this must not run",))


def test_code_in_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.bin"
    torch.save({"model": {"module.head.fc1.bias": torch.zeros(2)}, "best_jpe": _Payload()}, path)
    with pytest.raises(CheckpointError, match="safe loader"):
        load_mesh_network(path)
