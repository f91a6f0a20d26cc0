"""meshrec's custom ops: compiled CPU/CUDA kernels with pure-PyTorch references.

Every op here dispatches to ``torch.ops.meshrec.<name>`` when the compiled library is loaded and
falls back to :mod:`meshrec.ops.reference` otherwise (see :mod:`meshrec.extension`).
"""

from meshrec.ops.rotation import rodrigues

__all__ = ["rodrigues"]
