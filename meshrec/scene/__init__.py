"""The scene: points from depth maps and meshes (:mod:`meshrec.scene.points`), and its sparse-voxel
encoding (SparseTensor, voxelisation, sparse convolution modules and SPVCNN).

Conventions are torchsparse 1.4's (see :mod:`meshrec.ops.sparse`): int32 coordinates (batch, x,
y, z) in full-resolution voxel units, weights (K, C_in, C_out) with x-fastest offsets for odd
kernels, transposed convolutions that reuse the matching downsampling map. Coordinates may be
negative; downsampling floors by default (``rounding="trunc"`` reproduces torchsparse 1.4 under
PyTorch < 1.13).

>>> from meshrec.scene import SparseConv3d, SparseTensor, voxelize
>>> voxels = voxelize(points, features, voxel_size=0.05).tensor   # points in metres
>>> down = SparseConv3d(35, 32, kernel_size=2, stride=2)(voxels)
"""

from meshrec.scene.functional import (
    Voxelization,
    devoxelize,
    points_to_voxels,
    sparse_conv3d,
    trilinear_taps,
    voxel_indices,
    voxelize,
)
from meshrec.scene.nn import SparseBatchNorm, SparseConv3d, SparseDropout, SparseLeakyReLU, SparseReLU
from meshrec.scene.points import Box, box_surface_points, check_scene_scale, points_from_depth, sample_mesh_points
from meshrec.scene.spvcnn import SPVCNN, SPVCNNOutput
from meshrec.scene.tensor import KernelMap, SparseTensor, cat

__all__ = [
    "Box",
    "box_surface_points",
    "check_scene_scale",
    "points_from_depth",
    "sample_mesh_points",
    "KernelMap",
    "SPVCNN",
    "SPVCNNOutput",
    "SparseBatchNorm",
    "SparseConv3d",
    "SparseDropout",
    "SparseLeakyReLU",
    "SparseReLU",
    "SparseTensor",
    "Voxelization",
    "cat",
    "devoxelize",
    "points_to_voxels",
    "sparse_conv3d",
    "trilinear_taps",
    "voxel_indices",
    "voxelize",
]
