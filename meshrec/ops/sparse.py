"""Sparse-voxel ops: unique voxels, kernel maps, sparse convolution, point <-> voxel transfer.

Conventions (torchsparse 1.4's, so that its checkpoints load unchanged):

- Coordinates are int32 tensors (N, 4) with columns (batch, x, y, z), batch first. x, y, z are
  in full-resolution voxel units: a tensor at stride s holds multiples of s. Coordinates may be
  negative; the kernels pack a row into a 63-bit key, which bounds batch to [0, 4095] and x, y, z
  to [-65536, 65535] (out-of-range rows raise).
- Ops that create voxels return them sorted by (batch, x, y, z), so results do not depend on the
  input order and every batch element is one contiguous block.
- A kernel map (a "neighbor table") is an int32 tensor (N_out, K): the input row that output row r
  reads at kernel offset k, or -1. Offsets come from :func:`kernel_offsets`.
- Convolution weights are (K, C_in, C_out); output r = sum_k input[neighbors[r, k]] @ weight[k].
- ``hash_capacity`` is the number of slots of the hash table the kernels build (rounded up to a
  power of two); None picks twice the number of keys. It must exceed the number of keys stored.

Every op dispatches to the compiled kernels (``torch.ops.meshrec.sparse_*``) when they are loaded
and to :mod:`meshrec.ops.reference.sparse` otherwise. The compiled CPU ops are deterministic
(bitwise identical results across runs and thread counts) and use no atomics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from meshrec.extension import use_compiled
from meshrec.ops.reference import sparse as reference

__all__ = [
    "devoxelize",
    "invert_kernel_map",
    "kernel_map",
    "kernel_offsets",
    "sparse_conv",
    "unique_coords",
    "voxel_pool",
]

ROUNDING_MODES = ("floor", "trunc")
REDUCTIONS = ("mean", "first")


def triple(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
    """An int or three ints -> three positive ints."""
    values = (value,) * 3 if isinstance(value, int) else tuple(value)
    if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise ValueError(f"{name} must be a positive int or three positive ints, got {value!r}")
    return values  # type: ignore[return-value]


def kernel_offsets(
    kernel_size: int | Sequence[int] = 3,
    tensor_stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The kernel offsets of a sparse convolution, in torchsparse 1.4's order.

    Per axis the offsets are ``arange(-size // 2 + 1, size // 2 + 1)`` (floor division): {-1, 0, 1}
    for size 3, {0, 1} for size 2 (even kernels lean forward), {0} for size 1, each times the
    tensor stride and the dilation of that axis. (torchsparse 1.4 ignored the dilation here; it
    is honoured, and SA-HMR uses none.)

    Order: for an odd kernel volume x varies fastest, then y, then z (3x3x3: k = 9 (dz + 1) +
    3 (dy + 1) + (dx + 1), centre k = 13, MinkowskiEngine's order); for an even volume z varies
    fastest (2x2x2: k = 4 dx + 2 dy + dz). Weight tensors index their first dimension this way.

    Returns:
        (K, 3) int32 offsets (dx, dy, dz) in full-resolution voxel units, K = the kernel volume.
    """
    size = triple(kernel_size, "kernel_size")
    stride = triple(tensor_stride, "tensor_stride")
    dil = triple(dilation, "dilation")
    # torchsparse's arange(-size // 2 + 1, size // 2 + 1) with Python's floor division.
    starts = [-(s // 2) + (1 - s % 2) for s in size]
    axes = [[(starts[a] + i) * stride[a] * dil[a] for i in range(size[a])] for a in range(3)]
    volume = size[0] * size[1] * size[2]
    if volume % 2 == 1:
        offsets = [(x, y, z) for z in axes[2] for y in axes[1] for x in axes[0]]
    else:
        offsets = [(x, y, z) for x in axes[0] for y in axes[1] for z in axes[2]]
    return torch.tensor(offsets, dtype=torch.int32, device=device).reshape(-1, 3)


def _check_tensor(value, name: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")


def _check_coords(coords: torch.Tensor, name: str = "coords") -> None:
    _check_tensor(coords, name)
    if coords.dtype.is_floating_point:
        raise TypeError(
            f"{name} must be int32 voxel coordinates (batch, x, y, z), got {coords.dtype}; quantise float "
            "positions first (meshrec.scene.voxelize divides by the voxel size and floors)"
        )
    if coords.dtype != torch.int32:
        raise TypeError(f"{name} must be int32, got {coords.dtype}; convert with .int() after checking the range")
    if coords.dim() != 2 or coords.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) with columns (batch, x, y, z), got {tuple(coords.shape)}")


def _check_features(features: torch.Tensor, name: str = "features") -> None:
    _check_tensor(features, name)
    if features.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got {features.dtype}")
    if features.dim() != 2:
        raise ValueError(f"{name} must have shape (N, C), got {tuple(features.shape)}")


def _check_table(table: torch.Tensor, name: str, rows: int | None, columns: int | None, layout: str) -> None:
    _check_tensor(table, name)
    if table.dtype != torch.int32 or table.dim() != 2:
        raise TypeError(f"{name} must be an int32 tensor of shape {layout}, got {table.dtype} {tuple(table.shape)}")
    if (rows is not None and table.shape[0] != rows) or (columns is not None and table.shape[1] != columns):
        raise ValueError(f"{name} must have shape {layout}, got {tuple(table.shape)}")


def _check_same_device(*named: tuple[str, torch.Tensor]) -> None:
    devices = {tensor.device for _, tensor in named}
    if len(devices) > 1:
        listing = ", ".join(f"{name} on {tensor.device}" for name, tensor in named)
        raise ValueError(f"tensors must be on one device: {listing}")


def _is_size(value) -> bool:
    """A non-negative int, or a symbolic size under torch.compile."""
    if isinstance(value, torch.SymInt):
        return True
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _hash_capacity(hash_capacity: int | None) -> int:
    if hash_capacity is None:
        return 0
    if isinstance(hash_capacity, bool) or not isinstance(hash_capacity, int):
        raise TypeError(f"hash_capacity must be an int or None, got {type(hash_capacity).__name__}")
    if not 1 <= hash_capacity <= reference.MAX_HASH_CAPACITY:
        raise ValueError(
            f"hash_capacity must be None (automatic) or a slot count in [1, 2^30], got {hash_capacity}"
        )
    return hash_capacity


def unique_coords(
    coords: torch.Tensor,
    stride: int | Sequence[int] = 1,
    *,
    rounding: str = "floor",
    hash_capacity: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique voxels of coords coarsened by stride, through a hash table.

    Args:
        coords: (N, 4) int32 (batch, x, y, z).
        stride: the factor to coarsen x, y, z by (an int or three). Each coordinate becomes
            ``round(c / stride) * stride``, so the result stays in full-resolution units.
        rounding: "floor" (default) or "trunc" (toward zero). torchsparse 1.4 downsampled with
            the tensor ``//`` operator, which truncated before PyTorch 1.13; SA-HMR's released
            weights were trained that way (see meshrec.scene.SparseConv3d).
        hash_capacity: hash-table slots (see the module docstring); None for automatic.

    Returns:
        (unique (U, 4) int32 sorted by (batch, x, y, z), inverse (N,) int64: the row of
        ``unique`` each input row went to). U depends on the data (under torch.compile it is an
        unbacked symbolic size).
    """
    _check_coords(coords)
    stride = triple(stride, "stride")
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")
    capacity = _hash_capacity(hash_capacity)
    if use_compiled(coords):
        return torch.ops.meshrec.sparse_unique_coords(coords, list(stride), rounding == "trunc", capacity)
    return reference.unique_coords(coords, stride, rounding == "trunc", capacity)


def kernel_map(
    in_coords: torch.Tensor, out_coords: torch.Tensor, offsets: torch.Tensor, *, hash_capacity: int | None = None
) -> torch.Tensor:
    """Neighbor table of a sparse convolution: for every output voxel and kernel offset, the row
    of the input voxel at ``out_coords[r, 1:] + offsets[k]`` in the same batch element.

    Args:
        in_coords: (N_in, 4) int32 input voxels; rows must be unique (they fill the hash table).
        out_coords: (N_out, 4) int32 output voxels (the same tensor as in_coords for a
            submanifold convolution, which then queries only half the offsets).
        offsets: (K, 3) int32 from :func:`kernel_offsets`.
        hash_capacity: hash-table slots (more than N_in); None for automatic.

    Returns:
        (N_out, K) int32 input rows, -1 where no input voxel exists.
    """
    _check_coords(in_coords, "in_coords")
    _check_coords(out_coords, "out_coords")
    _check_tensor(offsets, "offsets")
    if offsets.dtype != torch.int32 or offsets.dim() != 2 or offsets.shape[1] != 3:
        raise TypeError(f"offsets must be int32 of shape (K, 3), got {offsets.dtype} {tuple(offsets.shape)}")
    _check_same_device(("in_coords", in_coords), ("out_coords", out_coords), ("offsets", offsets))
    capacity = _hash_capacity(hash_capacity)
    if capacity and reference.resolved_capacity(capacity, 0) <= in_coords.shape[0]:
        raise ValueError(
            f"hash_capacity {capacity} cannot hold the {in_coords.shape[0]} rows of in_coords; it needs more slots "
            "than rows (2x is a good choice), or None for automatic"
        )
    if use_compiled(in_coords):
        return torch.ops.meshrec.sparse_kernel_map(in_coords, out_coords, offsets, capacity)
    return reference.kernel_map(in_coords, out_coords, offsets, capacity)


def invert_kernel_map(neighbors: torch.Tensor, num_inputs: int) -> torch.Tensor:
    """The reverse table of a kernel map: (num_inputs, K) int32, the output row that reads input
    row i at offset k, or -1. Serves the input gradient and transposed convolutions."""
    _check_table(neighbors, "neighbors", None, None, "(N_out, K)")
    if not _is_size(num_inputs):
        raise ValueError(f"num_inputs must be a non-negative int, got {num_inputs!r}")
    if use_compiled(neighbors):
        return torch.ops.meshrec.sparse_invert_map(neighbors, num_inputs)
    return reference.invert_kernel_map(neighbors, num_inputs)


def sparse_conv(
    features: torch.Tensor, weight: torch.Tensor, neighbors: torch.Tensor, reverse_neighbors: torch.Tensor
) -> torch.Tensor:
    """Sparse convolution as gather - GEMM - scatter: ``out[r] = sum_k features[neighbors[r, k]] @ weight[k]``.

    Args:
        features: (N_in, C_in) float32 or float64.
        weight: (K, C_in, C_out), same dtype and device.
        neighbors: (N_out, K) int32 kernel map (:func:`kernel_map`).
        reverse_neighbors: (N_in, K) int32, ``invert_kernel_map(neighbors, N_in)``; used by the
            backward pass. A transposed convolution is this op with the two tables swapped.

    Returns:
        (N_out, C_out). Differentiable in features and weight, twice (the gradients are
        themselves sparse convolutions).
    """
    _check_features(features)
    _check_tensor(weight, "weight")
    if weight.dim() != 3 or weight.shape[1] != features.shape[1]:
        raise ValueError(
            f"weight must have shape (K, C_in, C_out) with C_in = {features.shape[1]}, got {tuple(weight.shape)}"
        )
    if weight.dtype != features.dtype:
        raise TypeError(f"weight ({weight.dtype}) and features ({features.dtype}) must have the same dtype")
    _check_table(neighbors, "neighbors", None, weight.shape[0], f"(N_out, K={weight.shape[0]})")
    _check_table(reverse_neighbors, "reverse_neighbors", features.shape[0], weight.shape[0],
                 f"(N_in={features.shape[0]}, K={weight.shape[0]})")
    _check_same_device(("features", features), ("weight", weight), ("neighbors", neighbors),
                       ("reverse_neighbors", reverse_neighbors))
    if use_compiled(features):
        return torch.ops.meshrec.sparse_conv(features, weight, neighbors, reverse_neighbors)
    return reference.sparse_conv(features, weight, neighbors, reverse_neighbors)


def voxel_pool(
    features: torch.Tensor, point_to_voxel: torch.Tensor, num_voxels: int, reduction: str = "mean"
) -> torch.Tensor:
    """Point features -> voxel features: the mean (or the first point's, by row order) per voxel.

    Args:
        features: (N, C) float point features.
        point_to_voxel: (N,) int64 voxel row of each point, -1 for points outside every voxel.
        num_voxels: V, the number of output rows.
        reduction: "mean" (default; what SPVCNN uses) or "first".

    Returns:
        (V, C); voxels without points are zero. Deterministic: each voxel sums its points in
        row order.
    """
    _check_features(features)
    _check_tensor(point_to_voxel, "point_to_voxel")
    if point_to_voxel.dtype != torch.int64 or point_to_voxel.shape != (features.shape[0],):
        raise ValueError(
            f"point_to_voxel must be int64 of shape (N,) with N = {features.shape[0]} (the rows of features), "
            f"got {point_to_voxel.dtype} {tuple(point_to_voxel.shape)}"
        )
    if not _is_size(num_voxels):
        raise ValueError(f"num_voxels must be a non-negative int, got {num_voxels!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    _check_same_device(("features", features), ("point_to_voxel", point_to_voxel))
    if use_compiled(features):
        return torch.ops.meshrec.sparse_voxel_pool(features, point_to_voxel, num_voxels, reduction)
    return reference.voxel_pool(features, point_to_voxel, num_voxels, reduction)


def devoxelize(features: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Voxel features -> point features by weighted taps: ``out[n] = sum_j weights[n, j] * features[indices[n, j]]``.

    With the 8 corners of a point's cell (:func:`meshrec.scene.trilinear_taps`) this is SPVCNN's
    trilinear devoxelisation.

    Args:
        features: (V, C) float voxel features.
        indices: (N, J) int32 voxel rows, -1 for a missing voxel (skipped).
        weights: (N, J), the dtype of features.

    Returns:
        (N, C). Differentiable in features and weights.
    """
    _check_features(features)
    _check_table(indices, "indices", None, None, "(N, J)")
    _check_tensor(weights, "weights")
    if weights.shape != indices.shape or weights.dtype != features.dtype:
        raise ValueError(
            f"weights must have the shape of indices {tuple(indices.shape)} and the dtype of features "
            f"({features.dtype}), got {weights.dtype} {tuple(weights.shape)}"
        )
    _check_same_device(("features", features), ("indices", indices), ("weights", weights))
    if use_compiled(features):
        return torch.ops.meshrec.sparse_devoxelize(features, indices, weights)
    return reference.devoxelize(features, indices, weights)
