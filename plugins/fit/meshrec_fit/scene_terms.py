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


@dataclass
class SceneSDF:
    """A signed-distance grid of the scene in the camera frame (negative inside objects), as
    PROX and SA-HMR store theirs: ``sdf[ix, iy, iz]`` at ``grid_min + index * (grid_max -
    grid_min) / (dims - 1)`` (:func:`meshrec.ops.sample_sdf`).

    Term ``scene_penetration``: the squared depth of body vertices inside the scene, summed.
    """

    sdf: torch.Tensor  # (X, Y, Z)
    grid_min: tuple[float, float, float]
    grid_max: tuple[float, float, float]

    @classmethod
    def from_option(cls, value) -> "SceneSDF":
        if isinstance(value, SceneSDF):
            return value
        try:
            sdf, grid_min, grid_max = value
        except (TypeError, ValueError):
            raise ValueError("scene_sdf must be (sdf (X, Y, Z), grid_min (3,), grid_max (3,))") from None
        sdf = torch.as_tensor(sdf)
        if sdf.dim() != 3 or min(sdf.shape) < 2:
            raise ValueError(f"scene_sdf's grid must be (X, Y, Z) with at least 2 samples per axis, got {tuple(sdf.shape)}")
        grid_min = tuple(float(v) for v in grid_min)
        grid_max = tuple(float(v) for v in grid_max)
        if len(grid_min) != 3 or len(grid_max) != 3 or not all(hi > lo for lo, hi in zip(grid_min, grid_max)):
            raise ValueError(f"scene_sdf's grid_min {grid_min} must lie below grid_max {grid_max} on every axis")
        return cls(sdf=sdf, grid_min=grid_min, grid_max=grid_max)

    def distance(self, points: torch.Tensor) -> torch.Tensor:
        from meshrec.ops import sample_sdf

        return sample_sdf(points, self.sdf.to(points), self.grid_min, self.grid_max)

    def scene_penetration(self, vertices: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        return (F.relu(-self.distance(vertices)) ** 2).sum(dim=1)

    def terms(self) -> dict:
        return {"scene_penetration": self.scene_penetration}
