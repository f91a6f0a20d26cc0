"""Keypoint layouts and priors of meshrec-fit."""

from __future__ import annotations

import math

import pytest
import torch

from meshrec.body import SMPL_JOINT_NAMES, SMPL_OUTPUT_JOINT_NAMES
from meshrec.testing import synthetic_smpl
from meshrec.body.keypoints import LAYOUTS, KeypointModel, get_layout
from meshrec_fit.priors import (
    JOINT_LIMITS,
    angle_limit_penalty,
    backward_limb_penalty,
    geman_mcclure,
    neutral_pose_penalty,
)
from fit_scenarios import SITTING, WALKING, body_pose


def test_layouts_observe_existing_joints():
    assert {name: len(layout) for name, layout in LAYOUTS.items()} == {"coco17": 17, "openpose25": 25, "h36m17": 17}
    for layout in LAYOUTS.values():
        for source in layout.sources:
            assert source.startswith("h36m:") or source in SMPL_OUTPUT_JOINT_NAMES
        assert set(layout.torso) <= set(layout.keypoints)
    coco = get_layout("coco17")
    assert coco.sources[0] == "nose" and coco.sources[-1] == "right_ankle"
    assert get_layout("openpose25").sources[8] == "pelvis"
    with pytest.raises(ValueError, match="unknown keypoint layout 'coco18'.*openpose25 \\(25 keypoints\\)"):
        get_layout("coco18")


def test_keypoint_model(body_models_dir):
    import numpy as np

    smpl = synthetic_smpl()
    out = smpl()
    coco = KeypointModel(get_layout("coco17"))(out.vertices, out.joints)
    assert coco.shape == (1, 17, 3)
    torch.testing.assert_close(coco[0, 0], out.vertices[0, 332])  # the nose vertex
    with pytest.raises(ValueError, match="needs the H36M joint regressor"):
        KeypointModel(get_layout("h36m17"))
    regressor = torch.as_tensor(np.load(body_models_dir / "J_regressor_h36m.npy"), dtype=torch.float32)
    h36m = KeypointModel(get_layout("h36m17"), regressor)(out.vertices, out.joints)
    torch.testing.assert_close(h36m[0], regressor @ out.vertices[0])


def test_joint_limits_cover_every_joint_and_admit_natural_poses():
    assert set(JOINT_LIMITS) == set(SMPL_JOINT_NAMES[1:])
    for pose in (torch.zeros(69, dtype=torch.float64), SITTING, WALKING):
        assert angle_limit_penalty(pose[None]).item() == 0
    hyperextended_knee = body_pose(left_knee=(-0.5, 0, 0))
    backwards_elbow = body_pose(right_elbow=(0, -0.6, 0))
    assert angle_limit_penalty(hyperextended_knee[None]).item() == pytest.approx(0.45**2)
    assert angle_limit_penalty(backwards_elbow[None]).item() == pytest.approx(0.55**2)
    from meshrec_fit.priors import relaxed_pose

    assert neutral_pose_penalty(relaxed_pose(torch.float64)[None]).item() == 0
    assert neutral_pose_penalty(SITTING[None]).item() == pytest.approx(((SITTING - relaxed_pose(torch.float64)) ** 2).sum().item())


def test_limb_direction_prior():
    smpl = synthetic_smpl(dtype=torch.float64)
    rest = smpl(body_pose=torch.zeros(1, 69, dtype=torch.float64)).joints
    sitting = smpl(body_pose=SITTING[None]).joints
    assert backward_limb_penalty(rest).item() == 0 and backward_limb_penalty(sitting).item() == 0
    arm_back = body_pose(left_shoulder=(0, 1.2, 0))  # the left arm swung far behind the body
    leg_back = body_pose(right_hip=(1.2, 0, 0))
    assert backward_limb_penalty(smpl(body_pose=arm_back[None]).joints).item() > 0.1
    assert backward_limb_penalty(smpl(body_pose=leg_back[None]).joints).item() > 0.1
    # invariant to where the body is and how it is turned
    turned = smpl(body_pose=arm_back[None], global_orient=torch.tensor([[math.pi, 0.7, 0.1]], dtype=torch.float64),
                  transl=torch.tensor([[1.0, -2.0, 5.0]], dtype=torch.float64)).joints
    assert backward_limb_penalty(turned).item() == pytest.approx(
        backward_limb_penalty(smpl(body_pose=arm_back[None]).joints).item(), rel=1e-9)


def test_geman_mcclure():
    residual = torch.tensor([0.0, 1.0, 100.0, 1e6], dtype=torch.float64)
    cost = geman_mcclure(residual**2, sigma=100.0)
    assert cost[0] == 0 and cost[1] == pytest.approx(1.0, rel=1e-3)
    assert cost[2] == pytest.approx(0.5 * 100**2) and cost[3] < 100**2
