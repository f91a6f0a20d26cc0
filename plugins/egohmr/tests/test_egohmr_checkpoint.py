"""Synthetic checkpoints in the released layouts load strictly; the converters drop exactly the
SMPL / COAP / discriminator entries; the ways of naming the checkpoints resolve."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from egohmr_checkpoints import stage1_state_dict, stage2_state_dict
from meshrec.errors import CheckpointError
from meshrec_egohmr.checkpoint import (
    STAGE1_FILE,
    STAGE2_FILE,
    STATS_FILE,
    convert_stage1,
    convert_stage2,
    load_stage1,
    load_stage2,
    read_statistics,
    resolve_checkpoints,
)

pytestmark = pytest.mark.slow


def _prefix_counts(keys):
    counts = {}
    for key in keys:
        counts[key.split(".")[0]] = counts.get(key.split(".")[0], 0) + 1
    return counts


def test_stage1_layout_and_strict_load(egohmr_release):
    state = torch.load(egohmr_release / STAGE1_FILE, weights_only=True)["state_dict"]
    assert len(state) == 624
    assert _prefix_counts(state) == {"initialized": 1, "backbone": 318, "flow": 183, "scene_enc": 24,
                                     "discriminator": 62, "smpl": 12, "smpl_male": 12, "smpl_female": 12}
    kept, dropped = convert_stage1(state)
    assert len(kept) == 526 and len(dropped) == 98
    network = load_stage1(egohmr_release / STAGE1_FILE)
    loaded = network.state_dict()
    assert set(loaded) == set(kept)
    assert all(torch.equal(loaded[key], kept[key]) for key in kept)
    assert not network.training


def test_stage2_layout_strict_load_and_statistics(egohmr_release):
    state = torch.load(egohmr_release / STAGE2_FILE, weights_only=True)["state_dict"]
    assert len(state) == 532
    assert _prefix_counts(state) == {"input_process": 2, "sequence_pos_encoder": 1, "embed_timestep": 5, "backbone": 318,
                                     "scene_enc": 24, "transl_enc": 4, "diffusion_model": 85, "beta_layer": 5,
                                     "smpl": 64, "smpl_male": 12, "smpl_female": 12}
    assert sum(key.startswith("smpl.coap.") for key in state) == 52
    kept, dropped = convert_stage2(state)
    assert len(kept) == 444 and len(dropped) == 88
    network = load_stage2(egohmr_release / STAGE2_FILE)
    loaded = network.state_dict()
    assert set(loaded) == set(kept) and all(torch.equal(loaded[key], kept[key]) for key in kept)
    mean, std = read_statistics(egohmr_release / "91453" / STATS_FILE)
    assert torch.equal(network.Xmean, mean) and torch.equal(network.Xstd, std)
    # the shared positional table appears under both names, as upstream saves it
    assert torch.equal(loaded["sequence_pos_encoder.pe"], loaded["embed_timestep.sequence_pos_encoder.pe"])


def test_mismatched_checkpoints_are_refused(tmp_path):
    state = stage1_state_dict()
    del state["flow.flow._transform._transforms.0.shift"]
    state["flow.fc_head.layers.0.weight"] = torch.zeros(1024, 2048)  # ProHMR's 2048-d context
    path = tmp_path / "best_model.pt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"missing keys: flow\.flow\._transform\._transforms\.0\.shift.*wrong shapes"):
        load_stage1(path)
    state = stage2_state_dict()
    state["unexpected.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "stage2.pt")
    with pytest.raises(CheckpointError, match="unexpected keys: unexpected.weight"):
        load_stage2(tmp_path / "stage2.pt", statistics=tmp_path / "missing.npz")


def test_pickled_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"state_dict": {}, "extra": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="safe loader"):
        load_stage1(tmp_path / "evil.pt")


def test_statistics_errors(tmp_path):
    with pytest.raises(CheckpointError, match="preprocess_stats"):
        read_statistics(tmp_path / "preprocess_stats.npz")
    np.savez(tmp_path / "bad.npz", Xmean=np.zeros(10))
    with pytest.raises(CheckpointError, match="Xmean and Xstd"):
        read_statistics(tmp_path / "bad.npz")


def test_resolve_checkpoint_forms(egohmr_release, tmp_path):
    folder = resolve_checkpoints(egohmr_release)
    assert folder.stage1 == egohmr_release / STAGE1_FILE and folder.stage2 == egohmr_release / STAGE2_FILE
    assert folder.statistics == egohmr_release / "91453" / STATS_FILE
    assert resolve_checkpoints(egohmr_release.parent) == folder  # the folder holding checkpoints_egohmr
    assert resolve_checkpoints(egohmr_release / STAGE2_FILE) == folder  # stage 1 found beside it
    mapping = resolve_checkpoints({"stage1": egohmr_release / STAGE1_FILE, "stage2": egohmr_release / STAGE2_FILE})
    assert mapping == folder
    alone = resolve_checkpoints(egohmr_release / STAGE1_FILE, need_stage2=False)
    assert alone.stage1 == egohmr_release / STAGE1_FILE and alone.stage2 is None
    lone = tmp_path / "lone.pt"
    shutil.copy(egohmr_release / STAGE1_FILE, lone)
    with pytest.raises(CheckpointError, match="stage1_checkpoint"):
        resolve_checkpoints(lone)
    with pytest.raises(CheckpointError, match="not EgoHMR's checkpoints_egohmr folder"):
        resolve_checkpoints(tmp_path)
    with pytest.raises(CheckpointError, match="'stage1'"):
        resolve_checkpoints({"stage2": egohmr_release / STAGE2_FILE})
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoints({"stage1": tmp_path / "nope.pt", "stage2": egohmr_release / STAGE2_FILE})
