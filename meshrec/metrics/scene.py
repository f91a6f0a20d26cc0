"""Body-scene plausibility: penetration and contact with a scene SDF (PROX, SA-HMR), collision
and contact with a scene point cloud (EgoHMR).

Bodies are vertex tensors (..., V, 3) in the scene's frame and units (metres). Results are per
body, with the batch shape. A body (or its scene points) with a NaN or infinite coordinate gets
NaN, never a score: 0 penetration or 0 collisions would read as the best result.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from meshrec.ops.metrics import nearest_points, sample_sdf, winding_number

__all__ = [
    "collision_ratio",
    "contact_distance",
    "contact_fit_error",
    "penetration_error",
    "scene_sdf",
]


def _check_vertices(name: str, value) -> None:
    if not isinstance(value, torch.Tensor) or value.dim() < 2 or value.shape[-1] != 3:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name} must have shape (..., V, 3), got {shape}")
    if value.numel() == 0:
        raise ValueError(f"{name} is empty {tuple(value.shape)}: there is nothing to evaluate")


def scene_sdf(
    vertices: torch.Tensor, sdf: torch.Tensor, grid_min: Sequence[float], grid_max: Sequence[float]
) -> torch.Tensor:
    """(..., V) signed distance of the scene at every vertex (negative inside scene objects),
    trilinear in the grid as PROX and SA-HMR sample it (see :func:`meshrec.ops.sample_sdf`)."""
    _check_vertices("vertices", vertices)
    return sample_sdf(vertices, sdf, grid_min, grid_max)


def penetration_error(
    vertices: torch.Tensor, sdf: torch.Tensor, grid_min: Sequence[float], grid_max: Sequence[float]
) -> torch.Tensor:
    """Scene penetration of a body (SA-HMR's PenE): the sum over vertices of the depth ``-sdf``
    of those inside the scene (``sdf < 0``). (...) per body, summed over vertices (not
    averaged), in the grid's units (metres). Differentiable with respect to the vertices (the
    PROX penetration loss)."""
    values = scene_sdf(vertices, sdf, grid_min, grid_max)
    return _depth(values).sum(-1)


def _depth(values: torch.Tensor) -> torch.Tensor:
    """-sdf where negative, else 0; NaN stays NaN (a NaN vertex must not count as outside)."""
    return torch.where(values >= 0, torch.zeros_like(values), -values)


def _nonfinite(points: torch.Tensor) -> torch.Tensor:
    """(...) True where a (..., N, 3) point set has a NaN or infinite coordinate."""
    return ~torch.isfinite(points).all(-1).all(-1)


def contact_fit_error(
    vertices: torch.Tensor,
    sdf: torch.Tensor,
    grid_min: Sequence[float],
    grid_max: Sequence[float],
    contact: torch.Tensor | None,
) -> torch.Tensor:
    """SA-HMR's ConFE: the penetration depth summed over vertices *not* in contact, plus
    ``|sdf|`` summed over the vertices in contact (they should touch the surface). ``contact``
    is a (..., V) or (V,) boolean per-vertex label (RICH's human-scene contact); None means no
    labels (PROX), where ConFE equals PenE. (...) per body, metres."""
    values = scene_sdf(vertices, sdf, grid_min, grid_max)
    penetration = _depth(values)
    if contact is None:
        return penetration.sum(-1)
    contact = torch.as_tensor(contact, device=values.device).bool()
    if contact.shape != values.shape[-contact.dim():]:
        raise ValueError(f"contact must have shape (V,) or (..., V) matching {tuple(values.shape)}, got {tuple(contact.shape)}")
    return torch.where(contact, values.abs(), penetration).sum(-1)


def contact_distance(vertices: torch.Tensor, scene_points: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """(...) distance from the body to the scene: the minimum over vertices of the distance to
    the nearest scene point (a grid search, exact; see :func:`meshrec.ops.nearest_points`).

    Args:
        vertices: (V, 3) or (B, V, 3).
        scene_points: (P, 3) or (B, P, 3), one cloud for all bodies or one per body.
        squared: return squared distances, as pytorch3d's ``knn_points`` (EgoHMR thresholds
            those; see :mod:`meshrec.metrics.evaluators`).
    """
    _check_vertices("vertices", vertices)
    distance = nearest_points(vertices, scene_points).distance.amin(-1)
    # The nearest-point search skips NaN scene points; the metric must not.
    if isinstance(scene_points, torch.Tensor):
        distance = torch.where(_nonfinite(vertices) | _nonfinite(scene_points), math.nan, distance)
    return distance.square() if squared else distance


def collision_ratio(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    scene_points: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(...) fraction of scene points inside the body mesh (winding number >= 0.5; exact, see
    :func:`meshrec.ops.winding_number`), over all the scene points given (as EgoHMR divides by
    its 20000 cube points).

    Args:
        vertices: (V, 3) or (B, V, 3) closed body meshes sharing ``faces`` (F, 3).
        scene_points: (P, 3) or (B, P, 3).
        mask: optional (P,) or (B, P) scene points to count (denominator: the masked count).
    """
    _check_vertices("vertices", vertices)
    winding = winding_number(scene_points, vertices, faces)
    # NaN winding numbers (NaN scene points, a non-finite body) stay NaN: "not inside" would
    # score such a body as collision-free.
    inside = torch.where(winding.isnan(), winding, (winding >= 0.5).to(winding.dtype))
    if mask is None:
        return inside.mean(-1)
    weights = torch.as_tensor(mask, device=inside.device).to(inside.dtype).expand_as(inside)
    counted = torch.where(weights > 0, inside * weights, torch.zeros_like(inside))
    return counted.sum(-1) / weights.sum(-1)
