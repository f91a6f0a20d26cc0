"""meshrec's custom ops: compiled CPU/CUDA kernels with pure-PyTorch references.

Every op here dispatches to ``torch.ops.meshrec.<name>`` when the compiled library is loaded and
falls back to :mod:`meshrec.ops.reference` otherwise (see :mod:`meshrec.extension`).
"""

from meshrec.ops.rotation import rodrigues
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
    "devoxelize",
    "invert_kernel_map",
    "kernel_map",
    "kernel_offsets",
    "rodrigues",
    "sparse_conv",
    "unique_coords",
    "voxel_pool",
]
