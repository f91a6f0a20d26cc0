"""Pure-PyTorch references of meshrec's custom ops, one module per op family.

Each function computes what the compiled kernel computes, with ordinary differentiable torch
operations: the test oracle for the kernels and the fallback when ``meshrec._C`` is not
available. They favour clarity over speed.
"""

from meshrec.ops.reference.metrics import nearest_points, procrustes, sample_sdf, winding_number
from meshrec.ops.reference.rotation import rodrigues
from meshrec.ops.reference.smpl import forward_kinematics, joint_regression, smpl_lbs
from meshrec.ops.reference.sparse import (
    devoxelize,
    invert_kernel_map,
    kernel_map,
    sparse_conv,
    sparse_conv_weight_grad,
    unique_coords,
    voxel_pool,
)

__all__ = [
    "devoxelize",
    "forward_kinematics",
    "invert_kernel_map",
    "joint_regression",
    "kernel_map",
    "nearest_points",
    "procrustes",
    "rodrigues",
    "sample_sdf",
    "smpl_lbs",
    "sparse_conv",
    "sparse_conv_weight_grad",
    "unique_coords",
    "voxel_pool",
    "winding_number",
]
