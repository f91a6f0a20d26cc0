"""meshrec demo --photo: detect, fit and draw the people of a real photo; clear errors when the
photo, the detector or the photo demo is missing; the reprojection error it reports."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from meshrec.cli import main
from meshrec.testing.photos import bus_photo, require_mediapipe


@pytest.fixture
def fit_only(plugin_manager):
    pytest.importorskip("meshrec_fit")
    from meshrec_fit import plugin

    plugin_manager.register(plugin, name="fit")
    return plugin_manager


@pytest.fixture
def fit_and_detect(fit_only):
    pytest.importorskip("meshrec_detect",
                        reason="needs meshrec-detect: pip install --no-build-isolation ./plugins/detect")
    from meshrec_detect import plugin

    fit_only.register(plugin, name="detect")
    return fit_only


@pytest.fixture
def no_smpl(tmp_path, monkeypatch):
    """No SMPL files anywhere: the demo uses the synthetic mannequin."""
    monkeypatch.setenv("MESHREC_BODY_MODELS", str(tmp_path / "no-smpl-here"))
    monkeypatch.setenv("HOME", str(tmp_path))


def _photo(path: Path) -> Path:
    Image.fromarray(np.full((64, 48, 3), 200, np.uint8)).save(path)
    return path


# -- the whole chain on bus.jpg -------------------------------------------------------------------
# bus.jpg shows three standing people (annotated by hand in plugins/detect/tests) and a fourth cut
# by the left border down to a shoulder-to-ankle sliver.
STANDING_PEOPLE = 3


@pytest.mark.slow
def test_photo_demo_on_the_bus_photo(fit_and_detect, no_smpl, tmp_path, capsys):
    photo = bus_photo()
    require_mediapipe()
    out = tmp_path / "demo"
    assert main(["demo", "--photo", "--out", str(out), "--fast", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"photo: {photo}" in printed and "synthetic mannequin" in printed
    assert "reprojection error" in printed and "time: detect" in printed
    results = json.loads((out / "bus_results.json").read_text())
    for name in ("bus_overlay.png", "bus_side.png", "bus_demo.png", "bus_people.ply", "bus_results.json"):
        assert (out / name).is_file() and name in results["files"], name
    assert results["detector"] == "blazepose" and results["schedule"] == "fast"
    assert Image.open(out / "bus_overlay.png").size == (810, 1080)
    assert Image.open(out / "bus_demo.png").size == (720, 480)
    people = results["people"]
    assert STANDING_PEOPLE <= len(people) <= STANDING_PEOPLE + 1, people
    # Measured (fast schedule, mannequin, 2 CPU threads): 6.0, 6.3 and 5.4 px on people 450-500
    # px tall (17, 17 and 6 confident keypoints; the default schedule: 2.4, 1.6, 2.8 px). Bound:
    # 1.5 x the worst.
    for person in people:
        assert person["confident_keypoints"] >= 5, person
        assert 0 < person["reprojection_error_px"] < 9.5, person
        assert f"{person['reprojection_error_px']:.1f} px" in printed
    # every body is in front of the camera and printed with its time
    assert all(value >= 0 for value in results["seconds"].values())


def test_photo_demo_on_a_photo_without_people_says_so_and_writes_the_photo(fit_and_detect, no_smpl, tmp_path, capsys):
    require_mediapipe()
    photo = _photo(tmp_path / "wall.png")
    out = tmp_path / "out"
    assert main(["demo", "--photo", str(photo), "--out", str(out), "--fast"]) == 0
    assert "no person found in the photo: nothing to fit" in capsys.readouterr().out
    results = json.loads((out / "wall_results.json").read_text())
    assert results["people"] == [] and "wall_people.ply" not in results["files"]
    assert np.array_equal(np.asarray(Image.open(out / "wall_overlay.png")), np.asarray(Image.open(photo)))


# -- errors that say what to do -------------------------------------------------------------------
def test_photo_demo_without_ultralytics_says_how_to_get_the_photo(fit_and_detect, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "ultralytics" else real(name, *rest))
    assert main(["demo", "--photo", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "pip install ultralytics --no-deps" in error and "meshrec demo --photo PATH" in error


def test_photo_demo_without_a_detector_says_what_to_install(fit_only, tmp_path, capsys):
    photo = _photo(tmp_path / "person.png")
    assert main(["demo", "--photo", str(photo), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "needs a keypoint detector and none is installed" in error
    assert "pip install --no-build-isolation ./plugins/detect" in error and "mediapipe==0.10.21" in error
    assert not (tmp_path / "out").exists()  # refused before any work


def test_photo_demo_refuses_a_box_detector_and_a_missing_photo(fit_and_detect, tmp_path, capsys):
    photo = _photo(tmp_path / "person.png")
    assert main(["demo", "--photo", str(photo), "--detector", "hog", "--out", str(tmp_path)]) == 2
    assert "finds boxes only" in capsys.readouterr().err
    assert main(["demo", "--photo", str(tmp_path / "missing.jpg"), "--out", str(tmp_path)]) == 2
    assert "missing.jpg not found" in capsys.readouterr().err


def test_detector_needs_photo_and_a_method_without_photo_demo_says_so(plugin_manager, tmp_path):
    from meshrec_example import plugin

    plugin_manager.register(plugin, name="example")
    with pytest.raises(SystemExit, match="method 'example' has no photo demo"):
        main(["demo", "--method", "example", "--photo", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="add --photo"):
        main(["demo", "--method", "example", "--detector", "blazepose", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="add --photo"):
        main(["demo", "--method", "example", "--camera", "900", "900", "320", "240", "--out", str(tmp_path)])


def test_photo_demo_takes_the_photos_intrinsics(fit_and_detect, no_smpl, tmp_path, capsys):
    """--camera: the fit and the drawing use the given intrinsics instead of the default."""
    require_mediapipe()
    photo = _photo(tmp_path / "wall.png")  # 48 x 64, nobody in it: the camera is all that is checked
    out = tmp_path / "out"
    assert main(["demo", "--photo", str(photo), "--camera", "90", "95", "20", "30", "--out", str(out), "--fast"]) == 0
    assert "camera: fx 90, fy 95, centre (20, 30) px" in capsys.readouterr().out
    results = json.loads((out / "wall_results.json").read_text())
    assert results["intrinsics"] == [[90.0, 0.0, 20.0], [0.0, 95.0, 30.0], [0.0, 0.0, 1.0]]
    assert main(["demo", "--photo", str(photo), "--camera", "0", "95", "20", "30", "--out", str(out)]) == 2


# -- the number it reports ------------------------------------------------------------------------
def test_reprojection_error_is_the_mean_pixel_distance_on_confident_keypoints():
    import meshrec
    from meshrec.body import SMPL_OUTPUT_JOINT_NAMES, get_layout
    from meshrec.testing import synthetic_smpl
    from meshrec_fit.demo_photo import reprojection_errors

    body = synthetic_smpl(dtype=torch.float64)
    out = body(betas=torch.zeros(2, 10, dtype=torch.float64), body_pose=torch.zeros(2, 69, dtype=torch.float64),
               global_orient=torch.tensor([[np.pi, 0.0, 0.0]] * 2, dtype=torch.float64),
               transl=torch.tensor([[-0.5, 0.0, 4.0], [0.6, 0.2, 5.0]], dtype=torch.float64))
    eye = torch.eye(3, dtype=torch.float64)
    prediction = meshrec.Prediction(vertices=out.vertices, joints=out.joints, global_orient=eye.expand(2, 3, 3),
                                    body_pose=eye.expand(2, 23, 3, 3), betas=torch.zeros(2, 10),
                                    transl=torch.zeros(2, 3),
                                    scores=torch.ones(2), method="test", joint_names=SMPL_OUTPUT_JOINT_NAMES)
    K = np.array([[1000.0, 0.0, 400.0], [0.0, 1000.0, 500.0], [0.0, 0.0, 1.0]])
    # the detections: the bodies' COCO-17 joints projected by hand, then moved
    names = [SMPL_OUTPUT_JOINT_NAMES.index(name) for name in get_layout("coco17").sources]
    joints = out.joints[:, names].numpy()
    uv = joints[..., :2] / joints[..., 2:] * 1000.0 + np.array([400.0, 500.0])
    keypoints = np.concatenate([uv, np.ones((2, 17, 1))], axis=-1)
    keypoints[0, :, 0] += 3.0  # person 1: 3 px off on every keypoint
    keypoints[1, :, :2] += np.array([3.0, 4.0])  # person 2: 5 px off on the confident ones ...
    keypoints[1, 10:, :2] += 100.0  # ... and far off on those below the threshold
    keypoints[1, 10:, 2] = 0.4
    errors = reprojection_errors(prediction, keypoints, K)
    np.testing.assert_allclose(errors, [3.0, 5.0], rtol=1e-9)
    keypoints[0, :, 2] = 0.0
    assert np.isnan(reprojection_errors(prediction, keypoints, K)[0])
    with pytest.raises(ValueError, match=r"keypoints must be \(P=2, K, 3\)"):
        reprojection_errors(prediction, keypoints[:1], K)
