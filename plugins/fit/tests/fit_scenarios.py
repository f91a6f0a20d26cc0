"""Synthetic ground truth for the fit's tests: posed bodies seen by a camera, their keypoints."""

from __future__ import annotations

import math

import torch

from meshrec.body import SMPL_JOINT_NAMES
from meshrec.rotations import matrix_to_axis_angle, rodrigues

INTRINSICS = torch.tensor([[1000.0, 0, 640], [0, 1000.0, 360], [0, 0, 1]], dtype=torch.float64)


def body_pose(**angles) -> torch.Tensor:
    """(69,) axis-angle body pose from {joint name: (x, y, z)}, other joints zero."""
    pose = torch.zeros(23, 3, dtype=torch.float64)
    for name, value in angles.items():
        pose[SMPL_JOINT_NAMES.index(name) - 1] = torch.tensor(value, dtype=torch.float64)
    return pose.reshape(69)


SITTING = body_pose(left_hip=(-1.45, 0.1, 0.15), right_hip=(-1.5, -0.1, -0.1), left_knee=(1.4, 0, 0),
                    right_knee=(1.65, 0, 0), left_shoulder=(0.2, -0.3, -1.1), right_shoulder=(0.2, 0.3, 1.1),
                    left_elbow=(0, -0.7, 0), right_elbow=(0, 0.9, 0), spine1=(0.15, 0, 0), neck=(0.15, 0.2, 0))
WALKING = body_pose(left_hip=(-0.5, 0, 0), right_hip=(0.3, 0, 0), left_knee=(0.3, 0, 0), right_knee=(0.9, 0, 0),
                    left_shoulder=(0.4, 0, -1.2), right_shoulder=(-0.4, 0, 1.2), left_elbow=(0, -0.4, 0),
                    right_elbow=(0, 0.3, 0))


def camera_orientation(yaw: float, pitch: float) -> torch.Tensor:
    """(3,) axis-angle: an upright body facing the camera, turned by ``yaw`` about its vertical
    axis, seen by a camera tilted down by ``pitch``."""
    rotation = (rodrigues(torch.tensor([pitch, 0.0, 0.0], dtype=torch.float64))
                @ rodrigues(torch.tensor([math.pi, 0.0, 0.0], dtype=torch.float64))
                @ rodrigues(torch.tensor([0.0, yaw, 0.0], dtype=torch.float64)))
    return matrix_to_axis_angle(rotation)


def observe(keypoint_model, vertices, joints, noise: float, seed: int = 0) -> torch.Tensor:
    """(B, K, 3) keypoints: projections through INTRINSICS plus Gaussian pixel noise, confidence 1."""
    points = keypoint_model(vertices, joints).detach()
    projected = points @ INTRINSICS.T
    pixels = projected[..., :2] / projected[..., 2:]
    pixels = pixels + noise * torch.randn(pixels.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.cat([pixels, torch.ones_like(pixels[..., :1])], dim=-1)


def pelvis_aligned_error(keypoint_model, truth, fitted) -> torch.Tensor:
    """(B,) mean distance (metres) of the layout's 3D points after aligning the pelvis."""
    a = keypoint_model(truth.vertices, truth.joints) - truth.joints[:, :1]
    b = keypoint_model(fitted.vertices, fitted.joints) - fitted.joints[:, :1]
    return (a - b).norm(dim=-1).mean(dim=1)
