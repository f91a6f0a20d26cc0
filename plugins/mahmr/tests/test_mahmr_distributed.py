"""relative-human under ``torchrun -m meshrec eval``: 2 CPU ranks (gloo) give the single-process metrics."""

from __future__ import annotations

import json

import pytest
import torch

import meshrec
from meshrec.testing.torchrun import torchrun
from test_mahmr_predict import write_synthetic_relative_human


@pytest.mark.slow
def test_two_ranks_equal_one_process(small_checkpoint, body_models_dir, tmp_path):
    # 3 images over 2 ranks: rank 0 predicts images 0 and 2, rank 1 image 1 and one empty batch
    root = write_synthetic_relative_human(tmp_path / "RelativeHuman",
                                          names=("1234567.jpg", "och_000002.jpg", "2345678.jpg"))
    out = tmp_path / "result.json"
    result = torchrun("eval", "--method", "mahmr", "--dataset", "relative-human", "--data-root", str(root),
                      "--checkpoint", str(small_checkpoint), "--body-models", str(body_models_dir), "--device", "cpu",
                      "--batch-size", "1", "--out", str(out))
    assert result.stdout.count('"metrics"') == 1  # rank 0 reports, once
    sharded = json.loads(out.read_text())
    assert sharded["world_size"] == 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank runs
    try:
        method = meshrec.load_method("mahmr", checkpoint=small_checkpoint, body_model=body_models_dir, device="cpu")
        single = meshrec.evaluate(method, "relative-human", root, body_model=body_models_dir, batch_size=1,
                                  progress=False)["metrics"]
    finally:
        torch.set_num_threads(threads)
    # the random small checkpoint detects people of every image: a rank's images missing or
    # counted twice changes the counts
    assert single["num_images"] == 3 and single["true_positives"] > 0 and single["false_positives"] > 0
    assert sharded["metrics"] == single  # counts and ratios of the same matches in the same order: exact
