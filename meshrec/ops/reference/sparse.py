"""Pure-PyTorch reference of the sparse-voxel ops (torch only: loadable without meshrec).

The convolution is written the way torchsparse 1.4 runs on a CPU: for each kernel offset, gather
the input rows, multiply by that offset's weight, and index_add the products into the output.
Hash tables are replaced by sorting and binary search over the same packed 63-bit keys the
kernels use, so every function returns exactly what its kernel returns (up to float rounding).
"""

from __future__ import annotations

import torch

__all__ = [
    "COORD_MAX",
    "COORD_MIN",
    "BATCH_MAX",
    "devoxelize",
    "invert_kernel_map",
    "kernel_map",
    "pack_coords",
    "sparse_conv",
    "sparse_conv_weight_grad",
    "unique_coords",
    "voxel_pool",
]

# The packable range of voxel coordinates (csrc/sparse/coords.h): 12 bits of batch, 17 of each axis.
COORD_BITS = 17
COORD_MIN = -(1 << (COORD_BITS - 1))
COORD_MAX = (1 << (COORD_BITS - 1)) - 1
BATCH_MAX = (1 << 12) - 1
MAX_HASH_CAPACITY = 1 << 30


def in_range(coords: torch.Tensor) -> torch.Tensor:
    """(N,) bool: rows of (N, 4) (batch, x, y, z) coordinates inside the packable range."""
    batch_ok = (coords[:, 0] >= 0) & (coords[:, 0] <= BATCH_MAX)
    xyz_ok = ((coords[:, 1:] >= COORD_MIN) & (coords[:, 1:] <= COORD_MAX)).all(dim=1)
    return batch_ok & xyz_ok


def check_in_range(coords: torch.Tensor, name: str) -> None:
    bad = ~in_range(coords)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{name} row {row} = {tuple(coords[row].tolist())} is out of range: batch indices must lie in "
            f"[0, {BATCH_MAX}] and x, y, z in [{COORD_MIN}, {COORD_MAX}]; use a coarser voxel size or shift the scene"
        )


def pack_coords(coords: torch.Tensor) -> torch.Tensor:
    """(N, 4) in-range (batch, x, y, z) -> (N,) int64 keys, ordered as the rows lexicographically."""
    c = coords.long()
    shifted = c[:, 1:] - COORD_MIN
    return (c[:, 0] << (3 * COORD_BITS)) | (shifted[:, 0] << (2 * COORD_BITS)) | (shifted[:, 1] << COORD_BITS) | shifted[:, 2]


def resolved_capacity(hash_capacity: int, keys: int) -> int:
    """Slots of the kernels' hash table: hash_capacity rounded up to a power of two, or 2x keys when 0."""
    requested = hash_capacity if hash_capacity > 0 else max(2 * keys, 64)
    return 1 << max(0, (requested - 1).bit_length())


def check_capacity(hash_capacity: int, unique_keys: int, what: str) -> None:
    capacity = resolved_capacity(hash_capacity, unique_keys)
    if capacity <= unique_keys:
        raise ValueError(
            f"hash_capacity {hash_capacity} ({capacity} slots after rounding up to a power of two) cannot hold "
            f"{unique_keys} {what}; pass a larger hash_capacity (about twice that), or 0 for automatic"
        )


def unique_coords(
    coords: torch.Tensor, stride: tuple[int, int, int] = (1, 1, 1), truncate: bool = False, hash_capacity: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique rows of coords with x, y, z divided by stride (floor, or toward zero with truncate)
    and multiplied back, sorted by (batch, x, y, z), and the (N,) int64 row of each input."""
    c = coords.long()
    check_in_range(c, "coords")
    s = torch.tensor(stride, dtype=torch.long, device=c.device)
    xyz = torch.div(c[:, 1:], s, rounding_mode="trunc" if truncate else "floor") * s
    c = torch.cat([c[:, :1], xyz], dim=1)
    check_in_range(c, "coords")
    unique, inverse = torch.unique(c, dim=0, return_inverse=True)
    check_capacity(hash_capacity, unique.shape[0], "unique voxels")
    return unique.to(torch.int32), inverse.reshape(-1)


def kernel_map(
    in_coords: torch.Tensor, out_coords: torch.Tensor, offsets: torch.Tensor, hash_capacity: int = 0
) -> torch.Tensor:
    """(N_out, K) int32: the row of in_coords at out_coords[r] + offsets[k] (same batch), or -1."""
    check_in_range(in_coords, "in_coords")
    check_capacity(hash_capacity, in_coords.shape[0], "rows of in_coords")
    keys = pack_coords(in_coords)
    sorted_keys, order = torch.sort(keys)
    if sorted_keys.numel() > 1 and bool((sorted_keys[1:] == sorted_keys[:-1]).any()):
        raise ValueError("in_coords has duplicate rows; the coordinates of a sparse tensor must be unique")
    out = out_coords.long()
    neighbours = out[:, None, :].repeat(1, offsets.shape[0], 1)
    neighbours[:, :, 1:] += offsets.long()[None]
    neighbours = neighbours.reshape(-1, 4)
    valid = in_range(neighbours)
    query = torch.where(valid, pack_coords(torch.where(valid[:, None], neighbours, 0)), -1)
    if sorted_keys.numel() == 0:
        return torch.full((out.shape[0], offsets.shape[0]), -1, dtype=torch.int32, device=out.device)
    position = torch.searchsorted(sorted_keys, query).clamp(max=sorted_keys.numel() - 1)
    hit = valid & (sorted_keys[position] == query)
    result = torch.where(hit, order[position], -1)
    return result.reshape(out.shape[0], offsets.shape[0]).to(torch.int32)


def invert_kernel_map(neighbors: torch.Tensor, num_inputs: int) -> torch.Tensor:
    """(num_inputs, K) int32: the output row that reads input row i at offset k, or -1."""
    k_count = neighbors.shape[1]
    inverse = torch.full((num_inputs * k_count,), -1, dtype=torch.int32, device=neighbors.device)
    rows, ks = (neighbors >= 0).nonzero(as_tuple=True)
    inverse[neighbors[rows, ks].long() * k_count + ks] = rows.to(torch.int32)
    return inverse.reshape(num_inputs, k_count)


def sparse_conv(
    features: torch.Tensor, weight: torch.Tensor, neighbors: torch.Tensor, reverse_neighbors: torch.Tensor | None = None
) -> torch.Tensor:
    """out[r] = sum_k features[neighbors[r, k]] @ weight[k]: per offset, gather + mm + index_add."""
    out = features.new_zeros(neighbors.shape[0], weight.shape[2])
    for k in range(weight.shape[0]):
        rows = (neighbors[:, k] >= 0).nonzero().squeeze(1)
        if rows.numel():
            out.index_add_(0, rows, features[neighbors[rows, k].long()] @ weight[k])
    return out


def sparse_conv_weight_grad(
    features: torch.Tensor, grad_output: torch.Tensor, neighbors: torch.Tensor, reverse_neighbors: torch.Tensor | None = None
) -> torch.Tensor:
    """(K, C_in, C_out): sum_r features[neighbors[r, k]]^T grad_output[r] for every offset k."""
    grads = []
    for k in range(neighbors.shape[1]):
        rows = (neighbors[:, k] >= 0).nonzero().squeeze(1)
        grads.append(features[neighbors[rows, k].long()].T @ grad_output[rows])
    if not grads:
        return features.new_zeros(0, features.shape[1], grad_output.shape[1])
    return torch.stack(grads)


def voxel_pool(features: torch.Tensor, point_to_voxel: torch.Tensor, num_voxels: int, reduction: str = "mean") -> torch.Tensor:
    """(num_voxels, C): the mean (or the first, by row order) of the features of each voxel's
    points; points with index -1 are dropped and voxels without points are zero."""
    kept = point_to_voxel >= 0
    index, rows = point_to_voxel[kept], features[kept]
    if reduction == "mean":
        total = features.new_zeros(num_voxels, features.shape[1]).index_add(0, index, rows)
        count = torch.bincount(index, minlength=num_voxels).to(features.dtype).clamp(min=1)
        return total / count[:, None]
    if reduction == "first":
        positions = kept.nonzero().squeeze(1)
        first = torch.full((num_voxels,), features.shape[0], dtype=torch.long, device=features.device)
        first = first.scatter_reduce(0, index, positions, reduce="amin")
        padded = torch.cat([features, features.new_zeros(1, features.shape[1])])
        return padded[first]
    raise ValueError(f"reduction must be 'mean' or 'first', got {reduction!r}")


def devoxelize(features: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(N, C): sum_j weights[n, j] * features[indices[n, j]], entries with index -1 skipped."""
    # Index -1 reads an appended zero row, so voxel-free inputs work too.
    padded = torch.cat([features, features.new_zeros(1, features.shape[1])])
    rows = torch.where(indices >= 0, indices.long(), features.shape[0])
    return (padded[rows] * torch.where(indices >= 0, weights, 0)[..., None]).sum(dim=1)
