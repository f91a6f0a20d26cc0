"""meshrec demo: runs end to end with no download, and the scene term does its job."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from meshrec.cli import main


@pytest.fixture
def fit_installed(plugin_manager):
    pytest.importorskip("meshrec_fit")
    from meshrec_fit import plugin

    plugin_manager.register(plugin, name="fit")


def test_demo_fast_schedule(fit_installed, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MESHREC_BODY_MODELS", str(tmp_path / "no-smpl-here"))
    monkeypatch.setenv("HOME", str(tmp_path))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--fast"]) == 0
    printed = capsys.readouterr().out
    assert "synthetic mannequin" in printed and "MPJPE" in printed
    results = json.loads((out / "results.json").read_text())
    for name in ("ground_truth.ply", "ground_truth.obj", "fit_with_scene.ply", "fit_with_scene.obj",
                 "fit_without_scene.ply", "scene.ply", "demo.png", "results.json"):
        assert (out / name).is_file(), name
    assert Image.open(out / "demo.png").size == (2000, 720)
    assert results["ground_truth"]["penetrating_vertices"] < 50
    with_scene, without = results["with_scene"], results["without_scene"]
    assert with_scene["penetration_sum_mm"] <= without["penetration_sum_mm"]
    for run in (with_scene, without):
        assert 0 < run["pa_mpjpe_mm"] < 120 and run["mpjpe_mm"] < 200


def test_demo_without_the_fit_plugin_says_what_to_install(plugin_manager, tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "pip install --no-build-isolation ./plugins/fit" in capsys.readouterr().err
