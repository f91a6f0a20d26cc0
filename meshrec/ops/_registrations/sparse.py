"""Fake kernels and autograd of the sparse-voxel ops (meshrec::sparse_*).

The sizes that depend on the data (the number of unique voxels) are unbacked symbolic sizes, as
torchvision's nms does, so torch.compile traces through voxelisation and downsampling; every
other shape follows from the input shapes.
"""

from __future__ import annotations

import torch


@torch.library.register_fake("meshrec::sparse_unique_coords")
def _unique_coords_fake(coords, stride, truncate, hash_capacity):
    torch._check(coords.dim() == 2 and coords.size(1) == 4, lambda: "coords must be (N, 4)")
    torch._check(coords.dtype == torch.int32, lambda: "coords must be int32")
    count = torch.library.get_ctx().new_dynamic_size()
    return coords.new_empty((count, 4)), coords.new_empty((coords.size(0),), dtype=torch.int64)


@torch.library.register_fake("meshrec::sparse_kernel_map")
def _kernel_map_fake(in_coords, out_coords, offsets, hash_capacity):
    torch._check(offsets.dim() == 2 and offsets.size(1) == 3, lambda: "offsets must be (K, 3)")
    return out_coords.new_empty((out_coords.size(0), offsets.size(0)))


@torch.library.register_fake("meshrec::sparse_invert_map")
def _invert_map_fake(neighbors, num_inputs):
    return neighbors.new_empty((num_inputs, neighbors.size(1)))


@torch.library.register_fake("meshrec::sparse_conv")
def _conv_fake(features, weight, neighbors, reverse_neighbors):
    torch._check(weight.dim() == 3 and weight.size(1) == features.size(1), lambda: "weight must be (K, C_in, C_out)")
    torch._check(neighbors.size(1) == weight.size(0), lambda: "neighbors must have K columns")
    return features.new_empty((neighbors.size(0), weight.size(2)))


@torch.library.register_fake("meshrec::sparse_conv_weight_grad")
def _conv_weight_grad_fake(features, grad_output, neighbors, reverse_neighbors):
    return features.new_empty((neighbors.size(1), features.size(1), grad_output.size(1)))


@torch.library.register_fake("meshrec::sparse_voxel_pool")
def _voxel_pool_fake(features, point_to_voxel, num_voxels, reduction):
    return features.new_empty((num_voxels, features.size(1)))


@torch.library.register_fake("meshrec::sparse_voxel_pool_backward")
def _voxel_pool_backward_fake(grad_output, point_to_voxel, reduction):
    return grad_output.new_empty((point_to_voxel.size(0), grad_output.size(1)))


@torch.library.register_fake("meshrec::sparse_devoxelize")
def _devoxelize_fake(features, indices, weights):
    return features.new_empty((indices.size(0), features.size(1)))


@torch.library.register_fake("meshrec::sparse_devoxelize_backward")
def _devoxelize_backward_fake(grad_output, indices, weights, num_voxels):
    return grad_output.new_empty((num_voxels, grad_output.size(1)))


# ---- autograd ------------------------------------------------------------------------------------
# The gradients of the convolution are convolutions over the same two tables, so they are
# differentiable again (double backward works); the same holds for pooling and devoxelisation,
# whose backward ops are linear maps with the forward op as adjoint.


def _save_tensors(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _save_pool_context(ctx, inputs, output):
    features, point_to_voxel, num_voxels, reduction = inputs
    ctx.save_for_backward(point_to_voxel)
    ctx.reduction = reduction


def _save_pool_backward_context(ctx, inputs, output):
    grad_output, point_to_voxel, reduction = inputs
    ctx.save_for_backward(point_to_voxel)
    ctx.num_voxels, ctx.reduction = grad_output.size(0), reduction


def _save_devoxelize_backward_context(ctx, inputs, output):
    grad_output, indices, weights, num_voxels = inputs
    ctx.save_for_backward(grad_output, indices, weights)


def _conv_backward(ctx, grad_output):
    features, weight, neighbors, reverse_neighbors = ctx.saved_tensors
    grad_output = grad_output.contiguous()
    grad_features = grad_weight = None
    if ctx.needs_input_grad[0]:
        grad_features = torch.ops.meshrec.sparse_conv(grad_output, weight.transpose(1, 2), reverse_neighbors, neighbors)
    if ctx.needs_input_grad[1]:
        grad_weight = torch.ops.meshrec.sparse_conv_weight_grad(features, grad_output, neighbors, reverse_neighbors)
    return grad_features, grad_weight, None, None


def _conv_weight_grad_backward(ctx, grad_grad_weight):
    # grad_weight[k] = sum_r features[neighbors[r, k]]^T grad_output[r] is bilinear; its two
    # partial adjoints are again sparse convolutions.
    features, grad_output, neighbors, reverse_neighbors = ctx.saved_tensors
    grad_features = grad_grad_output = None
    if ctx.needs_input_grad[0]:
        grad_features = torch.ops.meshrec.sparse_conv(
            grad_output.contiguous(), grad_grad_weight.transpose(1, 2), reverse_neighbors, neighbors
        )
    if ctx.needs_input_grad[1]:
        grad_grad_output = torch.ops.meshrec.sparse_conv(features, grad_grad_weight, neighbors, reverse_neighbors)
    return grad_features, grad_grad_output, None, None


def _voxel_pool_backward(ctx, grad_output):
    (point_to_voxel,) = ctx.saved_tensors
    grad = torch.ops.meshrec.sparse_voxel_pool_backward(grad_output.contiguous(), point_to_voxel, ctx.reduction)
    return grad, None, None, None


def _voxel_pool_backward_backward(ctx, grad_grad):
    (point_to_voxel,) = ctx.saved_tensors
    # The backward spreads each voxel's gradient to its points (scaled by 1/count for the mean);
    # its adjoint gathers them back, which is the forward pooling.
    grad = torch.ops.meshrec.sparse_voxel_pool(grad_grad.contiguous(), point_to_voxel, ctx.num_voxels, ctx.reduction)
    return grad, None, None


def _devoxelize_backward(ctx, grad_output):
    features, indices, weights = ctx.saved_tensors
    grad_output = grad_output.contiguous()
    grad_features = grad_weights = None
    if ctx.needs_input_grad[0]:
        grad_features = torch.ops.meshrec.sparse_devoxelize_backward(grad_output, indices, weights, features.size(0))
    if ctx.needs_input_grad[2]:
        # d out[n] / d weights[n, j] = features[indices[n, j]]: a per-tap dot product.
        padded = torch.cat([features, features.new_zeros(1, features.size(1))])
        rows = torch.where(indices >= 0, indices.long(), features.size(0))
        grad_weights = (padded[rows] * grad_output[:, None, :]).sum(-1)
    return grad_features, None, grad_weights


def _devoxelize_backward_backward(ctx, grad_grad):
    grad_output, indices, weights = ctx.saved_tensors
    grad_grad_output = grad_weights = None
    if ctx.needs_input_grad[0]:
        grad_grad_output = torch.ops.meshrec.sparse_devoxelize(grad_grad.contiguous(), indices, weights)
    if ctx.needs_input_grad[2]:
        padded = torch.cat([grad_grad, grad_grad.new_zeros(1, grad_grad.size(1))])
        rows = torch.where(indices >= 0, indices.long(), grad_grad.size(0))
        grad_weights = (padded[rows] * grad_output[:, None, :]).sum(-1)
    return grad_grad_output, None, grad_weights, None


torch.library.register_autograd("meshrec::sparse_conv", _conv_backward, setup_context=_save_tensors)
torch.library.register_autograd(
    "meshrec::sparse_conv_weight_grad", _conv_weight_grad_backward, setup_context=_save_tensors
)
torch.library.register_autograd("meshrec::sparse_voxel_pool", _voxel_pool_backward, setup_context=_save_pool_context)
torch.library.register_autograd(
    "meshrec::sparse_voxel_pool_backward", _voxel_pool_backward_backward, setup_context=_save_pool_backward_context
)
torch.library.register_autograd("meshrec::sparse_devoxelize", _devoxelize_backward, setup_context=_save_tensors)
torch.library.register_autograd(
    "meshrec::sparse_devoxelize_backward",
    _devoxelize_backward_backward,
    setup_context=_save_devoxelize_backward_context,
)
