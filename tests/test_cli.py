"""The meshrec command line, run in-process."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from PIL import Image

import meshrec
from meshrec.cli import main

from test_api import Recorder  # noqa: E402  (a test method shared with the API tests)


@pytest.fixture
def registered(plugin_manager):
    def methods(registry):
        registry.add(Recorder)

    def datasets(registry):
        registry.add("toyset", lambda method, data_root, body_model, batch_size, progress: {"mpjpe": 1.5},
                     summary="a toy set")

    plugin_manager.register(types.SimpleNamespace(meshrec_register_methods=meshrec.hookimpl(methods),
                                                  meshrec_register_datasets=meshrec.hookimpl(datasets)), name="toys")
    return plugin_manager


def test_info(capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert f"meshrec            {meshrec.__version__}" in text and "op backend" in text
    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"meshrec", "torch", "compiled_backends", "cuda_archs", "op_backend", "plugins"} <= set(report)


def test_plugins_table(registered, capsys):
    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "distribution", "version", "methods", "datasets", "status"]
    assert lines[1].split() == ["toys", "-", "-", "recorder", "toyset", "ok"]
    assert lines[2:] == ["", "methods:", f"  recorder  {Recorder.summary}", "", "datasets:", "  toyset  a toy set"]


def test_plugins_empty(plugin_manager, capsys):
    assert main(["plugins"]) == 0
    assert "no meshrec plugins installed" in capsys.readouterr().out


def test_predict_writes_npz_and_ply(registered, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (40, 30)).save(images / name)
    annotations = tmp_path / "annotations.json"
    annotations.write_text(json.dumps({"a.png": {"bbox": [[0, 0, 5, 5], [1, 1, 5, 5]]}, "b.png": {"bbox": [2, 2, 5, 5]}}))
    out = tmp_path / "out"
    code = main(["predict", str(images), "--method", "recorder", "--annotations", str(annotations), "--out", str(out),
                 "--device", "cpu", "--camera", "500", "500", "20", "15"])
    assert code == 0
    assert "a.png: 2 people" in capsys.readouterr().out
    with np.load(out / "a.npz") as saved:
        assert saved["vertices"].shape == (2, 4, 3)
        np.testing.assert_array_equal(saved["extras/bbox"][1], [1, 1, 6, 6])
    header = (out / "a.ply").read_bytes().split(b"end_header")[0].decode()
    assert "element vertex 8" in header and "element face 4" in header


def test_predict_shared_bbox(registered, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30)).save(image)
    assert main(["predict", str(image), "--method", "recorder", "--bbox", "1", "2", "3", "4", "--out", str(tmp_path),
                 "--device", "cpu"]) == 0


def test_eval(registered, tmp_path, capsys):
    out = tmp_path / "results.json"
    assert main(["eval", "--method", "recorder", "--dataset", "toyset", "--data-root", str(tmp_path), "--out", str(out),
                 "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["metrics"] == {"mpjpe": 1.5} and json.loads(out.read_text())["dataset"] == "toyset"


def test_errors_exit_with_status_2(registered, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "x.png"), "--method", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert main(["eval", "--method", "recorder", "--dataset", "nope", "--data-root", str(tmp_path)]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err


def test_module_entry_point():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "meshrec", "--version"], capture_output=True, text=True)
    assert result.stdout.strip() == f"meshrec {meshrec.__version__}"
