"""The demo's scene: a floor with boxes, as point clouds and signed-distance grids, seen by a camera.

World frame: y up, floor at y = 0, metres. Cameras are given by a world-to-camera rotation R and
translation t (x_cam = R x_world + t) in OpenCV's convention (x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from meshrec.scene.points import Box, box_surface_points

__all__ = ["FloorAndBoxes", "look_at"]


def look_at(eye, target, up=(0.0, 1.0, 0.0), dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """World-to-camera (R, t) of a camera at ``eye`` looking at ``target`` with ``up`` pointing up
    in the picture."""
    eye, target, up = (torch.as_tensor(v, dtype=dtype) for v in (eye, target, up))
    forward = torch.nn.functional.normalize(target - eye, dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up, dim=0), dim=0)
    down = torch.linalg.cross(forward, right, dim=0)
    rotation = torch.stack([right, down, forward])
    return rotation, -rotation @ eye


@dataclass
class FloorAndBoxes:
    """A floor (y = 0) with boxes standing on it, seen by a camera (R, t)."""

    rotation: torch.Tensor  # (3, 3) world to camera
    translation: torch.Tensor  # (3,)
    boxes: list[Box] = field(default_factory=list)
    floor_extent: float = 2.5  # the floor is sampled over [-extent, extent]^2 around the origin

    def to_camera(self, points: torch.Tensor) -> torch.Tensor:
        return points @ self.rotation.to(points).T + self.translation.to(points)

    def to_world(self, points: torch.Tensor) -> torch.Tensor:
        return (points - self.translation.to(points)) @ self.rotation.to(points)

    def signed_distance(self, world_points: torch.Tensor) -> torch.Tensor:
        """Distance to the scene's solids (the half-space below the floor and the boxes)."""
        distance = world_points[..., 1]
        for box in self.boxes:
            distance = torch.minimum(distance, box.signed_distance(world_points))
        return distance

    def ground_plane(self) -> torch.Tensor:
        """(4,) plane (a, b, c, d) of the floor in the camera frame, normal pointing up."""
        normal = self.rotation @ torch.tensor([0.0, 1.0, 0.0], dtype=self.rotation.dtype)
        return torch.cat([normal, -(normal @ self.translation)[None]])

    def points(self, count: int = 60_000, seed: int = 0) -> torch.Tensor:
        """(count, 3) camera-frame points on the floor and on the boxes' faces above it."""
        generator = torch.Generator().manual_seed(seed)
        dtype = self.rotation.dtype
        per_box = count // (2 * max(len(self.boxes), 1)) if self.boxes else 0
        floor_count = count - per_box * len(self.boxes)
        floor = (torch.rand(floor_count, 3, generator=generator, dtype=dtype) * 2 - 1) * self.floor_extent
        floor[:, 1] = 0
        parts = [floor] + [box_surface_points(box, per_box, generator, dtype) for box in self.boxes]
        world = torch.cat(parts)
        return self.to_camera(world)

    def floor_mesh(self, cells: int = 40, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
        """The floor square [-extent, extent]^2 (y = 0) as a grid of ``cells`` x ``cells`` quads:
        world-frame vertices ((cells + 1)^2, 3) and faces (2 cells^2, 3), facing up. Quad
        (i, j) has faces 2 (i cells + j) and 2 (i cells + j) + 1 (for a checkerboard). A grid
        rather than one quad so that a camera standing on it only loses the cells at its feet
        (rasterisers skip triangles reaching behind the camera)."""
        axis = torch.linspace(-self.floor_extent, self.floor_extent, cells + 1, dtype=dtype)
        x, z = torch.meshgrid(axis, axis, indexing="ij")
        vertices = torch.stack([x, torch.zeros_like(x), z], dim=-1).reshape(-1, 3)
        corner = (torch.arange(cells)[:, None] * (cells + 1) + torch.arange(cells)[None]).reshape(-1)
        a, b, c, d = corner, corner + 1, corner + cells + 2, corner + cells + 1  # (i,j) (i,j+1) (i+1,j+1) (i+1,j)
        faces = torch.stack([torch.stack([a, b, c], 1), torch.stack([a, c, d], 1)], dim=1).reshape(-1, 3)
        return vertices, faces

    def sdf_grid(self, grid_min, grid_max, spacing: float = 0.025) -> tuple[torch.Tensor, tuple, tuple]:
        """Signed distances on a camera-frame grid spanning [grid_min, grid_max] (both ends
        sampled), in :func:`meshrec.ops.sample_sdf`'s layout: (sdf (X, Y, Z), grid_min, grid_max)."""
        low = torch.as_tensor(grid_min, dtype=torch.float64)
        high = torch.as_tensor(grid_max, dtype=torch.float64)
        counts = [int(torch.ceil((h - l) / spacing).item()) + 1 for l, h in zip(low, high)]
        axes = [torch.linspace(float(l), float(h), n, dtype=torch.float64) for l, h, n in zip(low, high, counts)]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
        sdf = self.signed_distance(self.to_world(grid.reshape(-1, 3).to(self.rotation.dtype))).reshape(*counts)
        return sdf.float(), tuple(low.tolist()), tuple(high.tolist())
