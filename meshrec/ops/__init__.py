"""meshrec's custom ops: compiled CPU/CUDA kernels with pure-PyTorch references.

Every op here dispatches to ``torch.ops.meshrec.<name>`` when the compiled library is loaded and
falls back to :mod:`meshrec.ops.reference` otherwise (see :mod:`meshrec.extension`).
"""

from meshrec.ops.rotation import rodrigues
from meshrec.ops.smpl import SMPLArrays, SparseRegressor, joint_regression, prepare_smpl_arrays, smpl_lbs

__all__ = [
    "SMPLArrays",
    "SparseRegressor",
    "joint_regression",
    "prepare_smpl_arrays",
    "rodrigues",
    "smpl_lbs",
]
