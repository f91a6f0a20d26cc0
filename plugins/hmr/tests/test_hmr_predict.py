"""meshrec.predict with the hmr method: crops, camera, batching, the Prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import meshrec
from hmr_checkpoints import mmhuman3d_hmr_state_dict, mmhuman3d_meta
from meshrec.camera import default_intrinsics, project
from meshrec_hmr import plugin


@pytest.fixture(scope="module")
def mean_checkpoint(tmp_path_factory):
    """A checkpoint whose decoders output zero, so the network predicts its mean parameters."""
    state = mmhuman3d_hmr_state_dict(seed=1)
    for part in ("decpose", "decshape", "deccam"):
        state[f"head.{part}.weight"].zero_()
        state[f"head.{part}.bias"].zero_()
    state["head.init_shape"] = torch.linspace(-1, 1, 10)[None]
    path = tmp_path_factory.mktemp("ckpt") / "mean.pth"
    torch.save({"meta": mmhuman3d_meta(), "state_dict": state}, path)
    return path, state


@pytest.fixture
def hmr(plugin_manager, mean_checkpoint, body_models_dir):
    plugin_manager.register(plugin, name="hmr")
    return meshrec.load_method("hmr", checkpoint=mean_checkpoint[0], body_model=body_models_dir, device="cpu")


def image(height=360, width=480, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def test_prediction_layout_and_body_model_consistency(hmr, mean_checkpoint):
    boxes = np.array([[100.0, 40, 120, 280], [300, 100, 60, 150]])
    prediction = meshrec.predict(image(), method=hmr, bbox=boxes)
    assert prediction.method == "hmr" and prediction.num_people == 2
    assert prediction.vertices.shape == (2, 6890, 3) and prediction.joints.shape == (2, 45, 3)
    assert prediction.global_orient.shape == (2, 3, 3) and prediction.body_pose.shape == (2, 23, 3, 3)
    state = mean_checkpoint[1]
    torch.testing.assert_close(prediction.betas, state["head.init_shape"].expand(2, -1))
    torch.testing.assert_close(prediction.extras["crop_camera"], state["head.init_cam"].expand(2, -1))
    rebuilt = hmr.body_model(betas=prediction.betas, global_orient=prediction.global_orient[:, None],
                             body_pose=prediction.body_pose, transl=prediction.transl, pose2rot=False)
    torch.testing.assert_close(rebuilt.vertices, prediction.vertices)
    assert torch.all(prediction.vertices[..., 2] > 0), "bodies must be in front of the camera"


def test_camera_frame_mesh_projects_onto_the_crop(hmr):
    """Perspective projection of the camera-frame mesh reproduces the weak-perspective crop
    projection (exactly for points at the body's depth; here within the body's depth extent)."""
    boxes = np.array([[100.0, 40, 120, 280]])
    K = np.array([[900.0, 0, 250], [0, 900, 170], [0, 0, 1]])
    prediction = meshrec.predict(image(), method=hmr, bbox=boxes, camera=K)
    body = prediction.vertices[0] - prediction.transl[0]
    s, tx, ty = prediction.extras["crop_camera"][0].double()
    centre, side = prediction.extras["crop_centre"][0], prediction.extras["crop_size"][0]
    weak = centre + s * side / 2 * (body[:, :2].double() + torch.stack([tx, ty]))
    perspective = project(prediction.vertices[0].double(), torch.as_tensor(K))
    error = (perspective - weak).norm(dim=-1) / side
    assert error.mean() < 0.02 and error.max() < 0.05
    assert side == pytest.approx(1.25 * 280)
    torch.testing.assert_close(centre, torch.tensor([160.0, 180.0], dtype=torch.float64))


def test_box_formats_batches_and_defaults(hmr):
    images = [image(seed=1), image(240, 320, seed=2)]
    xywh = meshrec.predict(images, method=hmr, bbox=[np.array([10.0, 20, 100, 200]), np.array([5.0, 5, 50, 80])])
    xyxy = meshrec.predict(images, method=hmr, bbox=[np.array([10.0, 20, 110, 220]), np.array([5.0, 5, 55, 85])],
                           bbox_format="xyxy", batch_size=1)
    for a, b in zip(xywh, xyxy):
        torch.testing.assert_close(a.vertices, b.vertices)
    whole = meshrec.predict(images[1], method=hmr)
    assert whole.num_people == 1 and whole.extras["crop_size"][0] == pytest.approx(320)
    torch.testing.assert_close(whole.extras["intrinsics"][0], default_intrinsics(240, 320, torch.float64))


def test_deterministic_in_eval_mode(hmr, hmr_checkpoint, body_models_dir, plugin_manager):
    method = meshrec.load_method("hmr", checkpoint=hmr_checkpoint, body_model=body_models_dir, device="cpu")
    assert not method.model.training
    a = meshrec.predict(image(), method=method, bbox=[10, 10, 200, 300])
    b = meshrec.predict(image(), method=method, bbox=[10, 10, 200, 300])
    torch.testing.assert_close(a.vertices, b.vertices, atol=0, rtol=0)


def test_errors(plugin_manager, hmr_checkpoint, body_models_dir, tmp_path, monkeypatch):
    plugin_manager.register(plugin, name="hmr")
    with pytest.raises(meshrec.CheckpointError, match="needs a checkpoint.*resnet50_hmr_gta"):
        meshrec.predict(image(), method="hmr", body_model=body_models_dir)
    with pytest.raises(TypeError, match="no option .scale. .did you mean .bbox_scale"):
        meshrec.load_method("hmr", checkpoint=hmr_checkpoint, body_model=body_models_dir, device="cpu", scale=2)
    with pytest.raises(ValueError, match="bbox_scale must be positive"):
        meshrec.load_method("hmr", checkpoint=hmr_checkpoint, body_model=body_models_dir, device="cpu", bbox_scale=0)
    monkeypatch.setenv("MESHREC_BODY_MODELS", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(meshrec.BodyModelNotFoundError):
        meshrec.predict(image(), method="hmr", checkpoint=hmr_checkpoint)
    with pytest.raises(ValueError, match="does not use"):
        meshrec.predict(image(), method="hmr", checkpoint=hmr_checkpoint, body_model=body_models_dir,
                        scene=np.zeros((5, 3)))


def test_bbox_scale_option(plugin_manager, mean_checkpoint, body_models_dir):
    plugin_manager.register(plugin, name="hmr")
    method = meshrec.load_method("hmr", checkpoint=mean_checkpoint[0], body_model=body_models_dir, device="cpu",
                                 bbox_scale=1.0)
    prediction = meshrec.predict(image(), method=method, bbox=[100.0, 40, 120, 280])
    assert prediction.extras["crop_size"][0] == pytest.approx(280)
