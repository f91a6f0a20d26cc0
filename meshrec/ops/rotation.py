"""Rotation ops."""

from __future__ import annotations

import torch

from meshrec.extension import use_compiled
from meshrec.ops import reference

__all__ = ["rodrigues"]


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
    if use_compiled(axis_angle):
        return torch.ops.meshrec.rodrigues(axis_angle)
    return reference.rodrigues(axis_angle)
