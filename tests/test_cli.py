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


# ---------------------------------------------------------------------------------------------
# One CLI for the API


API_TO_CLI = {
    # meshrec.predict / meshrec.load_method argument -> its command-line spelling
    "inputs": "inputs",
    "method": "--method",
    "name": "--method",
    "checkpoint": "--checkpoint",
    "body_model": "--body-models",
    "device": "--device",
    "batch_size": "--batch-size",
    "progress": "--progress",
    "bbox_format": "--bbox-format",
    "refine": "--refine",
    "detector": "--detector",
    "config": "--option",  # every declared method option: --option NAME=VALUE
    "per_input": "--annotations",  # per-input extras, each also by its own flag (below)
    "bbox": "--bbox",
    "camera": "--camera",
    "scene": "--scene",
    "keypoints": "--keypoints",
    "keypoint_sequence": "--keypoint-sequence",
}


def test_every_api_argument_has_a_cli_spelling():
    import argparse
    import inspect

    from meshrec.cli import _parser

    parser = _parser()
    predict = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction)).choices["predict"]
    flags = {option for action in predict._actions for option in action.option_strings} | {"inputs"}
    arguments = set(inspect.signature(meshrec.predict).parameters) | set(inspect.signature(meshrec.load_method).parameters)
    arguments |= set(meshrec.Input.keywords())
    missing = sorted(name for name in arguments if name not in API_TO_CLI)
    assert not missing, f"API arguments without a CLI spelling in API_TO_CLI: {missing}"
    for name in arguments:
        assert API_TO_CLI[name] in flags, f"{name}: {API_TO_CLI[name]} is not a flag of `meshrec predict`"
    assert "--trust-checkpoint" in flags and "--keypoint-layout" in flags and "--fail-fast" in flags


def test_method_options_reach_the_method(registered, tmp_path):
    from test_api import LOADS

    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30)).save(image)
    LOADS.clear()
    assert main(["predict", str(image), "--method", "recorder", "--bbox", "1", "2", "3", "4", "--out",
                 str(tmp_path / "out"), "--device", "cpu", "--option", "option=7"]) == 0
    assert LOADS[-1][2] == {"option": 7}


def test_an_unknown_option_is_one_clean_error(registered, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30)).save(image)
    assert main(["predict", str(image), "--method", "recorder", "--bbox", "1", "2", "3", "4", "--out", str(tmp_path),
                 "--option", "optoin=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no option 'optoin' (did you mean 'option'?)" in err


def test_errors_name_the_cli_flags(registered, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30)).save(image)
    assert main(["predict", str(image), "--method", "recorder", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--bbox X Y W H" in err and "bbox=..." not in err
    with pytest.raises(meshrec.MissingInputError, match=r"pass bbox=\.\.\."):
        meshrec.predict(str(image), method="recorder")


def test_unreadable_images_are_skipped_and_reported(registered, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 30)).save(images / "a.png")
    (images / "b.png").write_bytes(b"not a png")
    Image.new("RGB", (40, 30)).save(images / "c.png")
    out = tmp_path / "out"
    assert main(["predict", str(images), "--method", "recorder", "--bbox", "0", "0", "5", "5", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "a.png: 1 person ->" in captured.out and "c.png: 1 person ->" in captured.out
    assert "skipping" in captured.err and "1 of 3 inputs could not be read" in captured.err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and [f["input"] for f in manifest["failed"]] == [str(images / "b.png")]
    assert sorted(manifest["files"]) == ["a.npz", "a.ply", "c.npz", "c.ply"]
    assert main(["predict", str(images), "--method", "recorder", "--bbox", "0", "0", "5", "5", "--out", str(out),
                 "--fail-fast"]) == 2
    assert "b.png" in capsys.readouterr().err


def test_out_is_checked_before_any_work(registered, tmp_path, capsys):
    from test_api import LOADS

    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30)).save(image)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    LOADS.clear()
    for out in (blocker, blocker / "below"):
        assert main(["predict", str(image), "--method", "recorder", "--bbox", "0", "0", "5", "5", "--out", str(out)]) == 2
        assert "output folder" in capsys.readouterr().err
    assert LOADS == []


def test_a_second_run_says_what_it_did_not_write(registered, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 30)).save(images / "a.png")
    out = tmp_path / "out"
    (out).mkdir()
    (out / "old.npz").write_bytes(b"from before")
    assert main(["predict", str(images), "--method", "recorder", "--bbox", "0", "0", "5", "5", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files_from_earlier_runs"] == ["old.npz"] and manifest["method"] == "recorder"
    assert "files of an earlier run" in capsys.readouterr().err
    assert not [p for p in out.iterdir() if ".partial-" in p.name]


def test_close_matches_are_suggested(registered, tmp_path, capsys):
    assert main(["eval", "--method", "recorder", "--dataset", "toysett", "--data-root", str(tmp_path)]) == 2
    assert "Did you mean 'toyset'?" in capsys.readouterr().err
    with pytest.raises(meshrec.UnknownDatasetError, match="Did you mean 'pw3d'"):
        meshrec.evaluate("recorder", "3dpw", tmp_path)


def test_unexpected_errors_are_one_line_unless_debugging(registered, tmp_path, capsys, monkeypatch):
    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30)).save(image)

    def broken(*args, **kwargs):
        raise ZeroDivisionError("deep inside")

    monkeypatch.setattr(meshrec, "predict", broken)
    args = ["predict", str(image), "--method", "recorder", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ZeroDivisionError: deep inside" in err and "--debug" in err
    with pytest.raises(ZeroDivisionError):
        main(["--debug", *args])
    monkeypatch.setenv("MESHREC_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(args)


def test_ctrl_c_ends_with_one_line(registered, tmp_path, capsys, monkeypatch):
    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30)).save(image)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(meshrec, "predict", interrupted)
    assert main(["predict", str(image), "--method", "recorder", "--out", str(tmp_path / "o")]) == 130
    assert capsys.readouterr().err == "meshrec predict: interrupted\n"
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["complete"] is False  # the interrupted run says it did not finish


def test_keypoint_and_scene_files(registered, tmp_path):
    from meshrec.cli import _load_array
    from meshrec.errors import MeshrecError
    from meshrec.io.meshes import read_ply_points, write_ply

    points = np.random.default_rng(0).normal(size=(20, 3))
    write_ply(tmp_path / "scene.ply", points)
    np.testing.assert_allclose(_load_array(str(tmp_path / "scene.ply"), "--scene"), points.astype(np.float32))
    (tmp_path / "ascii.ply").write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
                                        "property float z\nproperty uchar red\nend_header\n1 2 3 9\n4 5 6 9\n")
    np.testing.assert_array_equal(read_ply_points(tmp_path / "ascii.ply"), [[1, 2, 3], [4, 5, 6]])
    (tmp_path / "k.json").write_text(json.dumps([[1, 2, 0.5]] * 17))
    assert _load_array(str(tmp_path / "k.json"), "--keypoints").shape == (17, 3)
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(MeshrecError, match="cannot read --keypoints .*bad.npz"):
        _load_array(str(tmp_path / "bad.npz"), "--keypoints")
    with pytest.raises(MeshrecError, match="is a folder"):
        _load_array(str(tmp_path), "--scene")
