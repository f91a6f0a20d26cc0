"""meshrec's custom ops: compiled CPU/CUDA kernels with pure-PyTorch references.

Every op here dispatches to ``torch.ops.meshrec.<name>`` when the compiled library is loaded and
falls back to :mod:`meshrec.ops.reference` otherwise (see :mod:`meshrec.extension`). The rotation
op's wrapper, ``rodrigues``, lives in :mod:`meshrec.rotations` with the other rotation conversions.
"""

from meshrec.ops.metrics import (
    NearestPoints,
    ProcrustesResult,
    check_closed_mesh,
    nearest_points,
    points_inside_mesh,
    procrustes,
    sample_sdf,
    winding_number,
)
from meshrec.ops.smpl import SMPLArrays, SparseRegressor, joint_regression, prepare_smpl_arrays, smpl_lbs
from meshrec.ops.sparse import (
    devoxelize,
    invert_kernel_map,
    kernel_map,
    kernel_offsets,
    sparse_conv,
    unique_coords,
    voxel_pool,
)

__all__ = [
    "NearestPoints",
    "ProcrustesResult",
    "SMPLArrays",
    "SparseRegressor",
    "check_closed_mesh",
    "devoxelize",
    "invert_kernel_map",
    "joint_regression",
    "kernel_map",
    "kernel_offsets",
    "nearest_points",
    "points_inside_mesh",
    "prepare_smpl_arrays",
    "procrustes",
    "sample_sdf",
    "smpl_lbs",
    "sparse_conv",
    "unique_coords",
    "voxel_pool",
    "winding_number",
]
