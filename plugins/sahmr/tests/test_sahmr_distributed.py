"""rich-sahmr and prox-sahmr under torchrun: 2 CPU ranks (gloo) give the single-process metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import meshrec
from meshrec.testing.torchrun import torchrun
from test_sahmr_evaluation import sahmr, write_synthetic_prox, write_synthetic_rich  # noqa: F401  (sahmr: fixture)

EVALUATE = '''
import json, sys
import meshrec
from meshrec import distributed

checkpoint, support, body, out = sys.argv[1:5]
method = meshrec.load_method("sahmr", checkpoint=checkpoint, body_model=body, device="cpu", support_dir=support)
results = {}
for dataset, root, transfer in json.loads(sys.argv[5]):
    result = meshrec.evaluate(method, dataset, root, body_model=body, progress=False, transfer=transfer)
    results[dataset] = {**result["metrics"], "world_size": result["world_size"]}
json.dump(results, open(f"{out}.rank{distributed.job().rank}", "w"))
'''


@pytest.mark.slow
def test_two_ranks_equal_one_process(sahmr, sahmr_files, body_models_dir, tmp_path):  # noqa: F811
    # 3 frames each over 2 ranks: rank 0 runs frames 0 and 2, rank 1 frame 1 and one empty step
    rich_transfer = write_synthetic_rich(tmp_path / "rich", frames=3)[0]
    prox_transfer = write_synthetic_prox(tmp_path / "prox", frames=3)[0]
    datasets = [("rich-sahmr", str(tmp_path / "rich" / "RICH"), str(rich_transfer)),
                ("prox-sahmr", str(tmp_path / "prox" / "quantitative"), str(prox_transfer))]
    script = tmp_path / "evaluate.py"
    script.write_text(EVALUATE)
    out = tmp_path / "result.json"
    torchrun(str(sahmr_files[0]), str(tmp_path / "support"), str(body_models_dir), str(out), json.dumps(datasets),
             script=script)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank runs
    try:
        single = {dataset: meshrec.evaluate(sahmr, dataset, root, body_model=body_models_dir, progress=False,
                                            transfer=transfer)["metrics"] for dataset, root, transfer in datasets}
    finally:
        torch.set_num_threads(threads)
    for rank in range(2):  # every rank returns the merged metrics
        results = json.loads(Path(f"{out}.rank{rank}").read_text())
        for dataset, expected in single.items():
            sharded = results[dataset]
            assert sharded.pop("world_size") == 2
            assert expected["num_samples"] == 3 and expected["complete"]
            assert sharded.keys() == expected.keys(), dataset
            assert {"GMPJPE", "MPVE", "PenE", "ConFE"} <= expected.keys()
            for key, value in expected.items():
                if isinstance(value, float):
                    assert sharded[key] == pytest.approx(value, rel=1e-12, abs=0), (dataset, key)
                else:
                    assert sharded[key] == value, (dataset, key)
