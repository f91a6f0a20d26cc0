"""MotionBERT mesh throughput: 16-frame clips per second (DSTformer, mesh head, SMPL, H36M joints)
at batch 1 and 16, and the share of that time spent in SMPL."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("meshrec_motionbert")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "motionbert" / "tests"))
from motionbert_checkpoints import released_state_dict  # noqa: E402

CLIP = 16  # upstream's mesh clip length (configs/mesh/*.yaml)


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    import shutil

    from meshrec.body import SMPL, JointRegressor
    from meshrec.io.checkpoints import load_state_dict_strict
    from meshrec.testing import write_synthetic_body_models
    from meshrec_motionbert.checkpoint import mesh_state_dict
    from meshrec_motionbert.model import MeshRegressor

    folder = write_synthetic_body_models(tmp_path_factory.mktemp("motionbert"))
    shutil.copy(folder / "J_regressor_h36m.npy", folder / "J_regressor_h36m_correct.npy")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = MeshRegressor()
    state = mesh_state_dict({"model": released_state_dict(0)})
    state["head.init_pose"] = torch.tensor([1.0, 0, 0, 1, 0, 0]).repeat(24)[None]  # plausible rotations
    load_state_dict_strict(model, state, "synthetic released checkpoint")
    model.set_body_model(SMPL(folder, create_transl=False),
                         JointRegressor.from_file("J_regressor_h36m_correct.npy", folder))
    return model.to(device).eval()


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@pytest.mark.benchmark(group="motionbert-mesh")
@pytest.mark.parametrize("batch", [1, 16])
def test_clips_per_second(benchmark, network, batch):
    device = next(network.parameters()).device
    x = torch.rand(batch, CLIP, 17, 3, device=device) * 2 - 1

    def run():
        with torch.inference_mode():
            out = network(x)[0]
        _sync()
        return out

    out = benchmark.pedantic(run, rounds=3 if batch > 1 else 5, iterations=1, warmup_rounds=1)
    assert out["verts"].shape == (batch, CLIP, 6890, 3) and torch.isfinite(out["verts"]).all()
    # the SMPL share: the same call without SMPL and the regressor (network.regress), timed alike
    with torch.inference_mode():
        network.regress(x)
        _sync()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            network.regress(x)
            _sync()
            times.append(time.perf_counter() - start)
    if benchmark.stats is None:  # --benchmark-disable (the CI smoke run): nothing was timed
        return
    total = benchmark.stats.stats.median
    benchmark.extra_info["clips_per_second"] = batch / total
    benchmark.extra_info["smpl_share"] = max(0.0, 1 - min(times) / total)
    benchmark.extra_info["clip_frames"] = CLIP
