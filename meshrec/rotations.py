"""meshrec's rotation module: axis-angle, rotation matrices and the upstream 6D layouts.

Inside meshrec rotations are matrices acting on column vectors (x' = R x, right-handed: the smplx
and OpenCV convention); axis-angle and the 6D layouts appear only at the edges (inputs, network
heads, optimisation variables). This module converts between them:

- :func:`rodrigues`: axis-angle -> matrices, a custom op (compiled kernel with a pure-PyTorch
  reference in :mod:`meshrec.ops.reference.rotation`, exact gradient, also at the zero vector);
- :func:`matrix_to_axis_angle`: its inverse, stable near the identity and near pi;
- the 6D representations of the upstream code, one pair of functions per layout.

All three 6D layouts keep two 3-vectors of a rotation matrix R and recover R by Gram-Schmidt
(Zhou et al., CVPR 2019): b1 = normalise(a1), b2 = normalise(a2 - (b1 . a2) b1), b3 = b1 x b2.
They differ in which two vectors they keep and in what order the six numbers are stored, and
mixing them up gives wrong poses without any error, so each has its own function:

==================  ===============================  ========================================
function suffix     six numbers                      used by
==================  ===============================  ========================================
``_spin``           R00 R01 R10 R11 R20 R21          SPIN, HMR (mmhuman3d), VIBE, MotionBERT,
                    (columns 0 and 1, row by row)    MA-HMR, EgoHMR's diffusion stage
``_prohmr``         R00 R10 R20 R01 R11 R21          ProHMR, EgoHMR's first stage
                    (column 0, then column 1)
``_pytorch3d``      R00 R01 R02 R10 R11 R12          PyTorch3D ``rotation_6d_to_matrix``
                    (row 0, then row 1)
==================  ===============================  ========================================
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from meshrec.extension import use_compiled
from meshrec.ops.reference import rotation as _reference

__all__ = [
    "matrix_from_6d_prohmr",
    "matrix_from_6d_pytorch3d",
    "matrix_from_6d_spin",
    "matrix_to_6d_prohmr",
    "matrix_to_6d_pytorch3d",
    "matrix_to_6d_spin",
    "matrix_to_axis_angle",
    "rodrigues",
]


def rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from axis-angle vectors (Rodrigues' formula), batched.

    Args:
        axis_angle: (..., 3) float32 or float64, rotation axis times angle in radians. Any
            leading shape, including empty batches.

    Returns:
        (..., 3, 3) rotation matrices, same dtype and device, acting on column vectors
        (x' = R x), right-handed (the smplx and OpenCV convention). The zero vector maps to the
        identity, smoothly: the gradient is defined and finite there.

    The formula is exact (smplx's ``batch_rodrigues`` adds 1e-8 to the angle, which perturbs its
    matrices by about 1e-8). Differentiable once; double backward raises.
    """
    if not isinstance(axis_angle, torch.Tensor):
        raise TypeError(f"axis_angle must be a torch.Tensor, got {type(axis_angle).__name__}")
    if axis_angle.dim() < 1 or axis_angle.shape[-1] != 3:
        raise ValueError(f"axis_angle must have shape (..., 3), got {tuple(axis_angle.shape)}")
    if axis_angle.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"axis_angle must be float32 or float64, got {axis_angle.dtype}")
    return _rodrigues_unchecked(axis_angle)


def _rodrigues_unchecked(axis_angle: torch.Tensor) -> torch.Tensor:
    """:func:`rodrigues` on an argument already known to be a float32/64 (..., 3) tensor."""
    if use_compiled(axis_angle):
        return torch.ops.meshrec.rodrigues(axis_angle)
    return _reference.rodrigues(axis_angle)


def _check(sixd: torch.Tensor) -> None:
    if sixd.shape[-1] != 6:
        raise ValueError(f"a 6D rotation must have shape (..., 6), got {tuple(sixd.shape)}")


def _gram_schmidt(a1: torch.Tensor, a2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    return b1, b2, torch.linalg.cross(b1, b2, dim=-1)


def matrix_from_6d_spin(sixd: torch.Tensor) -> torch.Tensor:
    """(..., 6) in SPIN's layout (R[:, :2] row by row) -> rotation matrices (..., 3, 3)."""
    _check(sixd)
    pairs = sixd.unflatten(-1, (3, 2))
    return torch.stack(_gram_schmidt(pairs[..., 0], pairs[..., 1]), dim=-1)


def matrix_from_6d_prohmr(sixd: torch.Tensor) -> torch.Tensor:
    """(..., 6) in ProHMR's layout (column 0, then column 1) -> rotation matrices (..., 3, 3)."""
    _check(sixd)
    return torch.stack(_gram_schmidt(sixd[..., :3], sixd[..., 3:]), dim=-1)


def matrix_from_6d_pytorch3d(sixd: torch.Tensor) -> torch.Tensor:
    """(..., 6) in PyTorch3D's layout (row 0, then row 1) -> rotation matrices (..., 3, 3)."""
    _check(sixd)
    return torch.stack(_gram_schmidt(sixd[..., :3], sixd[..., 3:]), dim=-2)


def _check_matrix(matrix: torch.Tensor) -> None:
    if matrix.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrices must have shape (..., 3, 3), got {tuple(matrix.shape)}")


def matrix_to_6d_spin(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> (..., 6) in SPIN's layout."""
    _check_matrix(matrix)
    return matrix[..., :2].flatten(-2)


def matrix_to_6d_prohmr(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> (..., 6) in ProHMR's layout."""
    _check_matrix(matrix)
    return matrix[..., :2].transpose(-1, -2).flatten(-2)


def matrix_to_6d_pytorch3d(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> (..., 6) in PyTorch3D's layout."""
    _check_matrix(matrix)
    return matrix[..., :2, :].flatten(-2)


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> axis-angle (..., 3) with angle in [0, pi]; the inverse of
    :func:`rodrigues`.

    Stable everywhere: near the identity it uses the skew part (first order is exact to rounding),
    near pi it takes the axis from the symmetric part, whose largest column is the best-conditioned
    multiple of the axis.
    """
    _check_matrix(matrix)
    skew = torch.stack([matrix[..., 2, 1] - matrix[..., 1, 2], matrix[..., 0, 2] - matrix[..., 2, 0],
                        matrix[..., 1, 0] - matrix[..., 0, 1]], dim=-1)
    sin_angle = skew.norm(dim=-1) / 2
    cos_angle = ((matrix[..., 0, 0] + matrix[..., 1, 1] + matrix[..., 2, 2] - 1) / 2).clamp(-1, 1)
    angle = torch.atan2(sin_angle, cos_angle)
    # general case: axis = skew / (2 sin angle); the ratio angle / sin(angle) -> 1 as angle -> 0
    ratio = torch.where(sin_angle > 1e-7, angle / sin_angle.clamp(min=1e-12), torch.ones_like(angle))
    general = skew * (ratio / 2).unsqueeze(-1)
    # near pi: R + I = 2 a a^T (1 - cos) / ... ; the largest column of (R + R^T)/2 + (1 - cos) I ~ a a^T
    symmetric = (matrix + matrix.transpose(-1, -2)) / 2 - cos_angle[..., None, None] * torch.eye(
        3, dtype=matrix.dtype, device=matrix.device)
    column = symmetric.diagonal(dim1=-2, dim2=-1).argmax(dim=-1)
    axis = torch.gather(symmetric, -1, column[..., None, None].expand(*column.shape, 3, 1)).squeeze(-1)
    axis = F.normalize(axis, dim=-1)
    axis = torch.where((axis * skew).sum(-1, keepdim=True) < 0, -axis, axis)  # keep the skew part's sign
    near_pi = (cos_angle < -0.99).unsqueeze(-1)
    return torch.where(near_pi, axis * angle.unsqueeze(-1), general)
