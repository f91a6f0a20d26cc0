"""Camera conventions shared by methods: default intrinsics, weak perspective, projection.

Frames: the camera frame is x right, y down, z forward (OpenCV), metres. Pixel coordinates have
their origin at the top-left corner of the top-left pixel's centre, as OpenCV's.

Weak perspective (HMR, SPIN and their descendants): a crop-space camera (s, tx, ty) maps a
body point X to normalised crop coordinates ``s * (X_xy + t)``, where [-1, 1] spans the crop
side b (pixels). The same image is produced, to first order, by a perspective camera of focal
length f (pixels) with translation

    t_z = 2 f / (b s),    t_x' = t_x + 2 (c_x - p_x) / (b s),    t_y' = t_y + 2 (c_y - p_y) / (b s)

where (c_x, c_y) is the crop centre and (p_x, p_y) the principal point in the full image: the
depth makes f / t_z equal the crop's scale s b / 2, and the offsets move the crop centre's ray
to the principal point. With b = 224 and f = 5000 this is the crop camera HMR was trained with
(t_z = 2 * 5000 / (224 s)).
"""

from __future__ import annotations

import math

import torch

__all__ = ["default_intrinsics", "project", "weak_perspective_to_translation"]


def default_intrinsics(height: int, width: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Intrinsics used when none are given: focal length = image diagonal in pixels (a 53 degree
    diagonal field of view, CLIFF's convention), principal point at the image centre. (3, 3)."""
    focal = math.hypot(height, width)
    return torch.tensor([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]], dtype=dtype)


def weak_perspective_to_translation(
    camera: torch.Tensor, box_centre: torch.Tensor, box_size: torch.Tensor, intrinsics: torch.Tensor
) -> torch.Tensor:
    """Camera-frame translation equivalent to a crop's weak-perspective camera (formula above).

    Args:
        camera: (..., 3) weak-perspective (s, tx, ty) in normalised crop units.
        box_centre: (..., 2) crop centre in full-image pixels.
        box_size: (...,) crop side in full-image pixels.
        intrinsics: (3, 3) or (..., 3, 3) full-image intrinsics K (pixels).

    Returns:
        (..., 3) translation in metres to add to the body model's output.
    """
    scale, offset = camera[..., 0], camera[..., 1:]
    focal = intrinsics[..., 0, 0] if intrinsics.dim() > 2 else intrinsics[0, 0]
    principal = intrinsics[..., :2, 2] if intrinsics.dim() > 2 else intrinsics[:2, 2]
    # Guard against a degenerate (zero or negative) predicted scale: the body is put far away
    # rather than producing inf/NaN.
    denominator = (box_size * scale).clamp(min=1e-9)
    depth = 2.0 * focal / denominator
    xy = offset + 2.0 * (box_centre - principal) / denominator.unsqueeze(-1)
    return torch.cat([xy, depth.unsqueeze(-1)], dim=-1)


def project(points: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Pinhole projection of camera-frame points (..., N, 3) with K (3, 3) -> pixels (..., N, 2)."""
    projected = points @ intrinsics.transpose(-1, -2)
    return projected[..., :2] / projected[..., 2:]
