"""End to end: meshrec.load_method / predict with synthetic checkpoints and body models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import meshrec
from meshrec.camera import weak_perspective_to_translation
from meshrec_egohmr.checkpoint import STAGE1_FILE, STAGE2_FILE
from meshrec_egohmr.method import EgoHMR

pytestmark = pytest.mark.slow

CAMERA = np.array([[500.0, 0.0, 160.0], [0.0, 500.0, 120.0], [0.0, 0.0, 1.0]])
BOX = np.array([[110.0, 20.0, 100.0, 200.0]])  # x, y, w, h (meshrec.predict default)


def _image():
    return np.random.default_rng(0).integers(0, 255, size=(240, 320, 3), dtype=np.uint8)


def _scene(count=6000):
    """Random points filling the space in front of the camera (metres, camera frame)."""
    rng = np.random.default_rng(1)
    return rng.uniform([-3.0, -1.5, 1.0], [3.0, 2.0, 9.0], size=(count, 3))


@pytest.fixture(scope="module")
def egohmr(egohmr_release, body_models_dir):
    return meshrec.load_method("egohmr", checkpoint=egohmr_release / STAGE2_FILE, body_model=body_models_dir,
                               device="cpu", timestep_respacing="ddim5", num_samples=3, seed=0, guidance=False,
                               cube_points=2000, stage1_scene_points=3000)


@pytest.fixture(scope="module")
def prohmr(egohmr_release, body_models_dir):
    return meshrec.load_method("prohmr-scene", checkpoint=egohmr_release / STAGE1_FILE, body_model=body_models_dir,
                               device="cpu", num_samples=4, seed=0)


def test_prohmr_scene_mode_samples_and_translation(prohmr):
    pred = meshrec.predict(_image(), method=prohmr, bbox=BOX, camera=CAMERA, scene=_scene())
    assert pred.samples.shape == (1, 4, 6890, 3)
    assert torch.equal(pred.vertices, pred.samples[:, 0])  # the mode is sample 0
    log_prob = pred.extras["log_prob"]
    assert log_prob.shape == (1, 4) and bool(log_prob[0, 0] >= log_prob[0, 1:].max())  # z = 0 is the densest
    # translation from the crop camera with the true focal length: side = 1.2 * 200 px
    expected = weak_perspective_to_translation(pred.extras["crop_camera"].double(), torch.tensor([[160.0, 120.0]]).double(),
                                               torch.tensor([240.0]).double(), torch.tensor(CAMERA)[None])
    assert torch.allclose(pred.transl.double(), expected, atol=1e-4)
    assert 3.0 < float(pred.transl[0, 2]) < 6.0
    assert torch.allclose(pred.joints[0, 0] - pred.transl[0], pred.joints[0, 0] - pred.transl[0])


def test_prohmr_scene_reproducible_with_seed(egohmr_release, body_models_dir, prohmr):
    other = meshrec.load_method("prohmr-scene", checkpoint=egohmr_release / STAGE1_FILE, body_model=body_models_dir,
                                device="cpu", num_samples=4, seed=0)
    first = meshrec.predict(_image(), method=other, bbox=BOX, camera=CAMERA, scene=_scene())
    other.generator.manual_seed(0)
    again = meshrec.predict(_image(), method=other, bbox=BOX, camera=CAMERA, scene=_scene())
    later = meshrec.predict(_image(), method=other, bbox=BOX, camera=CAMERA, scene=_scene())
    assert torch.equal(first.samples, again.samples)
    assert torch.equal(first.samples[:, 0], later.samples[:, 0]) and not torch.equal(first.samples[:, 1:], later.samples[:, 1:])


def test_egohmr_samples_on_stage1_translation(egohmr, prohmr):
    stage1 = meshrec.predict(_image(), method=prohmr, bbox=BOX, camera=CAMERA, scene=_scene())
    pred = meshrec.predict(_image(), method=egohmr, bbox=BOX, camera=CAMERA, scene=_scene())
    assert pred.samples.shape == (1, 3, 6890, 3)
    assert torch.equal(pred.vertices, pred.samples[:, 0])  # the first diffusion sample
    assert torch.allclose(pred.transl, stage1.transl, atol=1e-5)  # stage 2 does not refine translation
    assert pred.extras["samples_body_pose"].shape == (1, 3, 23, 3, 3)
    assert not torch.allclose(pred.samples[:, 0], pred.samples[:, 1])
    assert 0 < int(pred.extras["cube_points"][0]) <= 2000
    rotations = pred.extras["samples_body_pose"]
    eye = torch.eye(3).expand_as(rotations)
    assert torch.allclose(rotations @ rotations.transpose(-1, -2), eye, atol=1e-5)


def test_egohmr_reproducible_and_keypoint_visibility(egohmr):
    egohmr.generator.manual_seed(5)
    first = meshrec.predict(_image(), method=egohmr, bbox=BOX, camera=CAMERA, scene=_scene())
    egohmr.generator.manual_seed(5)
    again = meshrec.predict(_image(), method=egohmr, bbox=BOX, camera=CAMERA, scene=_scene())
    assert torch.equal(first.samples, again.samples)
    keypoints = np.zeros((1, 25, 3))
    keypoints[0, [0, 2, 5, 13, 10], 2] = 0.9
    with_keypoints = meshrec.predict(_image(), method=egohmr, bbox=BOX, camera=CAMERA, scene=_scene(),
                                     keypoints=keypoints)
    visible = with_keypoints.extras["visible_joints"][0]
    assert visible[[0, 1, 2, 3, 4, 5, 6, 9, 15]].all() and not visible[[7, 8, 18, 19]].any()


def test_egohmr_folder_and_mapping_checkpoints(egohmr_release, body_models_dir):
    options = EgoHMR.resolve_options({"timestep_respacing": "ddim5", "num_samples": 1})
    body = meshrec.body.SMPL(body_models_dir, gender="neutral", create_transl=False)
    for checkpoint in (egohmr_release, {"stage1": egohmr_release / STAGE1_FILE, "stage2": egohmr_release / STAGE2_FILE}):
        method = EgoHMR.build(checkpoint, body, torch.device("cpu"), **options)
        assert method.model.stage2 is not None and method.diffusion.timestep_map.tolist() == [0, 10, 20, 30, 40]


def test_egohmr_guided_prediction_runs(egohmr_release, body_models_dir):
    method = meshrec.load_method("egohmr", checkpoint=egohmr_release / STAGE2_FILE, body_model=body_models_dir,
                                 device="cpu", timestep_respacing="ddim5", num_samples=2, seed=0, guidance=True,
                                 cube_points=2000, stage1_scene_points=3000)
    pred = meshrec.predict(_image(), method=method, bbox=BOX, camera=CAMERA, scene=_scene())
    assert pred.samples.shape == (1, 2, 6890, 3) and torch.isfinite(pred.samples).all()


def test_bad_inputs(egohmr):
    with pytest.raises(meshrec.MissingInputError, match="camera"):
        meshrec.predict(_image(), method=egohmr, bbox=BOX, scene=_scene())
    with pytest.raises(meshrec.MissingInputError, match="scene"):
        meshrec.predict(_image(), method=egohmr, bbox=BOX, camera=CAMERA)
    far = _scene() + np.array([100.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="nearest scene point"):
        meshrec.predict(_image(), method=egohmr, bbox=BOX, camera=CAMERA, scene=far)
    behind = _scene() * np.array([1.0, 1.0, -1.0])
    with pytest.raises(ValueError, match="in front of the camera"):
        meshrec.predict(_image(), method=egohmr, bbox=BOX, camera=CAMERA, scene=behind)
    with pytest.raises(ValueError, match="BODY_25"):
        meshrec.predict(_image(), method=egohmr, bbox=BOX, camera=CAMERA, scene=_scene(), keypoints=np.zeros((1, 17, 3)))
    with pytest.raises(ValueError, match="timestep_respacing"):
        EgoHMR.resolve_options({"timestep_respacing": "ddim12"})
