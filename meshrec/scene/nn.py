"""Sparse modules: convolution, batch norm, activations and dropout on SparseTensors.

They compose with ``torch.nn.Sequential`` and carry torchsparse 1.4's parameter names
(``kernel`` for convolution weights), so torchsparse checkpoints load with strict=True.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from meshrec.ops import sparse as ops
from meshrec.scene.functional import sparse_conv3d
from meshrec.scene.tensor import SparseTensor

__all__ = ["SparseBatchNorm", "SparseConv3d", "SparseDropout", "SparseLeakyReLU", "SparseReLU"]


class SparseConv3d(nn.Module):
    """Sparse 3D convolution (see :func:`meshrec.scene.sparse_conv3d` for the semantics).

    Args:
        in_channels, out_channels: feature channels.
        kernel_size: 1, 2 or 3 (or three of them); offsets ordered as :func:`meshrec.ops.kernel_offsets`.
        stride: 1 for a submanifold convolution, > 1 to downsample (or upsample with transposed).
        dilation: spacing of the kernel taps, in tensor-stride units.
        transposed: undo the strided convolution with the same kernel size and stride that
            produced this tensor's stride (it reuses that map and its voxels).
        bias: add a learned bias (torchsparse's default and SA-HMR use none).
        rounding: "floor" (default) or "trunc": how coordinates are divided when downsampling.
            torchsparse 1.4 used the tensor ``//`` operator, which truncated toward zero under
            PyTorch < 1.13, so negative coordinates (SA-HMR voxelises in the camera frame) were
            grouped asymmetrically; "trunc" reproduces that for checkpoints trained so.
        hash_capacity: hash-table slots when building maps; None for automatic.

    The weight is ``self.weight``, a read-only alias of the parameter ``kernel`` (torchsparse's
    name, which state dicts use): (K, C_in, C_out) with K the kernel volume, or (C_in, C_out) for
    a 1x1x1 kernel, as in torchsparse. Assign a new parameter through ``kernel``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        dilation: int | Sequence[int] = 1,
        transposed: bool = False,
        bias: bool = False,
        *,
        rounding: str = "floor",
        hash_capacity: int | None = None,
    ) -> None:
        super().__init__()
        if rounding not in ops.ROUNDING_MODES:
            raise ValueError(f"rounding must be one of {ops.ROUNDING_MODES}, got {rounding!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = ops.triple(kernel_size, "kernel_size")
        self.stride = ops.triple(stride, "stride")
        self.dilation = ops.triple(dilation, "dilation")
        self.transposed = transposed
        self.rounding = rounding
        self.hash_capacity = hash_capacity
        volume = math.prod(self.kernel_size)
        shape = (volume, in_channels, out_channels) if volume > 1 else (in_channels, out_channels)
        self.kernel = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    @property
    def weight(self) -> nn.Parameter:
        """The convolution weight, the same Parameter as ``kernel`` (torchsparse's name)."""
        return self.kernel

    def reset_parameters(self) -> None:
        # torchsparse's initialisation: uniform in +-1/sqrt(fan), fan over the kernel volume.
        fan = (self.out_channels if self.transposed else self.in_channels) * math.prod(self.kernel_size)
        bound = 1.0 / math.sqrt(fan)
        nn.init.uniform_(self.kernel, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: SparseTensor) -> SparseTensor:
        return sparse_conv3d(
            input,
            self.kernel,
            self.kernel_size,
            self.stride,
            self.dilation,
            self.transposed,
            self.bias,
            rounding=self.rounding,
            hash_capacity=self.hash_capacity,
        )

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != (1, 1, 1):
            text += f", stride={self.stride}"
        if self.dilation != (1, 1, 1):
            text += f", dilation={self.dilation}"
        if self.transposed:
            text += ", transposed=True"
        if self.bias is None:
            text += ", bias=False"
        if self.rounding != "floor":
            text += f", rounding={self.rounding!r}"
        return text


class SparseBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over the (N, C) features of a SparseTensor (torchsparse's spnn.BatchNorm)."""

    def forward(self, input: SparseTensor) -> SparseTensor:
        return input.replace_feats(super().forward(input.feats))


class SparseReLU(nn.ReLU):
    """ReLU on the features of a SparseTensor."""

    def forward(self, input: SparseTensor) -> SparseTensor:
        return input.replace_feats(super().forward(input.feats))


class SparseLeakyReLU(nn.LeakyReLU):
    """LeakyReLU on the features of a SparseTensor."""

    def forward(self, input: SparseTensor) -> SparseTensor:
        return input.replace_feats(super().forward(input.feats))


class SparseDropout(nn.Dropout):
    """Dropout on the features of a SparseTensor."""

    def forward(self, input: SparseTensor) -> SparseTensor:
        return input.replace_feats(super().forward(input.feats))
