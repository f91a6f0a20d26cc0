"""Scene points for the methods that take a scene (SA-HMR, EgoHMR, the fit's scene terms): depth
maps and mesh files to points, box primitives (synthetic scenes: the demo, tests), and the check
that points are metres in the camera frame.

All points are in the OpenCV camera frame (x right, y down, z forward), metres.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["Box", "box_surface_points", "check_scene_scale", "points_from_depth", "sample_mesh_points"]


def points_from_depth(depth: torch.Tensor | np.ndarray, K: torch.Tensor | np.ndarray, stride: int = 1,
                      max_depth: float | None = None) -> torch.Tensor:
    """Back-projects a depth map to camera-frame points (metres), one per valid pixel.

    Args:
        depth: (H, W) depth along the optical axis (z), metres; 0, negative or non-finite = no data.
        K: (3, 3) intrinsics of the depth map's pixels (pixel centres at integer coordinates).
        stride: use every ``stride``-th pixel in both directions.
        max_depth: drop points farther than this (metres).

    Returns: (N, 3) float points, x right, y down, z forward.
    """
    depth = torch.as_tensor(depth)
    K = torch.as_tensor(K, dtype=torch.float64)
    if depth.dim() != 2:
        raise ValueError(f"depth must be an (H, W) map in metres, got shape {tuple(depth.shape)}")
    if K.shape != (3, 3):
        raise ValueError(f"K must be a (3, 3) intrinsics matrix, got shape {tuple(K.shape)}")
    dtype = depth.dtype if depth.dtype.is_floating_point else torch.float32
    v, u = torch.meshgrid(torch.arange(0, depth.shape[0], stride), torch.arange(0, depth.shape[1], stride),
                          indexing="ij")
    z = depth[::stride, ::stride].to(torch.float64)
    valid = torch.isfinite(z) & (z > 0)
    if max_depth is not None:
        valid &= z <= max_depth
    z, u, v = z[valid], u[valid].double(), v[valid].double()
    # Full pinhole inverse (skew included).
    y = (v - K[1, 2]) / K[1, 1]
    x = (u - K[0, 2] - K[0, 1] * y) / K[0, 0]
    return torch.stack([x * z, y * z, z], dim=-1).to(dtype)


def _read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    vertices, faces = [], []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            words = line.split()
            if not words:
                continue
            if words[0] == "v":
                vertices.append([float(w) for w in words[1:4]])
            elif words[0] == "f":
                ids = [int(w.split("/")[0]) for w in words[1:]]
                ids = [i - 1 if i > 0 else len(vertices) + i for i in ids]
                faces += [[ids[0], ids[k], ids[k + 1]] for k in range(1, len(ids) - 1)]  # fan
    return np.asarray(vertices, dtype=np.float64).reshape(-1, 3), np.asarray(faces, dtype=np.int64).reshape(-1, 3)


def sample_mesh_points(path: str | Path, spacing: float = 0.02, max_points: int = 2_000_000, seed: int = 0) -> torch.Tensor:
    """Scene points from a mesh file in the camera frame, metres.

    OBJ: the vertices plus area-uniform samples on the triangles, about one per ``spacing``^2 of
    surface (SA-HMR's scenes are 2 cm clouds), at most ``max_points``, deterministic for a seed.
    PLY: its vertices (a scan's vertex cloud; faces are not read)."""
    from meshrec.io.meshes import read_ply_points

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scene mesh {path} does not exist")
    if path.suffix.lower() == ".ply":
        return torch.as_tensor(read_ply_points(path)).float()
    if path.suffix.lower() != ".obj":
        raise ValueError(f"scene mesh {path}: only .obj and .ply are read")
    vertices_np, faces_np = _read_obj(path)
    vertices, faces = torch.as_tensor(vertices_np), torch.as_tensor(faces_np)
    if faces.numel() == 0:
        return vertices.float()
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    areas = torch.linalg.cross(b - a, c - a, dim=-1).norm(dim=-1) / 2
    count = int(min(max_points, max(1, round(float(areas.sum()) / spacing ** 2))))
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.multinomial(areas / areas.sum(), count, replacement=True, generator=generator)
    r1 = torch.rand(count, 1, generator=generator, dtype=torch.float64).sqrt()
    r2 = torch.rand(count, 1, generator=generator, dtype=torch.float64)
    samples = (1 - r1) * a[chosen] + r1 * (1 - r2) * b[chosen] + r1 * r2 * c[chosen]
    return torch.cat([vertices, samples]).float()


def check_scene_scale(points: torch.Tensor) -> None:
    """Raises ValueError for scene points that cannot be metres in a camera frame: empty, not
    (N, 3), non-finite, or about 1000x too large (millimetres) or too small (kilometres)."""
    if points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"the scene must be (N, 3) points in metres, camera frame; got shape {tuple(points.shape)}")
    if points.shape[0] == 0:
        raise ValueError("the scene has no points")
    if not bool(torch.isfinite(points).all()):
        raise ValueError("the scene has NaN or infinite points: drop them (e.g. invalid depth pixels) first")
    # A room or a street seen by a camera spans ~1-50 m and lies within ~100 m: its median distance
    # to the camera is between ~0.3 m and ~100 m. The same scene in millimetres is 1000x farther.
    distance = float(points.double().norm(dim=1).median())
    if distance > 300.0:
        raise ValueError(
            f"the scene's points lie {distance:.0f} units from the camera (median): that looks like millimetres "
            f"(meshrec needs metres); divide the points by 1000"
            if distance < 3e5 else f"the scene's points lie {distance:.3g} units from the camera (median): "
            "meshrec needs metres in the camera frame")
    if distance < 0.05:
        raise ValueError(
            f"the scene's points lie {distance:.2g} units from the camera (median): that looks like kilometres "
            "or a normalised cloud, meshrec needs metres in the camera frame")


@dataclass
class Box:
    """An axis-aligned box in the world frame."""

    centre: tuple[float, float, float]
    size: tuple[float, float, float]

    def signed_distance(self, points: torch.Tensor) -> torch.Tensor:
        """(..., 3) world points -> (...) signed distance, negative inside."""
        half = torch.as_tensor(self.size, dtype=points.dtype) / 2
        offset = (points - torch.as_tensor(self.centre, dtype=points.dtype)).abs() - half
        outside = offset.clamp(min=0).norm(dim=-1)
        inside = offset.amax(dim=-1).clamp(max=0)
        return outside + inside

    def mesh(self, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
        """The box's surface as a triangle mesh: world-frame corners (8, 3) and faces (12, 3),
        two triangles per side, wound counter-clockwise seen from outside."""
        signs = torch.tensor([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)], dtype=dtype)
        vertices = torch.as_tensor(self.centre, dtype=dtype) + signs * torch.as_tensor(self.size, dtype=dtype)
        # Corner index = 4 x_bit + 2 y_bit + z_bit; each side's quad listed counter-clockwise from outside.
        quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
        faces = torch.tensor([tri for a, b, c, d in quads for tri in ((a, b, c), (a, c, d))], dtype=torch.long)
        return vertices, faces


def box_surface_points(box: Box, count: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """(count, 3) points uniformly on the surface of ``box`` (faces chosen by area)."""
    size = torch.as_tensor(box.size, dtype=dtype)
    areas = torch.stack([size[1] * size[2], size[0] * size[2], size[0] * size[1]]).repeat_interleave(2)
    face = torch.multinomial(areas, count, replacement=True, generator=generator)
    uv = torch.rand(count, 3, generator=generator, dtype=dtype) - 0.5
    uv[torch.arange(count), face // 2] = torch.where(face % 2 == 0, -0.5, 0.5).to(dtype)
    return torch.as_tensor(box.centre, dtype=dtype) + uv * size
