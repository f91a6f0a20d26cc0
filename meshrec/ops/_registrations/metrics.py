"""Fake kernels and autograd of the metrics ops (procrustes, sample_sdf, winding_number,
nearest_points)."""

from __future__ import annotations

import torch

from meshrec.ops._registrations.common import no_double_backward

_FLOATING = (torch.float32, torch.float64)


# ---- procrustes


@torch.library.register_fake("meshrec::procrustes")
def _procrustes_fake(source, target, weights, scaling):
    torch._check(source.dim() >= 2 and source.size(-1) == 3, lambda: "source must be (..., N, 3)")
    torch._check(source.shape == target.shape, lambda: "source and target must have the same shape")
    torch._check(source.dtype in _FLOATING, lambda: "source must be float32 or float64")
    if weights is not None:
        torch._check(weights.shape == source.shape[:-1], lambda: "weights must be (..., N)")
    batch = source.shape[:-2]
    return (
        torch.empty_like(source, memory_format=torch.contiguous_format),
        source.new_empty(batch),
        source.new_empty((*batch, 3, 3)),
        source.new_empty((*batch, 3)),
        source.new_empty(source.shape[:-1]),
    )


@torch.library.register_fake("meshrec::procrustes_backward")
def _procrustes_backward_fake(grad_aligned, grad_scale, grad_rotation, grad_translation, grad_residual, source,
                              target, weights, scaling):
    if grad_aligned is not None:
        torch._check(grad_aligned.shape == source.shape, lambda: "grad_aligned must have the shape of source")
    return (
        torch.empty_like(source, memory_format=torch.contiguous_format),
        torch.empty_like(target, memory_format=torch.contiguous_format),
        source.new_empty(source.shape[:-1]),
    )


def _procrustes_setup_context(ctx, inputs, output):
    source, target, weights, scaling = inputs
    ctx.scaling = scaling
    ctx.has_weights = weights is not None
    ctx.set_materialize_grads(False)  # unused outputs' gradients stay None: the kernel skips them
    ctx.save_for_backward(source, target, weights)


def _procrustes_backward(ctx, grad_aligned, grad_scale, grad_rotation, grad_translation, grad_residual):
    source, target, weights = ctx.saved_tensors
    grad_source, grad_target, grad_weights = torch.ops.meshrec.procrustes_backward(
        grad_aligned, grad_scale, grad_rotation, grad_translation, grad_residual, source, target, weights, ctx.scaling
    )
    return grad_source, grad_target, grad_weights if ctx.has_weights else None, None


torch.library.register_autograd(
    "meshrec::procrustes", _procrustes_backward, setup_context=_procrustes_setup_context
)
torch.library.register_autograd(
    "meshrec::procrustes_backward",
    no_double_backward("procrustes"),
    setup_context=lambda ctx, inputs, output: None,
)


# ---- sample_sdf


@torch.library.register_fake("meshrec::sample_sdf")
def _sample_sdf_fake(points, sdf, grid_min, grid_max):
    torch._check(points.dim() >= 1 and points.size(-1) == 3, lambda: "points must be (..., 3)")
    torch._check(sdf.dim() == 3, lambda: "sdf must be (X, Y, Z)")
    return points.new_empty(points.shape[:-1])


@torch.library.register_fake("meshrec::sample_sdf_backward")
def _sample_sdf_backward_fake(grad_values, points, sdf, grid_min, grid_max):
    torch._check(grad_values.numel() * 3 == points.numel(), lambda: "grad_values must match points")
    return torch.empty_like(points, memory_format=torch.contiguous_format)


def _sample_sdf_setup_context(ctx, inputs, output):
    points, sdf, grid_min, grid_max = inputs
    ctx.grid = (list(grid_min), list(grid_max))
    ctx.save_for_backward(points, sdf)


def _sample_sdf_backward(ctx, grad_values):
    points, sdf = ctx.saved_tensors
    if ctx.needs_input_grad[1]:
        raise RuntimeError(
            "meshrec::sample_sdf is differentiable with respect to the points only; detach the sdf grid "
            "(or use meshrec.ops.reference.sample_sdf for gradients with respect to the grid)."
        )
    grad_points = torch.ops.meshrec.sample_sdf_backward(grad_values.contiguous(), points, sdf, *ctx.grid)
    return grad_points, None, None, None


torch.library.register_autograd(
    "meshrec::sample_sdf", _sample_sdf_backward, setup_context=_sample_sdf_setup_context
)
torch.library.register_autograd(
    "meshrec::sample_sdf_backward",
    no_double_backward("sample_sdf"),
    setup_context=lambda ctx, inputs, output: None,
)


# ---- winding_number and nearest_points: piecewise constant / index outputs, not differentiable
# (meshrec.ops.nearest_points recomputes differentiable distances from the indices).


@torch.library.register_fake("meshrec::winding_number")
def _winding_number_fake(points, vertices, faces):
    torch._check(vertices.dim() == 3 and vertices.size(2) == 3, lambda: "vertices must be (B, V, 3)")
    torch._check(points.dim() == 3 and points.size(2) == 3, lambda: "points must be (B, P, 3)")
    return vertices.new_empty((vertices.shape[0], points.shape[1]))


@torch.library.register_fake("meshrec::nearest_points")
def _nearest_points_fake(queries, points):
    torch._check(queries.dim() == 3 and queries.size(2) == 3, lambda: "queries must be (B, Q, 3)")
    torch._check(points.dim() == 3 and points.size(2) == 3, lambda: "points must be (B, P, 3)")
    shape = (queries.shape[0], queries.shape[1])
    return queries.new_empty(shape), queries.new_empty(shape, dtype=torch.long)
