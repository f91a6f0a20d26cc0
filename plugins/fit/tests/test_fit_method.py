"""The fit method through meshrec.predict: accuracy, refinement, sequences, input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import meshrec
from meshrec.rotations import rodrigues
from meshrec.testing import synthetic_smpl
from meshrec_fit import plugin
from meshrec.body.keypoints import KeypointModel, get_layout
from fit_scenarios import INTRINSICS, SITTING, WALKING, camera_orientation, observe, pelvis_aligned_error

LAYOUT = "openpose25"


@pytest.fixture(scope="module")
def smpl():
    return synthetic_smpl(dtype=torch.float64, create_transl=False)


@pytest.fixture
def fit(plugin_manager, smpl):
    plugin_manager.register(plugin, name="fit")
    return meshrec.load_method("fit", body_model=smpl, device="cpu", keypoint_layout=LAYOUT)


def truth(smpl, pose, yaw, pitch, transl=(0.1, 0.3, 3.2)):
    return smpl(body_pose=pose[None], global_orient=camera_orientation(yaw, pitch)[None],
                transl=torch.tensor([transl], dtype=torch.float64))


@pytest.mark.parametrize("pose, yaw, pitch, bound", [(SITTING, 0.7, 0.35, 0.030), (WALKING, -0.5, 0.25, 0.040)],
                         ids=["sitting", "walking"])
@pytest.mark.slow
def test_recovers_the_pose_from_noisy_keypoints(fit, smpl, pose, yaw, pitch, bound):
    """1 px Gaussian noise on OpenPose-25 keypoints, 1000 px focal length, person 3.2 m away, a
    three-quarter view from slightly above; no initial body (multi-hypothesis start). Error:
    mean distance of the 25 keypoints' 3D points after aligning the pelvis. Sitting is within
    30 mm; walking within 40 mm (measured 36 mm: one view leaves the forward thigh's depth
    ambiguous at the knee, about 95 mm there)."""
    keypoint_model = KeypointModel(get_layout(LAYOUT))
    gt = truth(smpl, pose, yaw, pitch)
    keypoints = observe(keypoint_model, gt.vertices, gt.joints, noise=1.0)[0]
    prediction = meshrec.predict(None, method=fit, keypoints=keypoints.numpy(), camera=INTRINSICS.numpy())
    error = pelvis_aligned_error(keypoint_model, gt, prediction).item()
    assert error < bound, f"pelvis-aligned MPJPE {error * 1000:.1f} mm"
    assert (prediction.transl[0] - gt.joints[0, 0] + (prediction.joints[0, 0] - prediction.transl[0])).norm() < 0.15


class Perturbed(meshrec.Method):
    """A stand-in network: ground truth with per-joint errors of 0.15 rad and a wrong depth."""

    name = "perturbed"
    inputs = frozenset()
    optional_inputs = frozenset({meshrec.Input.CAMERA})
    body_model_type = None
    truth = None

    @classmethod
    def build(cls, checkpoint, body_model, device, **config):
        return cls(torch.nn.Identity(), None, device)

    def predict_batch(self, samples):
        pose, orient, transl = self.truth
        generator = torch.Generator().manual_seed(3)
        noisy = pose + 0.15 * torch.randn(pose.shape, generator=generator, dtype=torch.float64)
        rotations = rodrigues(noisy.view(1, 23, 3))
        return [meshrec.Prediction(vertices=torch.zeros(1, 6890, 3), joints=torch.zeros(1, 45, 3),
                                   global_orient=rodrigues(orient.view(1, 3)), body_pose=rotations,
                                   betas=torch.zeros(1, 10, dtype=torch.float64), transl=(transl * 1.1)[None],
                                   scores=torch.ones(1)) for _ in samples]


@pytest.mark.slow
def test_refines_another_methods_prediction(plugin_manager, fit, smpl):
    keypoint_model = KeypointModel(get_layout(LAYOUT))
    orient = camera_orientation(0.4, 0.3)
    gt = smpl(body_pose=SITTING[None], global_orient=orient[None])
    transl = torch.tensor([0.0, 0.3, 3.0], dtype=torch.float64) - gt.joints[0, 0]
    gt = smpl(body_pose=SITTING[None], global_orient=orient[None], transl=transl[None])
    Perturbed.truth = (SITTING, orient, transl)
    plugin_manager.methods().add(Perturbed)
    keypoints = observe(keypoint_model, gt.vertices, gt.joints, noise=1.0)[0].numpy()
    before = meshrec.predict(None, method="perturbed", camera=INTRINSICS.numpy())
    before_body = smpl(global_orient=before.global_orient[:, None], body_pose=before.body_pose, transl=before.transl,
                       pose2rot=False)
    refined = meshrec.predict(None, method="perturbed", refine=fit, keypoints=keypoints, camera=INTRINSICS.numpy())
    assert refined.method == "perturbed+fit" and refined.extras["refined_from"] == "perturbed"
    error_before = pelvis_aligned_error(keypoint_model, gt, before_body).item()
    error_after = pelvis_aligned_error(keypoint_model, gt, refined).item()
    assert error_after < 0.03 and error_after < 0.5 * error_before, (error_before, error_after)
    with pytest.raises(ValueError, match="2 keypoint sets for 1 predicted people"):
        meshrec.predict(None, method="perturbed", refine=fit, keypoints=np.stack([keypoints, keypoints]),
                        camera=INTRINSICS.numpy())


@pytest.mark.slow
def test_several_people_and_inputs_in_one_batch(plugin_manager, smpl):
    plugin_manager.register(plugin, name="fit")
    method = meshrec.load_method("fit", body_model=smpl, device="cpu", keypoint_layout=LAYOUT, schedule="fast")
    keypoint_model = KeypointModel(get_layout(LAYOUT))
    a = truth(smpl, WALKING, 0.3, 0.2, (-0.6, 0.3, 3.5))
    b = truth(smpl, SITTING, -0.3, 0.2, (0.7, 0.4, 4.0))
    kp_a = observe(keypoint_model, a.vertices, a.joints, 1.0).numpy()
    kp_b = observe(keypoint_model, b.vertices, b.joints, 1.0).numpy()
    predictions = meshrec.predict(None, method=method, keypoints=[np.concatenate([kp_a, kp_b]), kp_b],
                                  camera=INTRINSICS.numpy())
    assert [p.num_people for p in predictions] == [2, 1]
    assert predictions[0].transl[0, 0] < predictions[0].transl[1, 0]  # left person first
    torch.testing.assert_close(predictions[1].vertices[0], predictions[0].vertices[1], atol=2e-2, rtol=0)


@pytest.mark.slow
def test_sequence_shares_betas_and_returns_every_frame(plugin_manager, smpl):
    plugin_manager.register(plugin, name="fit")
    method = meshrec.load_method("fit", body_model=smpl, device="cpu", keypoint_layout=LAYOUT, schedule="fast")
    keypoint_model = KeypointModel(get_layout(LAYOUT))
    frames = [truth(smpl, WALKING * (0.8 + 0.1 * t), 0.3 + 0.05 * t, 0.2) for t in range(3)]
    sequence = np.stack([observe(keypoint_model, f.vertices, f.joints, 1.0, seed=t).numpy() for t, f in enumerate(frames)])
    prediction = meshrec.predict(None, method=method, keypoint_sequence=sequence, camera=INTRINSICS.numpy())
    assert prediction.num_people == 3 and prediction.extras["frames"] == 3
    torch.testing.assert_close(prediction.betas[0], prediction.betas[2])


def test_default_intrinsics_from_the_image(fit, smpl):
    keypoint_model = KeypointModel(get_layout(LAYOUT))
    gt = truth(smpl, WALKING, 0.2, 0.2)
    keypoints = observe(keypoint_model, gt.vertices, gt.joints, 0.0)[0].numpy()
    image = np.zeros((720, 1280, 3), dtype=np.uint8)
    prediction = meshrec.predict(image, method=fit, keypoints=keypoints)
    assert prediction.num_people == 1 and torch.isfinite(prediction.vertices).all()


def test_input_errors(fit):
    K = INTRINSICS.numpy()
    with pytest.raises(ValueError, match="have 17 points per person but the layout 'openpose25' has 25"):
        meshrec.predict(None, method=fit, keypoints=np.ones((17, 3)), camera=K)
    with pytest.raises(ValueError, match="no keypoint with confidence > 0"):
        meshrec.predict(None, method=fit, keypoints=np.zeros((25, 3)), camera=K)
    with pytest.raises(meshrec.MissingInputError, match="needs camera=K .* or the image"):
        meshrec.predict(None, method=fit, keypoints=np.ones((25, 3)))
    with pytest.raises(meshrec.MissingInputError, match="needs keypoints="):
        meshrec.predict(None, method=fit, camera=K)


def test_option_errors(plugin_manager, smpl, tmp_path):
    plugin_manager.register(plugin, name="fit")
    with pytest.raises(TypeError, match="method 'fit' has no option 'iterations'"):
        meshrec.load_method("fit", body_model=smpl, device="cpu", iterations=3)
    method = meshrec.load_method("fit", body_model=smpl, device="cpu", schedule="fast", body_steps="7",
                                 sigmas="500,50")
    assert method.fit_config.body_steps == 7 and method.fit_config.sigmas == (500.0, 50.0)
    assert method.fit_config.placement_steps == 8  # the fast schedule's, not overridden
    with pytest.raises(ValueError, match="option 'schedule' of method 'fit' must be one of 'default', 'fast'"):
        meshrec.load_method("fit", body_model=smpl, device="cpu", schedule="slow")
    with pytest.raises(ValueError, match="optimizer must be"):
        meshrec.load_method("fit", body_model=smpl, device="cpu", optimizer="sgd")
    with pytest.raises(ValueError, match="ground_plane must be four finite numbers"):
        meshrec.load_method("fit", body_model=smpl, device="cpu", ground_plane=(0, 1, 0))
    weights = tmp_path / "w.pth"
    torch.save({"state_dict": {}}, weights)
    with pytest.raises(meshrec.CheckpointError, match="has no weights"):
        meshrec.load_method("fit", checkpoint=weights, body_model=smpl, device="cpu")


@pytest.mark.slow
def test_adam_optimiser_also_fits(plugin_manager, smpl):
    """Adam converges more slowly than L-BFGS; with the fast schedule it reaches a few pixels."""
    plugin_manager.register(plugin, name="fit")
    method = meshrec.load_method("fit", body_model=smpl, device="cpu", keypoint_layout=LAYOUT, schedule="fast",
                                 optimizer="adam")
    keypoint_model = KeypointModel(get_layout(LAYOUT))
    gt = truth(smpl, WALKING, 0.3, 0.2)
    keypoints = observe(keypoint_model, gt.vertices, gt.joints, 1.0)[0]
    prediction = meshrec.predict(None, method=method, keypoints=keypoints.numpy(), camera=INTRINSICS.numpy())
    projected = keypoint_model(prediction.vertices, prediction.joints) @ INTRINSICS.T
    residual = (projected[0, :, :2] / projected[0, :, 2:] - keypoints[:, :2]).norm(dim=-1)
    assert residual.pow(2).mean().sqrt() < 6.0, residual
