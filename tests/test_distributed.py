"""meshrec under torch.distributed: sharding, `torchrun -m meshrec predict` with 2 CPU ranks
(gloo) against a single-process run, resuming, and the merge of evaluators."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from meshrec import distributed
from meshrec.cli import main
from meshrec.testing.fixtures import body_models_dir  # noqa: F401  (fixture)
from meshrec.testing.torchrun import torchrun

OUTPUTS = [f"im{i}.{suffix}" for i in range(5) for suffix in ("npz", "ply")]


@pytest.fixture
def images(tmp_path):
    """Five images of different sizes (an odd count: the two ranks get 3 and 2)."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in reversed(range(5)):  # written out of order: sharding sorts
        Image.fromarray(rng.integers(0, 255, (30 + 7 * i, 40 + 5 * i, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def assert_same_outputs(first: Path, second: Path, names=OUTPUTS) -> None:
    for name in names:
        if name.endswith(".npz"):
            with np.load(first / name) as a, np.load(second / name) as b:
                assert sorted(a.files) == sorted(b.files)
                for key in a.files:
                    np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}:{key}")
        else:
            assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_shard_is_sorted_strided_and_covers_every_item_once():
    items = [Path(f"f{i:02d}.jpg") for i in (7, 3, 11, 0, 5, 9, 1)]
    shares = [distributed.shard(items, rank, 3) for rank in range(3)]
    ordered = sorted(items, key=str)
    assert shares[0] == ordered[0::3] and shares[1] == ordered[1::3] and shares[2] == ordered[2::3]
    assert sorted(sum(shares, []), key=str) == ordered
    assert distributed.shard(items) == ordered  # outside torchrun: a world of one
    assert distributed.shard_indices(7, 2, 3) == [2, 5]
    with pytest.raises(ValueError, match="outside a world of 3"):
        distributed.shard(items, 3, 3)


def test_outside_torchrun_the_helpers_are_a_world_of_one(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert not distributed.is_torchrun()
    current = distributed.job()
    assert current.world_size == 1 and current.is_main and not current.distributed
    assert distributed.gather(["a", "b"]) == ["a", "b"]
    assert list(distributed.padded_batches([1, 2, 3], 2)) == [[1, 2], [3]]
    assert distributed.gather_indexed([2, 0, 1], ["c", "a", "b"], total=3) == ["a", "b", "c"]
    with pytest.raises(distributed.MeshrecError, match="2 indices for 1 items"):
        distributed.gather_indexed([0, 1], ["a"])
    with pytest.raises(distributed.MeshrecError, match="same index"):
        distributed.gather_indexed([1, 1], ["a", "b"])
    with pytest.raises(distributed.MeshrecError, match=r"not 0 \.\. 2"):
        distributed.gather_indexed([0, 2], ["a", "c"], total=3)


@pytest.mark.slow
def test_torchrun_predict_equals_a_single_process_run(images, body_models_dir, tmp_path):
    single = tmp_path / "single"
    assert main(["predict", str(images), "--method", "example", "--body-models", str(body_models_dir),
                 "--device", "cpu", "--out", str(single)]) == 0
    sharded = tmp_path / "sharded"
    torchrun("predict", str(images), "--method", "example", "--body-models", str(body_models_dir),
             "--device", "cpu", "--batch-size", "2", "--out", str(sharded))
    assert_same_outputs(single, sharded)
    manifest = json.loads((sharded / "manifest.json").read_text())
    assert manifest["complete"] and manifest["world_size"] == 2
    assert manifest["files"] == sorted(OUTPUTS)
    assert manifest["inputs"] == [str(images / f"im{i}.png") for i in range(5)]
    ranks = [json.loads((sharded / f"manifest.rank{r}.json").read_text()) for r in range(2)]
    # strided shares of the sorted inputs, one job id
    assert ranks[0]["inputs"] == [str(images / f"im{i}.png") for i in (0, 2, 4)]
    assert ranks[1]["inputs"] == [str(images / f"im{i}.png") for i in (1, 3)]
    assert ranks[0]["run_id"] == ranks[1]["run_id"] == manifest["run_id"]


@pytest.mark.slow
def test_resume_recomputes_only_what_is_missing(images, body_models_dir, tmp_path):
    out = tmp_path / "out"
    common = [str(images), "--method", "example", "--body-models", str(body_models_dir), "--device", "cpu",
              "--out", str(out)]
    torchrun("predict", *common, "--batch-size", "1")
    reference = tmp_path / "reference"
    reference.mkdir()
    for name in OUTPUTS:
        (reference / name).write_bytes((out / name).read_bytes())
    before = {name: (out / name).stat().st_mtime_ns for name in OUTPUTS}

    # A run stopped midway: rank 1's manifest was last rewritten after im1 (im3 never listed),
    # and one finished output was deleted since.
    rank1 = out / "manifest.rank1.json"
    manifest = json.loads(rank1.read_text())
    manifest.update(complete=False, files=["im1.npz", "im1.ply"])
    rank1.write_text(json.dumps(manifest))
    (out / "manifest.json").unlink()
    (out / "im3.npz").unlink()
    (out / "im2.ply").unlink()

    result = torchrun("predict", *common, "--resume")
    merged = json.loads((out / "manifest.json").read_text())
    assert merged["complete"]
    assert merged["files"] == ["im2.npz", "im2.ply", "im3.npz", "im3.ply"], result.stderr[-2000:]
    assert merged["resumed_inputs"] == [str(images / f"im{i}.png") for i in (0, 1, 4)]
    assert merged["resumed_files"] == ["im0.npz", "im0.ply", "im1.npz", "im1.ply", "im4.npz", "im4.ply"]
    for name in ("im0.npz", "im0.ply", "im1.npz", "im1.ply", "im4.npz", "im4.ply"):
        assert (out / name).stat().st_mtime_ns == before[name], f"{name} was recomputed"
    assert_same_outputs(reference, out)

    # a single-process resume of a finished folder predicts nothing
    assert main(["predict", *common, "--resume"]) == 0
    final = json.loads((out / "manifest.json").read_text())
    assert final["files"] == [] and final["complete"] and len(final["resumed_inputs"]) == 5


def test_resume_ignores_runs_of_another_method(images, body_models_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "im0.npz").write_bytes(b"not from this method")
    (out / "manifest.json").write_text(json.dumps({"command": "predict", "method": "hmr", "checkpoint": None,
                                                   "files": ["im0.npz"]}))
    assert distributed.completed_stems(out, "example") == {}
    assert distributed.completed_stems(out, "hmr") == {"im0": ["im0.npz"]}


MERGE_SCRIPT = '''
import json, sys
import torch
from meshrec import distributed
from meshrec.metrics.evaluators import JointMeshEvaluator

job = distributed.init("cpu")
count = int(sys.argv[2])
values = torch.arange(count * 3, dtype=torch.float64).reshape(count, 3) ** 1.5 / 7
evaluator = JointMeshEvaluator("3dpw-mmhuman3d")
indices = distributed.shard_indices(count)
for batch in distributed.padded_batches(indices, 2):  # batches of the rank's share
    if batch:
        evaluator._add("mpjpe", values[batch])
        evaluator._add("mask", torch.ones(len(batch), 1, dtype=torch.float64))
        evaluator._num_samples += len(batch)
merged = distributed.merge_evaluator(evaluator, indices)
gathered = distributed.gather([f"item{i}" for i in indices], total=count)
# per-item outputs given in any order: every rank gets all of them in index order
indexed = distributed.gather_indexed(indices[::-1], [{"item": i, "rank": job.rank} for i in indices[::-1]], total=count)
try:
    distributed.gather_indexed([0], ["every rank claims item 0"])
    duplicate = None
except distributed.MeshrecError as error:
    duplicate = str(error)
json.dump({"mpjpe": torch.cat(merged._values["mpjpe"]).tolist(), "count": len(merged),
           "gathered": gathered, "world_size": job.world_size, "indexed": indexed, "duplicate": duplicate},
          open(f"{sys.argv[1]}.rank{job.rank}", "w"))
'''


@pytest.mark.slow
def test_merged_evaluator_holds_every_sample_in_global_order(tmp_path):
    script = tmp_path / "merge.py"
    script.write_text(MERGE_SCRIPT)
    out = tmp_path / "merged.json"
    torchrun(str(out), "7", script=script)
    expected = torch.arange(21, dtype=torch.float64).reshape(7, 3) ** 1.5 / 7
    for rank in range(2):  # every rank holds the merged evaluator
        merged = json.loads(Path(f"{out}.rank{rank}").read_text())
        assert merged["world_size"] == 2 and merged["count"] == 7
        assert torch.equal(torch.tensor(merged["mpjpe"], dtype=torch.float64), expected)
        assert merged["indexed"] == [{"item": i, "rank": i % 2} for i in range(7)]
        assert "same index" in merged["duplicate"]
    assert json.loads(Path(f"{out}.rank0").read_text())["gathered"] == [f"item{i}" for i in range(7)]
    assert json.loads(Path(f"{out}.rank1").read_text())["gathered"] is None  # gather: rank 0 only


@pytest.mark.slow
def test_torchrun_eval_equals_a_single_process_run(body_models_dir, tmp_path):
    pytest.importorskip("meshrec_hmr")
    sys.path.insert(0, str(Path(__file__).parents[1] / "plugins" / "hmr" / "tests"))
    try:
        from hmr_checkpoints import mmhuman3d_hmr_state_dict, mmhuman3d_meta
        from pw3d_synthetic import write_synthetic_pw3d
    finally:
        sys.path.pop(0)
    pw3d = write_synthetic_pw3d(tmp_path / "pw3d", frames=5)
    checkpoint = tmp_path / "hmr-synthetic.pth"
    torch.save({"meta": mmhuman3d_meta(), "state_dict": mmhuman3d_hmr_state_dict()}, checkpoint)
    # Batch size 1 and one thread per process (as torchrun runs): each frame goes through the
    # float32 network alone in both runs, so the per-frame predictions are the same bits and
    # the pooled metrics must agree to float64 rounding.
    command = ["eval", "--method", "hmr", "--dataset", "pw3d", "--data-root", str(pw3d), "--checkpoint",
               str(checkpoint), "--body-models", str(body_models_dir), "--device", "cpu", "--batch-size", "1"]
    torchrun(*command, "--out", str(tmp_path / "single.json"), ranks=1)
    single = json.loads((tmp_path / "single.json").read_text())["metrics"]
    out = tmp_path / "results.json"
    result = torchrun(*command, "--out", str(out))
    sharded = json.loads(out.read_text())
    assert sharded["world_size"] == 2
    assert result.stdout.count('"metrics"') == 1  # rank 0 reports, once
    metrics = sharded["metrics"]
    assert metrics["num_samples"] == single["num_samples"] == 5
    for key in ("MPJPE", "PA-MPJPE", "PVE"):
        assert metrics[key] == pytest.approx(single[key], rel=1e-12, abs=0), key


@pytest.mark.slow
def test_a_killed_run_resumes_without_recomputing_finished_inputs(body_models_dir, tmp_path):
    import signal
    import time

    images = tmp_path / "many"
    images.mkdir()
    for i in range(40):
        Image.new("RGB", (40 + i, 30 + i)).save(images / f"f{i:02d}.png")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "meshrec", "predict", str(images), "--method", "example", "--body-models",
               str(body_models_dir), "--device", "cpu", "--batch-size", "1", "--resume", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    finished: list[str] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        try:
            finished = json.loads((out / "manifest.json").read_text())["files"]
        except (OSError, ValueError, KeyError):
            finished = []
        if len(finished) >= 4:
            process.send_signal(signal.SIGKILL)  # preempted: no clean-up at all
            break
        time.sleep(0.02)
    process.wait(timeout=60)
    manifest = json.loads((out / "manifest.json").read_text())
    if manifest["complete"]:
        pytest.skip("the run finished before it could be killed (machine too fast for this test)")
    done = manifest["files"]
    assert len(done) >= 4 and len(done) < 80
    stamps = {name: (out / name).stat().st_mtime_ns for name in done}
    (out / ".f39.npz.partial-12345").write_bytes(b"half a file")  # as a kill during a write leaves

    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = json.loads((out / "manifest.json").read_text())
    assert resumed["complete"]
    assert not list(out.glob(".*.partial-*"))
    assert set(resumed["resumed_files"]) >= set(done)
    assert not set(resumed["files"]) & set(resumed["resumed_files"])
    assert sorted(resumed["files"] + resumed["resumed_files"]) == sorted(
        f"f{i:02d}.{suffix}" for i in range(40) for suffix in ("npz", "ply"))
    for name in done:
        assert (out / name).stat().st_mtime_ns == stamps[name], f"{name} was recomputed"
    reference = tmp_path / "reference"
    assert main(["predict", str(images), "--method", "example", "--body-models", str(body_models_dir),
                 "--device", "cpu", "--out", str(reference)]) == 0
    assert_same_outputs(reference, out, [f"f{i:02d}.{suffix}" for i in range(40) for suffix in ("npz", "ply")])


PREDICT_SCRIPT = '''
import json, sys
import numpy as np
from meshrec import distributed

paths, boxes, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
predictions = distributed.predict(paths, method="example", body_model=sys.argv[4], device="cpu", bbox=boxes,
                                  detector=None)
if predictions is not None:
    np.savez(out, **{f"v{i}": p.vertices.numpy() for i, p in enumerate(predictions)},
             sources=np.array([p.source for p in predictions]), world=distributed.job().world_size)
'''


@pytest.mark.slow
def test_python_predict_over_two_ranks_returns_every_prediction_in_input_order(images, body_models_dir, tmp_path):
    import meshrec

    paths = [str(images / f"im{i}.png") for i in (3, 0, 4, 1, 2)]  # not sorted: the result keeps this order
    boxes = [[i, i, 20 + i, 20] for i in range(5)]
    script = tmp_path / "predict.py"
    script.write_text(PREDICT_SCRIPT)
    out = tmp_path / "predictions.npz"
    torchrun(json.dumps(paths), json.dumps(boxes), str(out), str(body_models_dir), script=script)
    expected = meshrec.predict(paths, method="example", body_model=body_models_dir, device="cpu", bbox=boxes,
                               detector=None)
    with np.load(out) as saved:
        assert int(saved["world"]) == 2
        assert list(saved["sources"]) == paths
        for i, prediction in enumerate(expected):
            np.testing.assert_array_equal(saved[f"v{i}"], prediction.vertices.numpy())


@pytest.mark.slow
def test_torchrun_fit_equals_a_single_process_run(body_models_dir, tmp_path):
    """An optimising method: per-input keypoints (--annotations) follow their image to its rank."""
    pytest.importorskip("meshrec_fit")
    from test_docs import _coco_keypoints  # a synthetic standing person's COCO-17 keypoints

    images = tmp_path / "images"
    images.mkdir()
    keypoints = _coco_keypoints(body_models_dir)
    annotations = {}
    for i in range(3):
        Image.new("RGB", (640, 480)).save(images / f"f{i}.png")
        shifted = keypoints.copy()
        shifted[..., 0] += 10 * i
        annotations[f"f{i}.png"] = {"keypoints": shifted.tolist()}
    (tmp_path / "keypoints.json").write_text(json.dumps(annotations))
    common = [str(images), "--method", "fit", "--body-models", str(body_models_dir), "--annotations",
              str(tmp_path / "keypoints.json"), "--camera", "1000", "1000", "320", "240", "--option", "schedule=fast",
              "--detector", "none", "--device", "cpu", "--batch-size", "1"]
    # one thread in both runs (torchrun's default): the same float32 arithmetic, bit for bit
    torchrun("predict", *common, "--out", str(tmp_path / "single"), ranks=1)
    torchrun("predict", *common, "--out", str(tmp_path / "sharded"))
    for i in range(3):
        with np.load(tmp_path / "single" / f"f{i}.npz", allow_pickle=True) as a, \
                np.load(tmp_path / "sharded" / f"f{i}.npz", allow_pickle=True) as b:
            numeric = [key for key in a.files if a[key].dtype.kind in "fiub"]
            assert "vertices" in numeric and sorted(a.files) == sorted(b.files)
            for key in numeric:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"f{i}:{key}")
        assert (tmp_path / "single" / f"f{i}.ply").read_bytes() == (tmp_path / "sharded" / f"f{i}.ply").read_bytes()


UNSHARDED_PLUGIN = '''
import meshrec


def evaluate_unsharded(method, data_root, body_model, batch_size, progress):
    raise AssertionError("an evaluation that cannot be split must not start under torchrun")


@meshrec.hookimpl
def meshrec_register_datasets(registry):
    registry.add("unsharded", "unsharded_plugin:evaluate_unsharded", summary="takes no shard= argument")
'''

REFUSAL_SCRIPT = '''
import sys
import meshrec
import unsharded_plugin
from meshrec.plugins import PluginManager, reset_plugin_manager

manager = PluginManager(discover=False)
manager.register(unsharded_plugin, name="unsharded")
reset_plugin_manager(manager)
meshrec.evaluate("example", "unsharded", sys.argv[1])
'''


@pytest.mark.slow
def test_torchrun_refuses_an_evaluation_that_takes_no_shard(tmp_path):
    """meshrec.evaluate under 2 ranks: an evaluation function without ``shard=`` is refused
    with a message before any method is loaded (every registered dataset is sharded now, so
    the test registers its own)."""
    (tmp_path / "unsharded_plugin.py").write_text(UNSHARDED_PLUGIN)
    (tmp_path / "refuse.py").write_text(REFUSAL_SCRIPT)
    result = torchrun(str(tmp_path), script=tmp_path / "refuse.py", pythonpath=[tmp_path], check=False)
    assert result.returncode != 0
    assert "the evaluation of dataset 'unsharded' cannot be split among torchrun ranks" in result.stderr
    assert "run it without torchrun" in result.stderr
    assert "must not start" not in result.stderr


def test_every_evaluation_of_meshrecs_plugins_takes_shard():
    """The README says every evaluation of meshrec's plugins runs under torchrun and lists each
    in its scaling-out table: a new evaluation must take ``shard`` and be listed there (or the
    README's claim must change)."""
    import importlib
    import inspect

    from meshrec.plugins import PluginManager

    specs = list(PluginManager().datasets())
    if not specs:
        pytest.skip("no plugin with datasets is installed")
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## Scaling out"):]
    section = section[:section.index("\n## ")]
    for spec in specs:
        module, name = spec.target.split(":")
        evaluation = getattr(importlib.import_module(module), name)
        assert "shard" in inspect.signature(evaluation).parameters, spec.name
        assert f"| `{spec.name}`" in section or f", `{spec.name}`" in section, f"{spec.name}: not in the README's table"
