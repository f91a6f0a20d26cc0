"""MA-HMR predict throughput at 1288 px with 1, 5 and 20 people, and peak memory.

Synthetic weights cannot see people, so the people are put where they matter for the cost: the
scale map that selects the tokens is replaced by one with N person regions (a crowd of
different sizes: small people get 14-px tokens, the rest 28-px tokens, background 56-px
tokens), and N queries are made confident (N SMPL meshes are posed). Everything else is the
real full-size network (ViT-B/14 + 3 extra blocks, 6-layer decoder, 50 queries; 224 M
parameters) on a 1288 x 966 image.
"""

from __future__ import annotations

import math
import resource
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import meshrec

pytest.importorskip("meshrec_mahmr")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "mahmr" / "tests"))
from mahmr_checkpoints import FULL, synthetic_state  # noqa: E402

HEIGHT, WIDTH = 966, 1288


def crowd_scale_map(people: int, rows: int = -(-HEIGHT // 56) * 2, cols: int = -(-WIDTH // 56) * 2) -> torch.Tensor:
    """(rows, cols, 2) [p_human, scale] of N people standing side by side, their heights falling
    from 80 % to 20 % of the image (scale = box diagonal / 1288, small people < 0.5)."""
    grid = torch.zeros(rows, cols, 2)
    per_row = max(1, math.ceil(math.sqrt(people * 2)))
    for index in range(people):
        height = 0.8 - 0.6 * index / max(people - 1, 1)
        h, w = max(2, int(height * rows)), max(1, int(height * rows / 3))
        y0 = rows - h - (index // per_row) % max(1, rows - h)
        x0 = (index % per_row) * (cols // per_row)
        grid[y0:y0 + h, x0:x0 + w, 0] = 1.0
        grid[y0:y0 + h, x0:x0 + w, 1] = math.hypot(h * 28, w * 28) / 1288
    return grid


@pytest.fixture(scope="module")
def mahmr(tmp_path_factory):
    from meshrec.testing import write_synthetic_body_models
    from meshrec_mahmr.method import MAHMR

    folder = tmp_path_factory.mktemp("mahmr")
    checkpoint = folder / "mahmr_stage3.bin"
    torch.save(synthetic_state(FULL, seed=0, smpl=False), checkpoint)
    models = write_synthetic_body_models(folder / "models")
    body = meshrec.body.SMPL(models, create_transl=False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return MAHMR.build(checkpoint, body.to(device), device,
                       **MAHMR.resolve_options({"kid_template": str(models / "smpl_kid_template.npy")}))


def with_people(method, people: int):
    """Patches the network so that ``people`` person regions drive the token selection and
    ``people`` queries are detected."""
    network = method.model
    grid = crowd_scale_map(people)
    original_select, original_forward = network.select_tokens, network.forward

    def select(scale_map, lens):
        patches, z, ys, xs = network.zorder_patches(torch.zeros(3, grid.shape[0] * 28, grid.shape[1] * 28))
        return original_select(grid[ys, xs].to(scale_map), lens)

    def forward(images, sizes):
        out = original_forward(images, sizes)
        confs = torch.zeros_like(out["pred_confs"])
        confs[:, :people] = 0.9
        out["pred_confs"] = confs
        return out

    network.select_tokens, network.forward = select, forward
    return lambda: (setattr(network, "select_tokens", original_select), setattr(network, "forward", original_forward))


@pytest.mark.benchmark(group="mahmr-predict")
@pytest.mark.parametrize("people", [1, 5, 20])
def test_predict_throughput(benchmark, mahmr, people):
    image = np.random.default_rng(people).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    restore = with_people(mahmr, people)
    tokens = {}

    def run():
        prediction = meshrec.predict(image, method=mahmr, progress=False)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return prediction

    try:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        prediction = benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=0)
        with torch.inference_mode():
            from meshrec_mahmr.preprocess import preprocess

            pre = preprocess(image, device=mahmr.device)
            enc = mahmr.model.forward_encoder([pre.image])
            tokens = {f"level{lvl}": int((enc.levels[0] == lvl).sum()) for lvl in range(3)}
    finally:
        restore()
    assert prediction.num_people == people and prediction.vertices.shape == (people, 6890, 3)
    assert bool(torch.isfinite(prediction.vertices).all())
    benchmark.extra_info.update(people=people, tokens=tokens, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if torch.cuda.is_available():
        benchmark.extra_info["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
