"""Fake kernels of meshrec::rodrigues (its autograd is in C++, csrc/rotation/rodrigues_autograd.cpp)."""

from __future__ import annotations

import torch


@torch.library.register_fake("meshrec::rodrigues")
def _rodrigues_fake(axis_angle: torch.Tensor) -> torch.Tensor:
    torch._check(axis_angle.dim() >= 1 and axis_angle.size(-1) == 3, lambda: "axis_angle must be (..., 3)")
    torch._check(axis_angle.dtype in (torch.float32, torch.float64), lambda: "axis_angle must be float32/64")
    return axis_angle.new_empty((*axis_angle.shape[:-1], 3, 3))


@torch.library.register_fake("meshrec::rodrigues_backward")
def _rodrigues_backward_fake(grad_rotation: torch.Tensor, axis_angle: torch.Tensor) -> torch.Tensor:
    torch._check(grad_rotation.numel() == 3 * axis_angle.numel(), lambda: "grad_rotation must be (..., 3, 3)")
    return torch.empty_like(axis_angle, memory_format=torch.contiguous_format)


# The autograd of meshrec::rodrigues and rodrigues_backward is registered in C++
# (csrc/rotation/rodrigues_autograd.cpp): from Python it cost more per call than the kernels.
