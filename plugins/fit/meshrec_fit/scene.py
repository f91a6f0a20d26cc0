"""Scene terms of the fit: per-body costs of the posed mesh against the scene (metres^2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from meshrec.body import SMPL_OUTPUT_JOINT_NAMES

__all__ = ["GroundPlane"]

FOOT_POINTS = ("left_heel", "left_big_toe", "left_small_toe", "right_heel", "right_big_toe", "right_small_toe")


@dataclass
class GroundPlane:
    """The floor, n . x + d = 0 in the camera frame, unit normal n pointing up out of it.

    Terms: ``floor_penetration``, the squared depth of vertices below the floor, summed;
    ``foot_contact``, the squared height of the lowest foot point (heels and toes) above the
    floor, so that a standing or sitting body rests on it instead of floating.
    """

    normal: torch.Tensor  # (3,)
    offset: float

    @classmethod
    def from_coefficients(cls, coefficients) -> "GroundPlane":
        values = torch.as_tensor(coefficients, dtype=torch.float64).reshape(-1)
        if values.numel() != 4 or not torch.isfinite(values).all():
            raise ValueError(f"ground_plane must be four finite numbers (a, b, c, d), got {coefficients!r}")
        norm = values[:3].norm()
        if norm < 1e-9:
            raise ValueError("ground_plane's normal (a, b, c) must not be zero")
        return cls(normal=values[:3] / norm, offset=float(values[3] / norm))

    def height(self, points: torch.Tensor) -> torch.Tensor:
        """Signed height (metres) of points (..., 3) above the floor."""
        return points @ self.normal.to(points) + self.offset

    def floor_penetration(self, vertices: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        return (F.relu(-self.height(vertices)) ** 2).sum(dim=1)

    def foot_contact(self, vertices: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        feet = joints[:, [SMPL_OUTPUT_JOINT_NAMES.index(name) for name in FOOT_POINTS]]
        lowest = self.height(feet).amin(dim=1)
        return lowest**2

    def terms(self) -> dict:
        return {"floor_penetration": self.floor_penetration, "foot_contact": self.foot_contact}
