"""`meshrec predict --method fit` on a user's own keypoints (annotations JSON)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from meshrec.body import KeypointModel, get_layout
from meshrec.cli import main
from meshrec_fit import plugin
from fit_scenarios import WALKING, camera_orientation, observe


@pytest.fixture
def truth(body_models_dir):
    """A walking person 3.2 m in front of the camera (SMPL output, float64)."""
    from meshrec.body import SMPL

    smpl = SMPL(body_models_dir, dtype=torch.float64, create_transl=False)
    return smpl(body_pose=WALKING[None], global_orient=camera_orientation(0.3, 0.2)[None],
                transl=torch.tensor([[0.0, 0.3, 3.2]], dtype=torch.float64))


@pytest.mark.slow
def test_predict_command_fits_annotated_keypoints(plugin_manager, body_models_dir, truth, tmp_path, capsys):
    plugin_manager.register(plugin, name="fit")
    keypoints = observe(KeypointModel(get_layout("coco17")), truth.vertices, truth.joints, 1.0)[0].numpy()
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (1280, 720)).save(images / "frame.jpg")
    annotations = tmp_path / "keypoints.json"
    annotations.write_text(json.dumps({"frame.jpg": {"keypoints": [keypoints.tolist()]}}))
    out = tmp_path / "out"
    code = main(["predict", str(images), "--method", "fit", "--annotations", str(annotations), "--camera", "1000",
                 "1000", "640", "360", "--body-models", str(body_models_dir), "--out", str(out), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    with np.load(out / "frame.npz") as saved:
        assert saved["vertices"].shape == (1, 6890, 3) and str(saved["method"]) == "fit"
        fitted_pelvis = saved["joints"][0, 0]
    assert np.linalg.norm(fitted_pelvis - truth.joints[0, 0].detach().numpy()) < 0.3
    assert (out / "frame.ply").is_file()


@pytest.mark.slow
def test_keypoints_file_and_layout_without_an_image(plugin_manager, body_models_dir, truth, tmp_path, capsys):
    plugin_manager.register(plugin, name="fit")
    keypoints = observe(KeypointModel(get_layout("openpose25")), truth.vertices, truth.joints, 1.0)[0].numpy()
    np.save(tmp_path / "person.npy", keypoints)
    out = tmp_path / "out"
    base = ["predict", "--method", "fit", "--keypoints", str(tmp_path / "person.npy"), "--camera", "1000", "1000",
            "640", "360", "--body-models", str(body_models_dir), "--out", str(out), "--device", "cpu"]
    assert main(base) == 2  # the default layout is COCO-17
    err = capsys.readouterr().err
    assert "25 points per person" in err and "--keypoint-layout NAME" in err and "keypoint_layout=" not in err
    assert main([*base, "--keypoint-layout", "openpose25", "--option", "schedule=fast"]) == 0, capsys.readouterr().err
    with np.load(out / "keypoints.npz") as saved:
        assert np.linalg.norm(saved["joints"][0, 0] - truth.joints[0, 0].detach().numpy()) < 0.3
    assert main(["predict", "--method", "fit", "--camera", "1000", "1000", "640", "360", "--out", str(out)]) == 2
    assert "--keypoints FILE" in capsys.readouterr().err
