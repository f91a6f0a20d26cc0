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


@pytest.mark.slow
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
    # Bounds at the measured values (fast schedule, 2 CPU threads: ground truth 10 vertices /
    # 45 mm inside; without / with scene terms: PA-MPJPE 29.1 / 34.2 mm, MPJPE 70.7 / 76.0 mm,
    # penetration 7118 / 16 mm over 433 / 13 vertices) with a margin of about 1.3x, so that a 2x
    # regression of any of them fails.
    assert results["ground_truth"]["penetrating_vertices"] <= 15
    with_scene, without = results["with_scene"], results["without_scene"]
    for run in (with_scene, without):
        assert 0 < run["pa_mpjpe_mm"] < 45 and 0 < run["mpjpe_mm"] < 100, run
    assert with_scene["penetration_sum_mm"] < 25 and with_scene["penetrating_vertices"] < 20, with_scene
    assert without["penetration_sum_mm"] > 4000, "the scene term's effect is what the demo shows"
    assert with_scene["root_error_mm"] < 100, with_scene


def test_demo_without_the_fit_plugin_says_what_to_install(plugin_manager, tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "pip install --no-build-isolation ./plugins/fit" in capsys.readouterr().err


def test_a_method_without_a_demo_says_so(plugin_manager, tmp_path):
    from meshrec_example import plugin

    plugin_manager.register(plugin, name="example")
    with pytest.raises(SystemExit, match="method 'example' has no demo"):
        main(["demo", "--method", "example", "--out", str(tmp_path)])
