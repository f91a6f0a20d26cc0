"""Fake kernels and autograd of meshrec::rodrigues."""

from __future__ import annotations

import torch

from meshrec.ops._registrations.common import no_double_backward


@torch.library.register_fake("meshrec::rodrigues")
def _rodrigues_fake(axis_angle: torch.Tensor) -> torch.Tensor:
    torch._check(axis_angle.dim() >= 1 and axis_angle.size(-1) == 3, lambda: "axis_angle must be (..., 3)")
    torch._check(axis_angle.dtype in (torch.float32, torch.float64), lambda: "axis_angle must be float32/64")
    return axis_angle.new_empty((*axis_angle.shape[:-1], 3, 3))


@torch.library.register_fake("meshrec::rodrigues_backward")
def _rodrigues_backward_fake(grad_rotation: torch.Tensor, axis_angle: torch.Tensor) -> torch.Tensor:
    torch._check(grad_rotation.numel() == 3 * axis_angle.numel(), lambda: "grad_rotation must be (..., 3, 3)")
    return torch.empty_like(axis_angle, memory_format=torch.contiguous_format)


def _rodrigues_setup_context(ctx, inputs, output):
    (axis_angle,) = inputs
    ctx.save_for_backward(axis_angle)


def _rodrigues_backward(ctx, grad_rotation):
    (axis_angle,) = ctx.saved_tensors
    return torch.ops.meshrec.rodrigues_backward(grad_rotation, axis_angle)


torch.library.register_autograd(
    "meshrec::rodrigues", _rodrigues_backward, setup_context=_rodrigues_setup_context
)
torch.library.register_autograd(
    "meshrec::rodrigues_backward",
    no_double_backward("rodrigues"),
    setup_context=lambda ctx, inputs, output: None,
)
