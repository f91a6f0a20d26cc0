"""Scene inputs of EgoHMR: the stage-2 cube around the body and the collision score that guides
sampling.

Cube (upstream ``preprocess_scene_s2_for_test.py``, run offline there, at predict time here):
around the stage-1 translation, keep the scene points in a ``size`` x ``size`` horizontal window
(metres, axis-aligned in a frame rotated by ``yaw`` about the vertical), then those at most
``size`` above the lowest kept point, and down-sample uniformly (every k-th point, open3d's
``uniform_down_sample``) to ``num_points``. Upstream works in the scene mesh's gravity-aligned
frame with a random yaw; meshrec's scene points are in the camera frame, so the vertical is an
argument (default: the camera's -y, i.e. up for an upright OpenCV camera, as a head-mounted
HoloLens roughly is) and the yaw defaults to 0 (window sides along the camera's horizontal axes)
so that results are reproducible. Upstream exits when fewer than 20000 points remain; meshrec
keeps what there is and refuses only an empty cube.

Collision score (replaces COAP): for each scene point inside the body mesh (exact winding number,
:func:`meshrec.ops.points_inside_mesh`), its distance to the nearest body vertex
(:func:`meshrec.ops.nearest_points`), summed. It approximates ``sum relu(-sdf_body(p))``, the
VolumetricSMPL score of EgoHMR's 2025 variant (whose guidance weight, 30, is the default here),
with no learned network and no download. COAP's score is instead ``sum relu(occupancy - 0.5)``
of a learned per-part occupancy (values in [0, 0.5] per point, independent of depth), queried for
points in the body's bounding box; the two agree on which points collide (up to COAP's learned
errors) but weigh them differently (depth in metres here, a saturating occupancy there).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from meshrec.ops.metrics import nearest_points, points_inside_mesh

__all__ = ["collision_score", "crop_scene_cube", "GUIDED_JOINT_WEIGHTS"]

# Guidance only moves the lower body: hips (1, 2) with weight 1; knees, ankles, feet (4, 5, 7, 8,
# 10, 11) with weight 2; pelvis, spine and upper body are zeroed (EgoHMR.guide_coll).
GUIDED_JOINT_WEIGHTS = tuple(1.0 if j in (1, 2) else 2.0 if j in (4, 5, 7, 8, 10, 11) else 0.0 for j in range(24))


def _horizontal_basis(up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    up = up / up.norm()
    # first horizontal axis: the camera's x made perpendicular to up (or z if x is vertical)
    seed = torch.tensor([1.0, 0.0, 0.0], dtype=up.dtype, device=up.device)
    if abs(float(seed @ up)) > 0.9:
        seed = torch.tensor([0.0, 0.0, 1.0], dtype=up.dtype, device=up.device)
    first = seed - (seed @ up) * up
    first = first / first.norm()
    return first, torch.linalg.cross(up, first), up


def crop_scene_cube(points: torch.Tensor, centre: torch.Tensor, size: float = 2.0, num_points: int = 20000,
                    up: Sequence[float] | torch.Tensor = (0.0, -1.0, 0.0), yaw: float = 0.0) -> torch.Tensor:
    """EgoHMR's test-time scene cube around a body.

    Args:
        points: (N, 3) scene points, camera frame, metres.
        centre: (3,) the body translation (stage 1's), same frame.
        size: cube side in metres (2).
        num_points: at most this many points are kept (20000).
        up: the vertical (gravity up) in the points' frame; default camera -y.
        yaw: rotation of the window about the vertical, radians (upstream draws it at random).

    Returns:
        (M, 3) points, 1 <= M <= num_points, in the input frame and order.

    Raises:
        ValueError: when no scene point lies in the window (the scene is far from the person).
    """
    if points.dim() != 2 or points.shape[-1] != 3:
        raise ValueError(f"scene points must have shape (N, 3), got {tuple(points.shape)}")
    first, second, vertical = _horizontal_basis(torch.as_tensor(up, dtype=points.dtype, device=points.device))
    relative = points - centre.to(points.dtype)
    a, b = relative @ first, relative @ second
    cos, sin = math.cos(yaw), math.sin(yaw)
    a, b = a * cos - b * sin, a * sin + b * cos
    half = size / 2
    window = (a.abs() <= half) & (b.abs() <= half)
    if not bool(window.any()):
        nearest = float(relative.norm(dim=-1).min()) if len(points) else float("inf")
        raise ValueError(
            f"no scene point lies in the {size:g} m cube around the body translation {centre.tolist()} (the nearest "
            f"scene point is {nearest:.2f} m away): the scene must be in the camera frame, in metres, around the person")
    height = relative @ vertical
    window &= height <= height[window].min() + size
    index = window.nonzero().squeeze(1)
    if len(index) > num_points:
        index = index[:: len(index) // num_points][:num_points]
    return points[index]


def collision_score(vertices: torch.Tensor, faces: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Sum over scene points inside the body of their distance to the nearest body vertex.

    Args:
        vertices: (V, 3) one closed body mesh (metres); gradients flow to it.
        faces: (F, 3) its triangles.
        points: (N, 3) scene points in the same frame.

    Returns:
        () the score in metres (0 when no point is inside). Differentiable with respect to the
        vertices (the inside test and the nearest-vertex choice are held fixed, as both are
        piecewise constant).
    """
    fixed = vertices.detach()
    low, high = fixed.amin(0), fixed.amax(0)
    candidates = points[((points >= low) & (points <= high)).all(-1)]
    if len(candidates) == 0:
        return vertices.sum() * 0
    inside = candidates[points_inside_mesh(candidates, fixed, faces)]
    if len(inside) == 0:
        return vertices.sum() * 0
    nearest = nearest_points(inside, fixed).index
    return (inside - vertices[nearest]).norm(dim=-1).sum()
