"""pw3d-motionbert under torchrun: 2 CPU ranks (gloo) give the single-process metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import meshrec
from meshrec.testing.torchrun import torchrun
from motionbert_small import small_method
from test_motionbert_pw3d import mesh_pickle  # noqa: F401  (fixture: the synthetic 3DPW pickle)

EVALUATE = '''
import json, sys
import meshrec
from meshrec import distributed
from motionbert_small import small_method

folder, root, out = sys.argv[1:4]
method = small_method(folder, seed=3)  # the same random weights on every rank
result = meshrec.evaluate(method, "pw3d-motionbert", root, body_model=folder, batch_size=1, progress=False,
                          limit=3, flip=True)
json.dump(result, open(f"{out}.rank{distributed.job().rank}", "w"))
'''


@pytest.mark.slow
def test_two_ranks_equal_one_process(mesh_pickle, motionbert_body_models, tmp_path):  # noqa: F811
    # 3 clips over 2 ranks: rank 0 runs clips 0 and 2, rank 1 clip 1 and one empty (padded) batch
    script = tmp_path / "evaluate.py"
    script.write_text(EVALUATE)
    out = tmp_path / "result.json"
    torchrun(str(motionbert_body_models), str(mesh_pickle.parent), str(out), script=script,
             pythonpath=[Path(__file__).parent])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank runs
    try:
        single = meshrec.evaluate(small_method(motionbert_body_models, seed=3), "pw3d-motionbert", mesh_pickle.parent,
                                  body_model=motionbert_body_models, batch_size=1, progress=False, limit=3,
                                  flip=True)["metrics"]
    finally:
        torch.set_num_threads(threads)
    assert single["num_clips"] == 3 and single["num_samples"] == 48
    for rank in range(2):  # every rank returns the merged metrics
        result = json.loads(Path(f"{out}.rank{rank}").read_text())
        assert result["world_size"] == 2
        sharded = result["metrics"]
        assert sharded.keys() == single.keys()
        for key, value in single.items():
            if isinstance(value, float):
                assert sharded[key] == pytest.approx(value, rel=1e-12, abs=0), key
            else:
                assert sharded[key] == value, key
