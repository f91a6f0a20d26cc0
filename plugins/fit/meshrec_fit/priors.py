"""Robust reprojection and the priors of the fit, none of which needs a downloaded file.

Pose prior: SMPLify's learned GMM is replaced by three terms that need no data file:

1. joint-angle limits on each joint's axis-angle components (knees and elbows do not bend
   backwards, the spine bends forwards more than back, ...), in SMPL's joint frames (x left,
   y up, z forward at rest);
2. limb directions: upper arms, forearms and thighs seldom point far behind the body's frontal plane. This
   settles the forward/backward ambiguity that 2D keypoints leave open for foreshortened limbs
   (a forearm pointing at the camera projects like an arm reaching backwards); it is measured on
   the posed joints, so it holds whatever the shoulder's axis-angle looks like;
3. a quadratic pull towards a relaxed standing pose (arms down, elbows a little bent).
"""

from __future__ import annotations

import functools

import torch
from torch.nn import functional as F

from meshrec.body import SMPL_JOINT_NAMES

__all__ = [
    "JOINT_LIMITS",
    "angle_limit_penalty",
    "backward_limb_penalty",
    "geman_mcclure",
    "neutral_pose_penalty",
    "shape_penalty",
]

# Range of motion per joint, as (lowest, highest) of the x, y, z axis-angle components, radians.
# Derivations in SMPL's rest frames (left is +x, up +y, forward +z):
# - hips: flexion (thigh forwards) is negative x and extension (backwards) stops near 30 degrees;
#   abduction (leg outwards) is +z for the left leg (along -y), -z for the right.
# - knees: flexion is positive x (the shin swings backwards); they do not bend the other way.
# - spine, neck: bending forwards is positive x (the upper body, along +y, swings to +z).
# - shoulders: the left arm lies along +x; swinging it backwards is +y, so extension is limited
#   on +y; raising it is +z. Mirrored for the right arm (along -x).
# - elbows: flexion swings the forearm forwards: -y for the left arm, +y for the right.
JOINT_LIMITS: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "left_hip": ((-2.4, 0.5), (-0.8, 0.8), (-0.5, 1.2)),
    "right_hip": ((-2.4, 0.5), (-0.8, 0.8), (-1.2, 0.5)),
    "spine1": ((-0.4, 0.9), (-0.5, 0.5), (-0.5, 0.5)),
    "left_knee": ((-0.05, 2.7), (-0.2, 0.2), (-0.2, 0.2)),
    "right_knee": ((-0.05, 2.7), (-0.2, 0.2), (-0.2, 0.2)),
    "spine2": ((-0.4, 0.9), (-0.5, 0.5), (-0.5, 0.5)),
    "left_ankle": ((-0.8, 0.8), (-0.5, 0.5), (-0.4, 0.4)),
    "right_ankle": ((-0.8, 0.8), (-0.5, 0.5), (-0.4, 0.4)),
    "spine3": ((-0.4, 0.9), (-0.5, 0.5), (-0.5, 0.5)),
    "left_foot": ((-0.5, 0.5), (-0.2, 0.2), (-0.2, 0.2)),
    "right_foot": ((-0.5, 0.5), (-0.2, 0.2), (-0.2, 0.2)),
    "neck": ((-0.6, 0.8), (-0.8, 0.8), (-0.5, 0.5)),
    "left_collar": ((-0.3, 0.3), (-0.4, 0.4), (-0.3, 0.5)),
    "right_collar": ((-0.3, 0.3), (-0.4, 0.4), (-0.5, 0.3)),
    "head": ((-0.6, 0.6), (-0.8, 0.8), (-0.4, 0.4)),
    "left_shoulder": ((-1.2, 1.2), (-1.6, 0.6), (-1.6, 1.6)),
    "right_shoulder": ((-1.2, 1.2), (-0.6, 1.6), (-1.6, 1.6)),
    "left_elbow": ((-0.5, 0.5), (-2.7, 0.05), (-0.3, 0.3)),
    "right_elbow": ((-0.5, 0.5), (-0.05, 2.7), (-0.3, 0.3)),
    "left_wrist": ((-0.8, 0.8), (-0.8, 0.8), (-0.8, 0.8)),
    "right_wrist": ((-0.8, 0.8), (-0.8, 0.8), (-0.8, 0.8)),
    "left_hand": ((-0.5, 0.5), (-0.5, 0.5), (-0.5, 0.5)),
    "right_hand": ((-0.5, 0.5), (-0.5, 0.5), (-0.5, 0.5)),
}  # fmt: skip


@functools.lru_cache(maxsize=8)
def _bounds(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(23, 3) lowest and highest components, in body_pose's joint order (cached: a fit calls
    this hundreds of times)."""
    limits = torch.tensor([JOINT_LIMITS[name] for name in SMPL_JOINT_NAMES[1:]], dtype=dtype, device=device)
    return limits[..., 0], limits[..., 1]


def angle_limit_penalty(body_pose: torch.Tensor) -> torch.Tensor:
    """(B, 69) axis-angle body pose -> (B,) sum of squared excursions beyond the limits (rad^2)."""
    low, high = _bounds(body_pose.dtype, body_pose.device)
    pose = body_pose.view(-1, 23, 3)
    return (torch.relu(low - pose) ** 2 + torch.relu(pose - high) ** 2).sum(dim=(1, 2))


# How far behind the frontal plane an arm segment or a thigh may point before it costs (sine of the
# angle, ~17 degrees): hanging arms and standing legs stay within it, reaching back does not.
ARM_BACKWARD_LIMIT = 0.3
THIGH_BACKWARD_LIMIT = 0.3


# The limbs the penalty watches, as (from joint, to joint), and whether the hips' forward
# direction (True) or the torso's judges them.
_LIMBS = tuple((f"{side}_{a}", f"{side}_{b}", hips) for side in ("left", "right")
               for a, b, hips in (("shoulder", "elbow", False), ("elbow", "wrist", False), ("hip", "knee", True)))


def _index(names) -> list[int]:
    return [SMPL_JOINT_NAMES.index(name) for name in names]


_LIMB_FROM, _LIMB_TO = _index(a for a, _, _ in _LIMBS), _index(b for _, b, _ in _LIMBS)
_LIMB_USES_HIPS = [hips for _, _, hips in _LIMBS]
# (up, torso across, hips across) as differences of joints: (to, from)
_FRAME_TO, _FRAME_FROM = _index(("neck", "left_shoulder", "left_hip")), _index(("pelvis", "right_shoulder", "right_hip"))


@functools.lru_cache(maxsize=8)
def _limb_limits(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor([THIGH_BACKWARD_LIMIT if hips else ARM_BACKWARD_LIMIT for hips in _LIMB_USES_HIPS],
                        dtype=dtype, device=device)


def backward_limb_penalty(joints: torch.Tensor) -> torch.Tensor:
    """(B, J >= 24, 3) posed SMPL joints (any right-handed frame) -> (B,) squared excess of the
    upper arms', forearms' and thighs' backward direction over what shoulders and hips allow.

    Written with a handful of batched ops over all six limbs: a fit evaluates it a few hundred
    times on a few bodies, where the count of small ops, not arithmetic, sets the cost."""
    frame = joints[:, _FRAME_TO] - joints[:, _FRAME_FROM]  # (B, 3, 3): up, shoulders, hips
    up = F.normalize(frame[:, :1], dim=-1)
    forward = F.normalize(torch.linalg.cross(frame[:, 1:], up.expand(-1, 2, -1), dim=-1), dim=-1)  # torso, hips
    limbs = F.normalize(joints[:, _LIMB_TO] - joints[:, _LIMB_FROM], dim=-1)  # (B, 6, 3)
    judge = forward[:, [1 if hips else 0 for hips in _LIMB_USES_HIPS]]
    backward = -(limbs * judge).sum(-1) - _limb_limits(joints.dtype, joints.device)
    return (torch.relu(backward) ** 2).sum(-1)


# The pose the neutral-pose term pulls towards: standing relaxed, arms down at the sides with the
# elbows a little bent, rather than SMPL's T-pose. With straight elbows at the centre, a forearm
# that points at the camera loses to a straight arm reaching back, which projects the same.
RELAXED_POSE = {"left_shoulder": (0.0, 0.0, -1.1), "right_shoulder": (0.0, 0.0, 1.1),
                "left_elbow": (0.0, -0.5, 0.0), "right_elbow": (0.0, 0.5, 0.0)}


def relaxed_pose(dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """(69,) axis-angle of :data:`RELAXED_POSE` (other joints zero)."""
    return _relaxed_pose(dtype, torch.device(device) if device is not None else torch.device("cpu")).clone()


@functools.lru_cache(maxsize=8)
def _relaxed_pose(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    pose = torch.zeros(23, 3, dtype=dtype, device=device)
    for name, value in RELAXED_POSE.items():
        pose[SMPL_JOINT_NAMES.index(name) - 1] = torch.tensor(value, dtype=dtype, device=device)
    return pose.reshape(69)


def neutral_pose_penalty(body_pose: torch.Tensor) -> torch.Tensor:
    """(B, 69) -> (B,) squared distance from the relaxed standing pose (rad^2)."""
    return ((body_pose - _relaxed_pose(body_pose.dtype, body_pose.device)) ** 2).sum(dim=1)


def shape_penalty(betas: torch.Tensor) -> torch.Tensor:
    """(B, NB) -> (B,) squared norm of the shape coefficients (they are unit-variance PCA)."""
    return (betas**2).sum(dim=1)


def geman_mcclure(squared_residual: torch.Tensor, sigma: float) -> torch.Tensor:
    """Geman-McClure robust cost of squared residuals: sigma^2 r^2 / (sigma^2 + r^2), quadratic
    for r << sigma and bounded by sigma^2 beyond, so a wrong keypoint cannot dominate."""
    return sigma**2 * squared_residual / (sigma**2 + squared_residual)
