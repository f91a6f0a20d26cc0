"""Metric ops: batched similarity Procrustes, SDF sampling, inside-mesh tests, nearest points.

These are the kernels behind :mod:`meshrec.metrics`; they work in the units of their inputs
(metres inside meshrec) and never synchronise with the host, except where noted.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch

from meshrec.extension import use_compiled
from meshrec.ops import reference

__all__ = [
    "NearestPoints",
    "ProcrustesResult",
    "check_closed_mesh",
    "nearest_points",
    "points_inside_mesh",
    "procrustes",
    "sample_sdf",
    "winding_number",
]

_FLOATING = (torch.float32, torch.float64)


def _check_tensor(name: str, value, layout: str, last: int | None = 3, min_dim: int = 1) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in _FLOATING:
        raise TypeError(f"{name} must be float32 or float64, got {value.dtype}")
    if value.dim() < min_dim or (last is not None and value.shape[-1] != last):
        raise ValueError(f"{name} must have shape {layout}, got {tuple(value.shape)}")


def _check_same(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.dtype != b.dtype:
        raise TypeError(f"{name_a} ({a.dtype}) and {name_b} ({b.dtype}) must have the same dtype")
    if a.device != b.device:
        raise ValueError(f"{name_a} ({a.device}) and {name_b} ({b.device}) must be on the same device")


class ProcrustesResult(NamedTuple):
    """Output of :func:`procrustes`: ``aligned = scale * source @ rotation.T + translation``
    and ``residual = |aligned - target|`` per point (the per-joint PA errors)."""

    aligned: torch.Tensor      # (..., N, 3)
    scale: torch.Tensor        # (...)
    rotation: torch.Tensor     # (..., 3, 3), det = +1, acts on column vectors
    translation: torch.Tensor  # (..., 3)
    residual: torch.Tensor     # (..., N)


def procrustes(
    source: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    scaling: bool = True,
) -> ProcrustesResult:
    """Aligns ``source`` onto ``target`` with the best similarity transform, per point set.

    Minimises ``sum_i w_i |s R x_i + t - y_i|^2`` over a scale ``s >= 0``, a rotation ``R``
    (det +1: the reflection fix of SPIN / mmhuman3d's ``compute_similarity_transform``) and a
    translation ``t``, independently for every point set of the batch. With ``weights=None``
    it is exactly that numpy function (agreement to ~1e-13 in float64), batched.

    Args:
        source: (..., N, 3) float32 or float64, the points to move (the prediction).
        target: (..., N, 3), same shape, dtype and device (the ground truth).
        weights: optional (..., N) non-negative weights; a 0/1 mask selects the points the
            transform is fitted to (all points are still moved). Differentiable.
        scaling: fit the scale (similarity); ``False`` fits a rigid transform (``s = 1``).

    Returns:
        :class:`ProcrustesResult` (aligned points, scale, rotation, translation, and the
        per-point residual distances to the target, computed in the same kernel), in the dtype
        and on the device of ``source``. Units: those of the inputs.

    Degenerate point sets never produce NaN; invalid inputs make their own sample NaN (all
    outputs), never a plausible-looking transform:

    - NaN or infinite points, or a negative, NaN or infinite weight: NaN for that sample;
    - all weights zero: the identity transform (``s = 1, R = I, t = 0``), points unchanged;
    - source points all equal (within 1e-13 of their magnitude): ``s = 0``, so every point
      maps onto the target centroid (numpy's loop divides 0 by 0 there);
    - target points all equal, or a cross-covariance below rounding of the sets' spreads:
      ``R = I``;
    - collinear points: the rotation about their line is undetermined; the aligned points
      are unique and agree with numpy, ``rotation`` is one valid choice (sets within 1e-12
      of a line count as collinear).

    ``s >= 0`` always. Ill-conditioned sets take a robust path inside the same kernel: sets
    whose spread is under 1% of their distance from the origin are centred with a residual-
    mean correction (accurate to rounding of the spread, down to spreads of 1e-9 of the offset
    and below), and nearly collinear sets (a nearly double top eigenvalue) get their rotation
    from a Jacobi eigen-decomposition, backward stable like an SVD. Aligned points are computed
    as ``s R (x - mean_x) + mean_y``.

    Differentiable once with respect to ``source``, ``target`` and ``weights`` (the exact
    derivative of the optimum; components along undetermined rotation directions, as for
    collinear points, are zero instead of NaN). Internally double precision. Runs as one
    kernel without host synchronisation (a closed-form 4x4 eigen-solve per sample, Horn's
    quaternion method), unlike ``torch.linalg.svd``, which synchronises on CUDA.
    """
    _check_tensor("source", source, "(..., N, 3)", min_dim=2)
    _check_tensor("target", target, "(..., N, 3)", min_dim=2)
    _check_same("source", source, "target", target)
    if source.shape != target.shape:
        raise ValueError(f"source {tuple(source.shape)} and target {tuple(target.shape)} must have the same shape")
    if weights is not None:
        if not isinstance(weights, torch.Tensor):
            raise TypeError(f"weights must be a torch.Tensor or None, got {type(weights).__name__}")
        weights = weights.to(source.dtype) if weights.dtype == torch.bool else weights
        _check_same("source", source, "weights", weights)
        if weights.shape != source.shape[:-1]:
            raise ValueError(f"weights must have shape (..., N) = {tuple(source.shape[:-1])}, got {tuple(weights.shape)}")
    if use_compiled(source):
        return ProcrustesResult(*torch.ops.meshrec.procrustes(source, target, weights, scaling))
    return ProcrustesResult(*reference.procrustes(source, target, weights, scaling))


def sample_sdf(
    points: torch.Tensor,
    sdf: torch.Tensor,
    grid_min: Sequence[float],
    grid_max: Sequence[float],
) -> torch.Tensor:
    """Trilinear samples of a dense signed-distance grid at points (PROX / SA-HMR convention).

    ``sdf[ix, iy, iz]`` is the signed distance at ``grid_min + (ix, iy, iz) * (grid_max -
    grid_min) / (dims - 1)``: the first and last samples lie on ``grid_min`` and ``grid_max``
    (``F.grid_sample(sdf[None, None], normalised[..., [2, 1, 0]], align_corners=True,
    padding_mode="border")`` as SA-HMR calls it). Points outside the box take the value at
    the nearest point of the box.

    Args:
        points: (..., 3) float32 or float64, in the grid's units (metres).
        sdf: (X, Y, Z) grid with at least 2 samples per axis, negative inside objects; cast
            to the dtype of ``points`` if it differs (a copy).
        grid_min, grid_max: 3 floats each, the box the samples span (SA-HMR's json
            ``min`` / ``max``).

    Returns:
        (...) signed distances, dtype of ``points``. Differentiable with respect to the points
        (zero along an axis where the point is clamped onto the box); the grid must not
        require grad (``meshrec.ops.reference.sample_sdf`` also differentiates the grid).
    """
    _check_tensor("points", points, "(..., 3)")
    if not isinstance(sdf, torch.Tensor) or sdf.dim() != 3 or min(sdf.shape) < 2:
        shape = tuple(sdf.shape) if isinstance(sdf, torch.Tensor) else type(sdf).__name__
        raise ValueError(f"sdf must be a 3-D grid (X, Y, Z) with at least 2 samples per axis, got {shape}")
    if sdf.device != points.device:
        raise ValueError(f"points ({points.device}) and sdf ({sdf.device}) must be on the same device")
    grid_min = [float(v) for v in grid_min]
    grid_max = [float(v) for v in grid_max]
    if len(grid_min) != 3 or len(grid_max) != 3 or not all(hi > lo for lo, hi in zip(grid_min, grid_max)):
        raise ValueError(f"grid_min and grid_max must be 3 values each with grid_max > grid_min, got {grid_min}, {grid_max}")
    if sdf.dtype != points.dtype:
        sdf = sdf.to(points.dtype)
    if use_compiled(points):
        if sdf.requires_grad:
            raise ValueError(
                "sample_sdf differentiates with respect to the points only; detach the sdf grid, or use "
                "meshrec.ops.reference.sample_sdf for gradients with respect to the grid"
            )
        return torch.ops.meshrec.sample_sdf(points, sdf, grid_min, grid_max)
    return reference.sample_sdf(points, sdf, grid_min, grid_max)


def _mesh_batch(name: str, value: torch.Tensor, layout: str) -> tuple[torch.Tensor, bool]:
    _check_tensor(name, value, layout, min_dim=2)
    if value.dim() not in (2, 3):
        raise ValueError(f"{name} must have shape {layout}, got {tuple(value.shape)}")
    return (value[None], True) if value.dim() == 2 else (value, False)


def check_closed_mesh(faces: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """Validates triangle indices and closedness; returns the faces as contiguous int64.

    Raises ValueError when a face indexes outside ``[0, num_vertices)``, or when the mesh is
    not closed and consistently oriented (every directed edge ``(a, b)`` must occur once, and
    its reverse ``(b, a)`` once). SMPL, SMPL-H and meshrec's synthetic bodies pass. Reads the
    faces on the host (a synchronisation for CUDA tensors).
    """
    if not isinstance(faces, torch.Tensor) or faces.dim() != 2 or faces.shape[-1] != 3:
        shape = tuple(faces.shape) if isinstance(faces, torch.Tensor) else type(faces).__name__
        raise ValueError(f"faces must have shape (F, 3), got {shape}")
    if faces.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"faces must be int32 or int64, got {faces.dtype}")
    # numpy on the host: a few sorts of 3F keys (torch's threaded sort is slower at this size).
    host = faces.detach().to("cpu", torch.int64).numpy()
    if host.size and (host.min() < 0 or host.max() >= num_vertices):
        raise ValueError(
            f"faces must index vertices in [0, {num_vertices}), found indices in [{host.min()}, {host.max()}]"
        )
    edges = np.concatenate([host[:, [0, 1]], host[:, [1, 2]], host[:, [2, 0]]])
    keys = np.sort(edges[:, 0] * num_vertices + edges[:, 1])
    if (keys[1:] == keys[:-1]).any():
        raise ValueError("faces are not consistently oriented: a directed edge occurs in two faces")
    # Closed and consistently oriented: the reversed edges are the same set as the edges.
    if not np.array_equal(keys, np.sort(edges[:, 1] * num_vertices + edges[:, 0])):
        raise ValueError(
            "faces do not form a closed mesh: some edges have no opposite edge; inside tests need a "
            "watertight, consistently oriented mesh (as SMPL's)"
        )
    return faces.to(torch.int64).contiguous()


def winding_number(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Winding numbers of points with respect to closed triangle meshes.

    For a closed, outward-oriented mesh: 0 outside, 1 inside, k inside k overlapping parts
    (meshrec's synthetic bodies are unions of overlapping closed parts; so are posed SMPL
    bodies where limbs interpenetrate). Exact (integer arithmetic on a 2^29 lattice, ties by
    simulation of simplicity) for every point not within rounding of the surface. The compiled
    kernels count signed crossings of an upward ray, with a uniform grid over the faces; the
    reference sums solid angles (the generalised winding number), which agrees on closed
    meshes. Not differentiable (piecewise constant).

    Args:
        points: (P, 3) or (B, P, 3) float32/float64 query points (one set for all meshes, or
            one per mesh).
        vertices: (V, 3) or (B, V, 3), same dtype and device.
        faces: (F, 3) int32/int64 vertex indices, shared by the batch; checked to be in range
            and to form a closed, consistently oriented mesh (:func:`check_closed_mesh`).

    Returns:
        (P,) or (B, P) winding numbers, dtype of ``vertices``: NaN for NaN points, and for
        every point of a mesh with a NaN or infinite vertex (such a mesh has no inside; 0 would
        read as "outside", the best score of a collision metric).
    """
    vertices_batched, single = _mesh_batch("vertices", vertices, "(V, 3) or (B, V, 3)")
    points_batched, single_points = _mesh_batch("points", points, "(P, 3) or (B, P, 3)")
    _check_same("points", points, "vertices", vertices)
    if points_batched.shape[0] not in (1, vertices_batched.shape[0]):
        raise ValueError(
            f"points (batch {points_batched.shape[0]}) must be one set or one per mesh (batch {vertices_batched.shape[0]})"
        )
    faces = check_closed_mesh(faces, vertices_batched.shape[1]).to(vertices.device)
    points_batched, vertices_batched = points_batched.detach(), vertices_batched.detach()
    if use_compiled(vertices):
        winding = torch.ops.meshrec.winding_number(points_batched, vertices_batched, faces)
    else:
        winding = reference.winding_number(points_batched, vertices_batched, faces)
    return winding[0] if single and single_points else winding


def points_inside_mesh(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Boolean (P,) or (B, P): whether each point is inside the closed mesh, i.e. its
    :func:`winding_number` is at least 0.5 (so overlapping parts count once). A NaN winding
    number (NaN point or non-finite mesh) reads False here: metrics that must not score such
    input as "outside" use :func:`winding_number` (as :func:`meshrec.metrics.collision_ratio`)."""
    return winding_number(points, vertices, faces) >= 0.5


class NearestPoints(NamedTuple):
    """Output of :func:`nearest_points`."""

    distance: torch.Tensor  # (..., Q) Euclidean distance (not squared)
    index: torch.Tensor     # (..., Q) int64 index into the points, -1 for an empty cloud


def nearest_points(queries: torch.Tensor, points: torch.Tensor) -> NearestPoints:
    """For each query point, the nearest point of a cloud and its distance.

    Exact (ties go to the smaller index). The compiled kernels sort the cloud into a uniform
    grid (memory linear in the points: a million-point scene takes tens of MB) and search
    outward in rings from each query; the reference is brute force in bounded chunks.

    Args:
        queries: (Q, 3) or (B, Q, 3) float32/float64 (e.g. body vertices).
        points: (P, 3) or (B, P, 3), same dtype and device (one cloud for all, or one per
            batch element). An empty cloud gives distance inf and index -1.

    Returns:
        :class:`NearestPoints` (distance, index), shaped like the queries without their last
        axis. ``distance`` is differentiable with respect to both queries and points (through
        the chosen pairs; the index is piecewise constant). Units: those of the inputs.
    """
    queries_batched, single = _mesh_batch("queries", queries, "(Q, 3) or (B, Q, 3)")
    points_batched, single_points = _mesh_batch("points", points, "(P, 3) or (B, P, 3)")
    _check_same("queries", queries, "points", points)
    if points_batched.shape[0] not in (1, queries_batched.shape[0]):
        raise ValueError(
            f"points (batch {points_batched.shape[0]}) must be one cloud or one per query set (batch {queries_batched.shape[0]})"
        )
    if use_compiled(queries):
        distance, index = torch.ops.meshrec.nearest_points(queries_batched.detach(), points_batched.detach())
    else:
        distance, index = reference.nearest_points(queries_batched.detach(), points_batched.detach())
    if (queries.requires_grad or points.requires_grad) and torch.is_grad_enabled() and points_batched.shape[1]:
        # Recompute the distance through the chosen pairs so autograd sees both inputs.
        expanded = points_batched.expand(queries_batched.shape[0], -1, -1)
        found = index.clamp_min(0)
        nearest = torch.gather(expanded, 1, found[..., None].expand(-1, -1, 3))
        distance = torch.where(index >= 0, torch.linalg.vector_norm(queries_batched - nearest, dim=-1), distance)
    if single and single_points:
        return NearestPoints(distance[0], index[0])
    return NearestPoints(distance, index)
