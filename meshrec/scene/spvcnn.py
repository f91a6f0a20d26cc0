"""SPVCNN, the point-voxel scene encoder of SA-HMR's RCNet (its ``contact_net``).

Layer for layer the network of SA-HMR's ``lib/networks/pose/root_contact/backbone/spvcnn.py``
(an SPVNAS-style U-Net on torchsparse 1.4), with the same parameter names, so a state dict of
``net.rcnet.contact_net.*`` (prefix stripped) loads with strict=True. Written from its
description; see docs/scene_encoder.md for the correspondence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.profiler import record_function

from meshrec.scene.functional import (
    devoxelize,
    points_to_voxels,
    trilinear_taps,
    voxel_indices,
    voxelize,
)
from meshrec.scene.nn import SparseBatchNorm, SparseConv3d, SparseReLU
from meshrec.scene.tensor import SparseTensor, cat

__all__ = ["SPVCNN", "SPVCNNOutput"]

# Channels of stem, stage1..4, up1..4 at channel ratio 1.
CHANNELS = (32, 32, 64, 128, 256, 256, 128, 96, 96)


class ConvBlock(nn.Module):
    """conv -> BN -> ReLU (a transposed conv with ``transposed``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, *, transposed: bool = False,
                 rounding: str = "floor") -> None:
        super().__init__()
        self.net = nn.Sequential(
            SparseConv3d(in_channels, out_channels, kernel_size, stride, transposed=transposed, rounding=rounding),
            SparseBatchNorm(out_channels),
            SparseReLU(inplace=True),
        )

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.net(x)


class ResidualBlock(nn.Module):
    """conv3 -> BN -> ReLU -> conv3 -> BN, plus a shortcut (identity, or a 1x1 conv + BN when the
    channels change), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            SparseConv3d(in_channels, out_channels, 3),
            SparseBatchNorm(out_channels),
            SparseReLU(inplace=True),
            SparseConv3d(out_channels, out_channels, 3),
            SparseBatchNorm(out_channels),
        )
        if in_channels == out_channels:
            self.downsample = nn.Identity()
        else:
            self.downsample = nn.Sequential(SparseConv3d(in_channels, out_channels, 1), SparseBatchNorm(out_channels))
        self.relu = SparseReLU(inplace=True)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.relu(self.net(x) + self.downsample(x))


@dataclass(frozen=True)
class SPVCNNOutput:
    """What :class:`SPVCNN` returns.

    Attributes:
        point_features: (N, num_classes) per input point, in input order (SA-HMR: [0] vote
            confidence, [1:4] offset, [4:12] contact logits).
        voxels: the last decoder stage, (V, 96 * channel_ratio) features on the stride-1 voxels.
        point_to_voxel: (N,) int64 row of ``voxels`` holding each point.
    """

    point_features: torch.Tensor
    voxels: SparseTensor
    point_to_voxel: torch.Tensor


class _PointCloud:
    """The points of a pass with the voxel lookups of each stride, computed once and reused as
    SA-HMR's PointTensor caches them (idx_query / weights per stride)."""

    def __init__(self, points: torch.Tensor, batch: torch.Tensor | None, hash_capacity: int | None) -> None:
        self.points, self.batch, self.hash_capacity = points, batch, hash_capacity
        self.rows: dict[tuple[int, int, int], torch.Tensor] = {}
        self.taps: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def to_voxels(self, tensor: SparseTensor, features: torch.Tensor) -> SparseTensor:
        if tensor.stride not in self.rows:
            self.rows[tensor.stride] = voxel_indices(tensor, self.points, self.batch, hash_capacity=self.hash_capacity)
        return points_to_voxels(tensor, self.points, features, point_to_voxel=self.rows[tensor.stride])

    def from_voxels(self, tensor: SparseTensor) -> torch.Tensor:
        if tensor.stride not in self.taps:
            self.taps[tensor.stride] = trilinear_taps(tensor, self.points, self.batch, hash_capacity=self.hash_capacity)
        return devoxelize(tensor, self.points, taps=self.taps[tensor.stride])


class SPVCNN(nn.Module):
    """SA-HMR's sparse point-voxel CNN: a 4-level sparse U-Net on stride-1 voxels with a point
    branch that devoxelises (trilinear) after the encoder and after decoder levels 2 and 4.

    Args:
        in_channels: per-point input features (SA-HMR: 35 = 3 offset + 32 image features).
        num_classes: per-point outputs (SA-HMR: 12).
        channel_ratio: multiplies every channel count (SA-HMR: 1.0; ~21.8 M parameters).
        dropout: dropout on the voxel features entering the decoder (SA-HMR: 0.3).
        rounding: downsampling division, "floor" (default) or "trunc" (torchsparse 1.4 under
            PyTorch < 1.13, which SA-HMR's released weights were trained with; the point <-> voxel
            steps floor either way, as SA-HMR's do).
        hash_capacity: hash-table slots for the voxel lookups; None for automatic.

    Parameter names follow SA-HMR (``stem.0.kernel``, ``stage1.0.net.0.kernel``, ``up1.1.0.net.3.kernel``,
    ``point_transforms.2.1.running_var``, ...), so its ``contact_net`` weights load unchanged.
    """

    def __init__(
        self,
        in_channels: int = 35,
        num_classes: int = 12,
        *,
        channel_ratio: float = 1.0,
        dropout: float = 0.3,
        rounding: str = "floor",
        hash_capacity: int | None = None,
    ) -> None:
        super().__init__()
        cs = [int(channel_ratio * c) for c in CHANNELS]
        self.rounding = rounding
        self.hash_capacity = hash_capacity
        self.fc_in = nn.Linear(in_channels, in_channels)
        self.stem = nn.Sequential(
            SparseConv3d(in_channels, cs[0], 3),
            SparseBatchNorm(cs[0]),
            SparseReLU(inplace=True),
            SparseConv3d(cs[0], cs[0], 3),
            SparseBatchNorm(cs[0]),
            SparseReLU(inplace=True),
        )

        def encoder(channels_in: int, channels_out: int) -> nn.Sequential:
            return nn.Sequential(
                ConvBlock(channels_in, channels_in, 2, 2, rounding=rounding),
                ResidualBlock(channels_in, channels_out),
                ResidualBlock(channels_out, channels_out),
            )

        def decoder(channels_in: int, channels_out: int, skip: int) -> nn.ModuleList:
            return nn.ModuleList([
                ConvBlock(channels_in, channels_out, 2, 2, transposed=True, rounding=rounding),
                nn.Sequential(ResidualBlock(channels_out + skip, channels_out), ResidualBlock(channels_out, channels_out)),
            ])

        self.stage1 = encoder(cs[0], cs[1])
        self.stage2 = encoder(cs[1], cs[2])
        self.stage3 = encoder(cs[2], cs[3])
        self.stage4 = encoder(cs[3], cs[4])
        self.up1 = decoder(cs[4], cs[5], cs[3])
        self.up2 = decoder(cs[5], cs[6], cs[2])
        self.up3 = decoder(cs[6], cs[7], cs[1])
        self.up4 = decoder(cs[7], cs[8], cs[0])
        self.classifier = nn.Sequential(nn.Linear(cs[8], num_classes))
        self.point_transforms = nn.ModuleList([
            nn.Sequential(nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(inplace=True))
            for a, b in ((cs[0], cs[4]), (cs[4], cs[6]), (cs[6], cs[8]))
        ])
        self.dropout = nn.Dropout(dropout)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm1d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, points: torch.Tensor, features: torch.Tensor, batch: torch.Tensor | None = None) -> SPVCNNOutput:
        """Encodes points with features.

        Args:
            points: (N, 3) float positions in voxel units (metres / voxel size). SA-HMR passes the
                integer coordinates of its 5 cm camera-frame voxels, one point per voxel.
            features: (N, in_channels) per-point features, the dtype of the parameters.
            batch: (N,) integer batch index per point, or None for one cloud.
        """
        if features.dim() != 2 or features.shape[0] != points.shape[0]:
            raise ValueError(f"features must have shape (N={points.shape[0]}, C), got {tuple(features.shape)}")
        cloud = _PointCloud(points, batch, self.hash_capacity)
        with record_function("spvcnn.voxelize"):
            feats = self.fc_in(features)
            voxelized = voxelize(points, feats, batch=batch, hash_capacity=self.hash_capacity)
            x0 = voxelized.tensor
            cloud.rows[x0.stride] = voxelized.point_to_voxel
        with record_function("spvcnn.stem"):
            x0 = self.stem(x0)
        with record_function("spvcnn.point_voxel"):
            z0 = cloud.from_voxels(x0)
            x1 = cloud.to_voxels(x0, z0)
        with record_function("spvcnn.stage1"):
            x1 = self.stage1(x1)
        with record_function("spvcnn.stage2"):
            x2 = self.stage2(x1)
        with record_function("spvcnn.stage3"):
            x3 = self.stage3(x2)
        with record_function("spvcnn.stage4"):
            x4 = self.stage4(x3)
        with record_function("spvcnn.point_voxel"):
            z1 = cloud.from_voxels(x4) + self.point_transforms[0](z0)
            y1 = cloud.to_voxels(x4, z1)
            y1 = y1.replace_feats(self.dropout(y1.feats))
        with record_function("spvcnn.up1"):
            y1 = self.up1[1](cat([self.up1[0](y1), x3]))
        with record_function("spvcnn.up2"):
            y2 = self.up2[1](cat([self.up2[0](y1), x2]))
        with record_function("spvcnn.point_voxel"):
            z2 = cloud.from_voxels(y2) + self.point_transforms[1](z1)
            y3 = cloud.to_voxels(y2, z2)
            y3 = y3.replace_feats(self.dropout(y3.feats))
        with record_function("spvcnn.up3"):
            y3 = self.up3[1](cat([self.up3[0](y3), x1]))
        with record_function("spvcnn.up4"):
            y4 = self.up4[1](cat([self.up4[0](y3), x0]))
        with record_function("spvcnn.point_voxel"):
            z3 = cloud.from_voxels(y4) + self.point_transforms[2](z2)
        with record_function("spvcnn.classifier"):
            out = self.classifier(z3)
        return SPVCNNOutput(out, y4, voxelized.point_to_voxel)
