"""Scale-out (issue 21): an evaluation over 1 and 2 torchrun ranks (CPU, gloo), and what merging
the ranks' results costs.

Each benchmark launches a torchrun job (one round: a job is seconds long and its start-up is
not what is measured); the job times itself and the numbers land in ``extra_info``:

- ``test_eval_ranks``: ``torchrun -m meshrec eval``'s work, HMR on a synthetic 3DPW folder, with
  1 and 2 ranks of one thread each: frames per second of the evaluation (``seconds`` of the
  result: method loading excluded, start-up of the processes excluded) and the time of
  :func:`meshrec.distributed.merge_evaluator` inside it (after a barrier, so a rank's wait for
  the slower one is not counted as merging).
- ``test_merge_at_dataset_size``: the merge alone at the real test-set sizes: a 3DPW-sized
  evaluator (35,515 frames, mmhuman3d protocol) through ``merge_evaluator`` and Relative Human
  sized per-image outputs (7 people per image) through ``gather_indexed``.

Asserted: the 2-rank metrics equal the 1-rank metrics (to 1e-12), the merged evaluator holds
every sample.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from meshrec.testing.torchrun import torchrun

FRAMES = 32  # synthetic 3DPW frames of the eval benchmark
HMR_TESTS = Path(__file__).resolve().parents[1] / "plugins" / "hmr" / "tests"

EVAL_SCRIPT = '''
import json, sys, time
import torch
import meshrec
from meshrec import distributed

data_root, checkpoint, body, out = sys.argv[1:5]
merge = distributed.merge_evaluator
timings = []


def timed_merge(evaluator, indices):
    distributed.job().barrier()  # the wait for the slower rank is not merging
    start = time.perf_counter()
    merged = merge(evaluator, indices)
    timings.append(time.perf_counter() - start)
    return merged


distributed.merge_evaluator = timed_merge  # the evaluation calls it through the module
result = meshrec.evaluate("hmr", "pw3d", data_root, checkpoint=checkpoint, body_model=body, device="cpu",
                          batch_size=1, progress=False)
if distributed.job().is_main:
    json.dump({**result, "merge_seconds": timings}, open(out, "w"))
'''

MERGE_SCRIPT = '''
import copy, json, sys, time
import numpy as np
import torch
from meshrec import distributed
from meshrec.metrics.evaluators import JointMeshEvaluator

job = distributed.init("cpu")
frames, images, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
generator = torch.Generator().manual_seed(0)
everything = {"mpjpe": torch.rand(frames, 14, generator=generator, dtype=torch.float64),
              "pa_mpjpe": torch.rand(frames, 14, generator=generator, dtype=torch.float64),
              "mask": torch.ones(frames, 14, dtype=torch.float64),
              "pve": torch.rand(frames, 1, generator=generator, dtype=torch.float64)}
indices = distributed.shard_indices(frames)
evaluator = JointMeshEvaluator("3dpw-mmhuman3d")
for key, value in everything.items():  # this rank's share, in batches of 32 as an evaluation adds them
    for start in range(0, len(indices), 32):
        evaluator._add(key, value[indices[start:start + 32]])
evaluator._num_samples = len(indices)
merge_times, gather_times = [], []
for _ in range(5):
    copied = copy.deepcopy(evaluator)
    job.barrier()
    start = time.perf_counter()
    merged = distributed.merge_evaluator(copied, indices)
    merge_times.append(time.perf_counter() - start)
assert len(merged) == frames and torch.equal(torch.cat(merged._values["pve"]), everything["pve"])
mine = distributed.shard_indices(images)
outputs = [(np.random.default_rng(i).uniform(0, 1000, (7, 14, 2)), np.ones(7)) for i in mine]
for _ in range(5):
    job.barrier()
    start = time.perf_counter()
    gathered = distributed.gather_indexed(mine, outputs, total=images)
    gather_times.append(time.perf_counter() - start)
assert len(gathered) == images
if job.is_main:
    json.dump({"merge_seconds": merge_times, "gather_seconds": gather_times, "world_size": job.world_size},
              open(out, "w"))
'''


@pytest.fixture(scope="module")
def synthetic_pw3d(tmp_path_factory):
    pytest.importorskip("meshrec_hmr")
    from meshrec.testing import write_synthetic_body_models

    sys.path.insert(0, str(HMR_TESTS))
    try:
        from hmr_checkpoints import mmhuman3d_hmr_state_dict, mmhuman3d_meta
        from pw3d_synthetic import write_synthetic_pw3d
    finally:
        sys.path.pop(0)
    folder = tmp_path_factory.mktemp("scale_out")
    checkpoint = folder / "hmr-synthetic.pth"
    torch.save({"meta": mmhuman3d_meta(), "state_dict": mmhuman3d_hmr_state_dict()}, checkpoint)
    body = write_synthetic_body_models(folder / "models")
    return write_synthetic_pw3d(folder / "pw3d", frames=FRAMES), checkpoint, body


@pytest.fixture(scope="module")
def eval_metrics():
    """ranks -> the metrics of that run (the 2-rank run compares with the 1-rank one)."""
    return {}


@pytest.mark.benchmark(group="scale-out-eval")
@pytest.mark.parametrize("ranks", [1, 2])
def test_eval_ranks(benchmark, synthetic_pw3d, eval_metrics, tmp_path, ranks):
    data_root, checkpoint, body = synthetic_pw3d
    script, out = tmp_path / "evaluate.py", tmp_path / "result.json"
    script.write_text(EVAL_SCRIPT)
    benchmark.pedantic(torchrun, args=(str(data_root), str(checkpoint), str(body), str(out)),
                       kwargs={"script": script, "ranks": ranks}, rounds=1, iterations=1)
    result = json.loads(out.read_text())
    metrics = result["metrics"]
    assert metrics["num_samples"] == FRAMES and metrics["MPJPE"] > 0
    eval_metrics[ranks] = metrics
    if ranks > 1 and 1 in eval_metrics:  # the 1-rank run comes first (unless deselected)
        for key in ("MPJPE", "PA-MPJPE", "PVE"):
            assert metrics[key] == pytest.approx(eval_metrics[1][key], rel=1e-12, abs=0), key
    benchmark.extra_info.update(ranks=ranks, frames=FRAMES, eval_seconds=result["seconds"],
                                frames_per_second=FRAMES / result["seconds"],
                                merge_seconds=min(result["merge_seconds"]) if result["merge_seconds"] else 0.0)


@pytest.mark.benchmark(group="scale-out-merge")
def test_merge_at_dataset_size(benchmark, tmp_path):
    script, out = tmp_path / "merge.py", tmp_path / "merge.json"
    script.write_text(MERGE_SCRIPT)
    benchmark.pedantic(torchrun, args=("35515", "1500", str(out)), kwargs={"script": script}, rounds=1,
                       iterations=1)
    result = json.loads(out.read_text())
    assert result["world_size"] == 2
    benchmark.extra_info.update(frames=35515, merge_evaluator_seconds=sorted(result["merge_seconds"]),
                                images=1500, gather_indexed_seconds=sorted(result["gather_seconds"]))
