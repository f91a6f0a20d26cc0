"""HMR predict throughput (crop, ResNet-50, head, SMPL, camera), images per second."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import meshrec

pytest.importorskip("meshrec_hmr")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "hmr" / "tests"))
from hmr_checkpoints import mmhuman3d_hmr_state_dict  # noqa: E402


@pytest.fixture(scope="module")
def hmr(tmp_path_factory):
    from meshrec.testing import write_synthetic_body_models
    from meshrec_hmr.method import HMR

    folder = tmp_path_factory.mktemp("hmr")
    checkpoint = folder / "hmr.pth"
    torch.save({"meta": {}, "state_dict": mmhuman3d_hmr_state_dict()}, checkpoint)
    body = meshrec.body.SMPL(write_synthetic_body_models(folder / "models"), create_transl=False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return HMR.build(checkpoint, body.to(device), torch.device(device), **HMR.resolve_options({}))


@pytest.mark.benchmark(group="hmr-predict")
@pytest.mark.parametrize("batch", [1, 16])
def test_predict_throughput(benchmark, hmr, batch):
    images = [np.random.default_rng(i).integers(0, 255, (480, 640, 3), dtype=np.uint8) for i in range(batch)]
    boxes = np.array([200.0, 60, 180, 360])

    def run():
        predictions = meshrec.predict(images, method=hmr, bbox=boxes, batch_size=batch, progress=False)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return predictions

    predictions = benchmark(run)
    assert len(predictions) == batch and all(p.vertices.shape == (1, 6890, 3) for p in predictions)
    benchmark.extra_info["images_per_batch"] = batch
