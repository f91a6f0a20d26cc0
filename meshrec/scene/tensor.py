"""SparseTensor: voxel features with their coordinates, and the maps shared along a network."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from meshrec.ops.sparse import triple

__all__ = ["KernelMap", "SparseTensor", "cat"]

Stride = tuple[int, int, int]


@dataclass(frozen=True)
class KernelMap:
    """The neighbour tables of one (strided or submanifold) convolution configuration.

    Attributes:
        neighbors: (N_out, K) int32, the input row per output row and kernel offset (-1: none).
        reverse: (N_in, K) int32, the output row per input row and offset (-1: none).
        in_coords: (N_in, 4) the input voxels, out_coords: (N_out, 4) the output voxels.

    A transposed convolution reuses the map of the matching downsampling convolution with the
    roles swapped: its output is ``in_coords``, in that row order.
    """

    neighbors: torch.Tensor
    reverse: torch.Tensor
    in_coords: torch.Tensor
    out_coords: torch.Tensor


@dataclass
class MapCache:
    """What the tensors of one network pass share (torchsparse's cmaps and kmaps): the voxels at
    each stride, how strided ones were rounded, and the kernel maps built so far."""

    coords: dict[Stride, torch.Tensor] = field(default_factory=dict)
    rounding: dict[Stride, str] = field(default_factory=dict)
    kernel_maps: dict[tuple, KernelMap] = field(default_factory=dict)


class SparseTensor:
    """Features on the occupied voxels of a batch of grids.

    Args:
        feats: (N, C) float features, one row per voxel.
        coords: (N, 4) int32 voxel coordinates (batch, x, y, z), batch first, unique rows. x, y, z
            are in full-resolution voxel units and may be negative; a tensor at stride s holds
            multiples of s (torchsparse 1.4's convention).
        stride: the tensor stride, an int or three.

    Convolutions cache their neighbour tables on the tensor and pass the cache on to their output,
    so later layers at the same stride and the transposed convolutions of a decoder reuse them.
    ``replace_feats`` keeps that cache; a freshly constructed tensor starts an empty one.
    """

    __slots__ = ("feats", "coords", "stride", "cache")

    def __init__(
        self, feats: torch.Tensor, coords: torch.Tensor, stride: int | Sequence[int] = 1, *, cache: MapCache | None = None
    ) -> None:
        if not isinstance(feats, torch.Tensor) or not isinstance(coords, torch.Tensor):
            raise TypeError("feats and coords must be torch.Tensors")
        if feats.dim() != 2:
            raise ValueError(f"feats must have shape (N, C), got {tuple(feats.shape)}")
        if coords.dtype != torch.int32:
            raise TypeError(
                f"coords must be int32 voxel coordinates (batch, x, y, z), got {coords.dtype}"
                + ("; quantise positions with meshrec.scene.voxelize" if coords.dtype.is_floating_point else "")
            )
        if coords.dim() != 2 or coords.shape[1] != 4:
            raise ValueError(f"coords must have shape (N, 4) with columns (batch, x, y, z), got {tuple(coords.shape)}")
        if feats.shape[0] != coords.shape[0]:
            raise ValueError(f"feats has {feats.shape[0]} rows but coords has {coords.shape[0]}: one row per voxel")
        if feats.device != coords.device:
            raise ValueError(f"feats ({feats.device}) and coords ({coords.device}) must be on the same device")
        self.feats = feats
        self.coords = coords
        self.stride: Stride = triple(stride, "stride")
        self.cache = cache if cache is not None else MapCache()
        self.cache.coords.setdefault(self.stride, coords)

    def replace_feats(self, feats: torch.Tensor) -> SparseTensor:
        """The same voxels (and shared cache) with new features of shape (N, C')."""
        return SparseTensor(feats, self.coords, self.stride, cache=self.cache)

    def __add__(self, other: SparseTensor) -> SparseTensor:
        if not isinstance(other, SparseTensor):
            return NotImplemented
        _check_same_voxels(self, other)
        return self.replace_feats(self.feats + other.feats)

    def __len__(self) -> int:
        return self.coords.shape[0]

    @property
    def num_channels(self) -> int:
        return self.feats.shape[1]

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    def to(self, *args, **kwargs) -> SparseTensor:
        """Moves or casts the features (coordinates follow device moves, staying int32); the
        cache starts empty on another device."""
        feats = self.feats.to(*args, **kwargs)
        if feats.device == self.feats.device:
            return self.replace_feats(feats)
        return SparseTensor(feats, self.coords.to(feats.device), self.stride)

    def __repr__(self) -> str:
        return (
            f"SparseTensor(voxels={len(self)}, channels={self.num_channels}, stride={self.stride}, "
            f"dtype={self.dtype}, device={self.device})"
        )


def _check_same_voxels(a: SparseTensor, b: SparseTensor) -> None:
    if a.coords is b.coords:
        return
    if a.coords.shape != b.coords.shape or a.stride != b.stride or not torch.equal(a.coords, b.coords):
        raise ValueError(
            f"the tensors hold different voxels ({len(a)} at stride {a.stride} vs {len(b)} at stride {b.stride}); "
            "combine features only of tensors with the same coordinates in the same row order"
        )


def cat(tensors: Sequence[SparseTensor]) -> SparseTensor:
    """Concatenates the features of tensors on the same voxels (torchsparse.cat): (N, sum C)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat needs at least one SparseTensor")
    for other in tensors[1:]:
        _check_same_voxels(tensors[0], other)
    return tensors[0].replace_feats(torch.cat([t.feats for t in tensors], dim=1))
