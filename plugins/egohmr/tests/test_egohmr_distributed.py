"""The egobody-egohmr evaluation under torchrun: 2 CPU ranks (gloo) give the numbers of a single
process (the sampling noise is seeded per frame, not per rank or batch)."""

from __future__ import annotations

import json

import pytest

from meshrec.testing.torchrun import torchrun
from meshrec_egohmr.checkpoint import STAGE2_FILE
from test_egohmr_egobody import write_cubes, write_egobody

pytestmark = pytest.mark.slow


def test_torchrun_egobody_eval_equals_a_single_process_run(tmp_path, egohmr_release, body_models_dir):
    data = tmp_path / "egobody"
    data.mkdir()
    write_egobody(data, frames=5)  # an odd count: the two ranks get 3 and 2 frames
    write_cubes(data, frames=5)
    # batch size 1 and one thread per process: each frame goes through the float32 networks alone
    # in both runs, so with per-frame seeds the per-frame values are the same bits
    command = ["eval", "--method", "egohmr", "--dataset", "egobody-egohmr", "--data-root", str(data),
               "--checkpoint", str(egohmr_release / STAGE2_FILE), "--body-models", str(body_models_dir),
               "--device", "cpu", "--batch-size", "1", "--option", "timestep_respacing=ddim5", "--option", "num_samples=2",
               "--option", "seed=0", "--option", "guidance=false", "--option", "stage1_scene_points=2000",
               "--dataset-option", "cubes=from_pred"]
    torchrun(*command, "--out", str(tmp_path / "single.json"), ranks=1, timeout=600)
    result = torchrun(*command, "--out", str(tmp_path / "sharded.json"), ranks=2, timeout=600)
    single = json.loads((tmp_path / "single.json").read_text())
    sharded = json.loads((tmp_path / "sharded.json").read_text())
    assert sharded["world_size"] == 2 and result.stdout.count('"metrics"') == 1  # rank 0 reports, once
    first, second = single["metrics"], sharded["metrics"]
    assert first["frames"] == second["frames"] == 5 and first["num_samples"] == second["num_samples"] == 5
    numeric = [key for key, value in first.items() if isinstance(value, float)]
    assert {"G-MPJPE", "MPJPE-vis", "PA-MPJPE", "V2V", "apd-joints", "collision-ratio", "contact-ratio"} <= set(numeric)
    for key in numeric:
        assert second[key] == pytest.approx(first[key], rel=1e-9, abs=1e-12, nan_ok=True), key
