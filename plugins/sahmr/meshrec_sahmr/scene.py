"""Scene inputs for SA-HMR: the box frustum crop. (Depth maps and meshes to points, and the unit
check of scene points, are meshrec's: :mod:`meshrec.scene.points`.)

All points are in the OpenCV camera frame (x right, y down, z forward), metres.
"""

from __future__ import annotations

import torch

__all__ = ["frustum_corners", "points_in_frustum", "square_box"]


def square_box(bbox: torch.Tensor, scale: float = 1.15) -> torch.Tensor:
    """SA-HMR's test-time crop square (``squared_crop_and_resize`` without jitter): centred on the
    box (x1, y1, x2, y2), half-side = scale * max(w, h) / 2. Returns (..., 4) [left, up, right, bottom]."""
    centre = (bbox[..., :2] + bbox[..., 2:]) / 2
    half = (bbox[..., 2:] - bbox[..., :2]).amax(dim=-1, keepdim=True) / 2 * scale
    return torch.cat([centre - half, centre + half], dim=-1)


def frustum_corners(bbx_lurb: torch.Tensor, K: torch.Tensor, near: float = 0.5, far: float = 12.5) -> torch.Tensor:
    """(8, 3) corners of the box's frustum between depths ``near`` and ``far`` (SA-HMR's
    ``unproj_bbx_to_fst``): lu, ru, rb, lb at near, then the same at far."""
    uv = bbx_lurb[[0, 2, 2, 0, 0, 2, 2, 0]], bbx_lurb[[1, 1, 3, 3, 1, 1, 3, 3]]
    z = torch.tensor([near] * 4 + [far] * 4, dtype=bbx_lurb.dtype, device=bbx_lurb.device)
    x = (uv[0] - K[0, 2]) / K[0, 0] * z
    y = (uv[1] - K[1, 2]) / K[1, 1] * z
    return torch.stack([x, y, z], dim=-1)


def points_in_frustum(points: torch.Tensor, bbx_lurb: torch.Tensor, K: torch.Tensor, near: float = 0.5,
                      far: float = 12.5) -> torch.Tensor:
    """The points (N, 3) inside the frustum of the box ``bbx_lurb`` (4,) [left, up, right, bottom]
    (full-resolution pixels, K (3, 3)) between depths ``near`` and ``far`` metres, in input order.

    SA-HMR's ``get_pc_in_frustum`` in the camera frame: a point is kept when it lies on the inner
    side of (or on) all six faces."""
    c = frustum_corners(bbx_lurb.to(points.dtype), K.to(points.dtype), near, far)
    origin, a, b = c[[0, 0, 1, 2, 1, 4]], c[[4, 1, 2, 3, 0, 5]], c[[3, 4, 5, 6, 2, 7]]
    normals = torch.linalg.cross(a - origin, b - origin, dim=-1)  # (6, 3), pointing outwards
    inside = (torch.einsum("nfc,fc->nf", points[:, None] - origin, normals) <= 0).all(-1)
    return points[inside]
