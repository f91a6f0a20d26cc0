"""Sparse convolution on SparseTensors and the transfers between points and voxels.

Positions are float (N, 3) in voxel units (metres divided by the voxel size); a point p lies in
the voxel floor(p). Batches of point clouds carry a (N,) integer batch index per point.
"""

from __future__ import annotations

import math

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from meshrec.ops import sparse as ops
from meshrec.ops.reference.sparse import BATCH_MAX, COORD_MAX, COORD_MIN
from meshrec.scene.tensor import KernelMap, SparseTensor

__all__ = [
    "Voxelization",
    "devoxelize",
    "points_to_voxels",
    "sparse_conv3d",
    "trilinear_taps",
    "voxel_indices",
    "voxelize",
]


# ---- convolution -----------------------------------------------------------------------------


def sparse_conv3d(
    input: SparseTensor,
    weight: torch.Tensor,
    kernel_size: int | Sequence[int] = 3,
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
    transposed: bool = False,
    bias: torch.Tensor | None = None,
    *,
    rounding: str = "floor",
    hash_capacity: int | None = None,
) -> SparseTensor:
    """A sparse 3D convolution (cross-correlation, as torch's conv3d) with torchsparse 1.4 semantics.

    - stride 1: submanifold, the output voxels are the input voxels.
    - stride s > 1: the output voxels are the input ones coarsened to the grid of spacing
      s * tensor stride (``unique_coords``), sorted by (batch, x, y, z); output voxel u reads the
      input at u + offset_k * tensor_stride * dilation.
    - transposed: the inverse of a strided convolution. It reuses that convolution's map (from
      this tensor's cache) and outputs exactly its input voxels, in their row order.
    - a 1x1x1 kernel with stride 1 is a matrix product of the features.

    Args:
        input: the SparseTensor.
        weight: (K, C_in, C_out) with K the kernel volume in :func:`meshrec.ops.kernel_offsets`
            order, or (C_in, C_out) for a 1x1x1 kernel.
        rounding: how coordinates are divided when downsampling: "floor" (default) or "trunc"
            (torchsparse 1.4 under PyTorch < 1.13, what SA-HMR's weights were trained with).
        hash_capacity: hash-table slots for building maps; None for automatic.
    """
    kernel_size = ops.triple(kernel_size, "kernel_size")
    stride = ops.triple(stride, "stride")
    dilation = ops.triple(dilation, "dilation")
    if rounding not in ops.ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {ops.ROUNDING_MODES}, got {rounding!r}")
    volume = kernel_size[0] * kernel_size[1] * kernel_size[2]
    if weight.dim() == 2 and volume == 1:
        weight = weight.unsqueeze(0)
    if weight.dim() != 3 or weight.shape[0] != volume or weight.shape[1] != input.num_channels:
        raise ValueError(
            f"weight must have shape (K={volume}, C_in={input.num_channels}, C_out) for kernel size {kernel_size}"
            f"{' (or (C_in, C_out))' if volume == 1 else ''}, got {tuple(weight.shape)}"
        )
    cache = input.cache
    if volume == 1 and stride == (1, 1, 1):
        feats = input.feats @ weight[0]
        out_coords, out_stride = input.coords, input.stride
    elif not transposed:
        out_stride = tuple(a * b for a, b in zip(input.stride, stride))
        key = _map_key(input.stride, kernel_size, stride, dilation, rounding)
        kmap = cache.kernel_maps.get(key)
        if kmap is None:
            if stride == (1, 1, 1):
                out_coords = input.coords
            else:
                out_coords = _coarse_coords(input, out_stride, rounding, hash_capacity)
            offsets = ops.kernel_offsets(kernel_size, input.stride, dilation, device=input.device)
            neighbors = ops.kernel_map(input.coords, out_coords, offsets, hash_capacity=hash_capacity)
            reverse = ops.invert_kernel_map(neighbors, len(input))
            kmap = KernelMap(neighbors, reverse, input.coords, out_coords)
            cache.kernel_maps[key] = kmap
        feats = ops.sparse_conv(input.feats, weight, kmap.neighbors, kmap.reverse)
        out_coords = kmap.out_coords
    else:
        if any(a % b for a, b in zip(input.stride, stride)):
            raise ValueError(f"a transposed convolution with stride {stride} cannot undo tensor stride {input.stride}")
        out_stride = tuple(a // b for a, b in zip(input.stride, stride))
        kmap = cache.kernel_maps.get(_map_key(out_stride, kernel_size, stride, dilation, rounding))
        if kmap is None:
            raise ValueError(
                f"a transposed convolution (kernel {kernel_size}, stride {stride}) at tensor stride {input.stride} "
                f"reuses the map of the matching downsampling convolution from stride {out_stride} with "
                f"rounding={rounding!r}, and this tensor's cache has none: apply that strided convolution "
                "earlier in the same pass (on an ancestor of this tensor)"
            )
        if kmap.out_coords.shape[0] != len(input):
            raise ValueError(
                f"the input has {len(input)} voxels but the downsampling map it reuses produced {kmap.out_coords.shape[0]}"
            )
        feats = ops.sparse_conv(input.feats, weight, kmap.reverse, kmap.neighbors)
        out_coords = kmap.in_coords
    if bias is not None:
        feats = feats + bias
    return SparseTensor(feats, out_coords, out_stride, cache=cache)


def _map_key(in_stride, kernel_size, stride, dilation, rounding: str) -> tuple:
    # Rounding only shapes strided maps; stride-1 layers share one map whatever they say.
    return (in_stride, kernel_size, stride, dilation, rounding if stride != (1, 1, 1) else None)


def _coarse_coords(input: SparseTensor, out_stride, rounding: str, hash_capacity: int | None) -> torch.Tensor:
    cache = input.cache
    made_with = cache.rounding.get(out_stride)
    if out_stride in cache.coords and made_with in (None, rounding):
        return cache.coords[out_stride]
    if made_with is not None:
        raise ValueError(
            f"this pass already made its stride-{out_stride} voxels with rounding={made_with!r}; every strided "
            f"convolution to that stride must use the same rounding (got {rounding!r})"
        )
    coarse, _ = ops.unique_coords(input.coords, out_stride, rounding=rounding, hash_capacity=hash_capacity)
    cache.coords[out_stride] = coarse
    cache.rounding[out_stride] = rounding
    return coarse


# ---- points -> voxels ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Voxelization:
    """What :func:`voxelize` returns: the voxels and, per point, the row of its voxel."""

    tensor: SparseTensor
    point_to_voxel: torch.Tensor


def _check_points(points: torch.Tensor, batch: torch.Tensor | None) -> torch.Tensor:
    if not isinstance(points, torch.Tensor) or not points.dtype.is_floating_point:
        raise TypeError(f"points must be a float tensor of shape (N, 3), got {getattr(points, 'dtype', type(points))}")
    if points.dtype not in (torch.float32, torch.float64):
        # float16 / bfloat16 cannot even represent voxel indices above 2048 / 256 exactly.
        raise TypeError(f"points must be float32 or float64, got {points.dtype}; convert them with points.float()")
    if points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {tuple(points.shape)}")
    if batch is None:
        return torch.zeros(points.shape[0], dtype=torch.int32, device=points.device)
    if not isinstance(batch, torch.Tensor) or batch.dtype.is_floating_point or batch.dtype == torch.bool:
        raise TypeError(f"batch must be an integer tensor of shape (N,), got {getattr(batch, 'dtype', type(batch))}")
    if batch.shape != (points.shape[0],):
        raise ValueError(
            f"batch must have one index per point: shape ({points.shape[0]},), got {tuple(batch.shape)}"
        )
    if batch.device != points.device:
        raise ValueError(f"batch ({batch.device}) and points ({points.device}) must be on the same device")
    if batch.numel() and not torch.compiler.is_compiling():
        low, high = int(batch.min()), int(batch.max())
        if low < 0 or high > BATCH_MAX:
            raise ValueError(f"batch indices must lie in [0, {BATCH_MAX}], got [{low}, {high}]")
    return batch.to(torch.int32)


def _check_voxel_size(voxel_size, points: torch.Tensor) -> float:
    """voxel_size as a float: positive, finite, and large enough that points / voxel_size stays
    finite (1e-300 would overflow every coordinate into infinity and be reported as bad points)."""
    if isinstance(voxel_size, bool) or not isinstance(voxel_size, (int, float)) and not (
            isinstance(voxel_size, torch.Tensor) and voxel_size.numel() == 1):
        raise TypeError(f"voxel_size must be a number (the voxel edge, in the units of points), got {voxel_size!r}")
    size = float(voxel_size)
    if not (size > 0 and math.isfinite(size)):
        raise ValueError(f"voxel_size must be a positive finite number (the voxel edge, in the units of points), "
                         f"got {voxel_size}")
    if points.numel() and not torch.compiler.is_compiling():
        if not bool(torch.isfinite(points).all()):
            raise ValueError("points must be finite (found NaN or infinity)")
        extent = float(points.abs().max())
        # Far beyond the coordinate range (or overflowing): the voxel size is the problem, not the
        # points; nearer misses get _voxel_coords's exact range message.
        if not extent / size <= 2 * max(-COORD_MIN, COORD_MAX):
            raise ValueError(f"voxel_size {size:g} is too small for points up to {extent:g} from the origin: voxel "
                             f"indices must lie in [{COORD_MIN}, {COORD_MAX}]; use a coarser voxel size (a larger voxel_size)")
    return size


def _voxel_coords(cells: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """(N, 3) float cell indices (already floored) + batch -> (N, 4) int32, range-checked."""
    if cells.numel() and not torch.compiler.is_compiling():
        if not bool(torch.isfinite(cells).all()):
            raise ValueError("points must be finite (found NaN or infinity)")
        low, high = float(cells.min()), float(cells.max())
        if low < COORD_MIN or high > COORD_MAX:
            raise ValueError(
                f"voxel coordinates span [{low:.0f}, {high:.0f}], outside [{COORD_MIN}, {COORD_MAX}]: use a coarser "
                "voxel size or move the points near the origin"
            )
    return torch.cat([batch[:, None], cells.to(torch.int32)], dim=1)


def voxelize(
    points: torch.Tensor,
    features: torch.Tensor | None = None,
    *,
    voxel_size: float = 1.0,
    batch: torch.Tensor | None = None,
    reduction: str = "mean",
    hash_capacity: int | None = None,
) -> Voxelization:
    """Quantises points into voxels of ``voxel_size`` and pools their features per voxel.

    Args:
        points: (N, 3) float positions (e.g. metres); point p lies in voxel floor(p / voxel_size).
            Negative positions are fine (floor, not truncation).
        features: (N, C) float point features, or None for none (C = 0).
        voxel_size: the edge length of a voxel, in the units of points.
        batch: (N,) integer batch index per point in [0, 4095]; None for a single cloud.
        reduction: "mean" (average the features of a voxel's points) or "first" (keep the first
            point's, by row order).
        hash_capacity: hash-table slots; None for automatic.

    Returns:
        Voxelization(tensor, point_to_voxel): a stride-1 SparseTensor whose voxels are sorted by
        (batch, x, y, z) whatever the point order, and the (N,) int64 voxel row of each point.
        Deterministic: the same points give bitwise-identical results.
    """
    batch = _check_points(points, batch)
    voxel_size = _check_voxel_size(voxel_size, points)
    if features is None:
        features = points.new_zeros(points.shape[0], 0)
    if features.dim() != 2 or features.shape[0] != points.shape[0]:
        raise ValueError(f"features must have shape (N={points.shape[0]}, C), got {tuple(features.shape)}")
    coords = _voxel_coords(torch.floor(points / voxel_size), batch)
    unique, point_to_voxel = ops.unique_coords(coords, hash_capacity=hash_capacity)
    feats = ops.voxel_pool(features, point_to_voxel, unique.shape[0], reduction)
    return Voxelization(SparseTensor(feats, unique), point_to_voxel)


# ---- voxels <-> points at a tensor's stride -----------------------------------------------------


def voxel_indices(
    tensor: SparseTensor,
    points: torch.Tensor,
    batch: torch.Tensor | None = None,
    *,
    hash_capacity: int | None = None,
) -> torch.Tensor:
    """(N,) int64: the row of ``tensor`` holding each point's voxel at the tensor's stride s, i.e.
    the voxel floor(p / s) * s, or -1 where the tensor has none. points are in voxel units."""
    batch = _check_points(points, batch)
    stride = torch.tensor(tensor.stride, dtype=points.dtype, device=points.device)
    base = _voxel_coords(torch.floor(points / stride) * stride, batch)
    origin = torch.zeros(1, 3, dtype=torch.int32, device=points.device)
    rows = ops.kernel_map(tensor.coords, base, origin, hash_capacity=hash_capacity)
    return rows[:, 0].long()


def points_to_voxels(
    tensor: SparseTensor,
    points: torch.Tensor,
    features: torch.Tensor,
    batch: torch.Tensor | None = None,
    *,
    point_to_voxel: torch.Tensor | None = None,
    hash_capacity: int | None = None,
) -> SparseTensor:
    """SPVCNN's point-to-voxel step: the mean of the point features in each voxel of ``tensor``
    (at its stride), as a SparseTensor on the same voxels (and cache). Voxels without points get
    zeros; points outside every voxel are dropped. Pass ``point_to_voxel`` (from
    :func:`voxel_indices`) to skip the lookup."""
    if point_to_voxel is None:
        point_to_voxel = voxel_indices(tensor, points, batch, hash_capacity=hash_capacity)
    feats = ops.voxel_pool(features, point_to_voxel, len(tensor), "mean")
    return tensor.replace_feats(feats)


# Corners of a point's cell, in torchsparse's 2x2x2 order (k = 4 dx + 2 dy + dz).
_CORNERS = [(dx, dy, dz) for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)]


def trilinear_taps(
    tensor: SparseTensor,
    points: torch.Tensor,
    batch: torch.Tensor | None = None,
    *,
    hash_capacity: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 voxels around each point at the tensor's stride s and their trilinear weights, as
    SPVCNN's devoxelisation uses them (torchsparse's calc_ti_weights).

    The cell of p spans floor(p / s) * s to that + s; its corners are looked up in ``tensor``.
    Missing corners get weight 0 and the weights are renormalised to sum to 1 (dividing by
    their sum + 1e-8, as torchsparse does), so a point near a surface is not darkened by empty space.

    Returns:
        (indices (N, 8) int32 with -1 for missing corners, weights (N, 8) in the dtype of points),
        corners in the order k = 4 dx + 2 dy + dz. The weights are differentiable in points.
    """
    batch = _check_points(points, batch)
    s = torch.tensor(tensor.stride, dtype=points.dtype, device=points.device)
    low = torch.floor(points / s) * s
    base = _voxel_coords(low, batch)
    offsets = ops.kernel_offsets(2, tensor.stride, device=points.device)
    indices = ops.kernel_map(tensor.coords, base, offsets, hash_capacity=hash_capacity)
    to_low, to_high = points - low, low + s - points  # (x - x_floor), (x_ceil - x)
    weights = torch.stack(
        [
            (to_low[:, 0] if dx else to_high[:, 0]) * (to_low[:, 1] if dy else to_high[:, 1]) * (to_low[:, 2] if dz else to_high[:, 2])
            for dx, dy, dz in _CORNERS
        ],
        dim=1,
    ) / (s[0] * s[1] * s[2])
    weights = torch.where(indices >= 0, weights, 0)
    weights = weights / (weights.sum(dim=1, keepdim=True) + 1e-8)
    return indices, weights


def devoxelize(
    tensor: SparseTensor,
    points: torch.Tensor,
    batch: torch.Tensor | None = None,
    *,
    taps: tuple[torch.Tensor, torch.Tensor] | None = None,
    hash_capacity: int | None = None,
) -> torch.Tensor:
    """(N, C) point features interpolated trilinearly from ``tensor`` (SPVCNN's voxel-to-point
    step; see :func:`trilinear_taps`, whose result ``taps`` can be passed to skip the lookup)."""
    indices, weights = taps if taps is not None else trilinear_taps(tensor, points, batch, hash_capacity=hash_capacity)
    return ops.devoxelize(tensor.feats, indices, weights.to(tensor.dtype))
