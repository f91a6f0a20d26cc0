"""Fake kernels of meshrec::smpl_lbs (its autograd is in C++, csrc/smpl/smpl_autograd.cpp) and the fake
kernels and autograd of meshrec::joint_regression."""

from __future__ import annotations

import torch

from meshrec.ops._registrations.common import no_double_backward


@torch.library.register_fake("meshrec::smpl_lbs")
def _smpl_lbs_fake(betas, rotations, transl, vertex_template, joint_template, shapedirs, posedirs, blend_panels,
                   joint_shapedirs, parents, skin_joints, skin_weights, regressor_vertices, regressor_rows, regressor_weights,
                   num_regressed, save_posed):
    batch, num_joints, num_vertices = betas.shape[0], len(parents), skin_weights.shape[0]
    torch._check(betas.dim() == 2, lambda: "betas must be (B, NB)")
    torch._check(rotations.shape == (batch, num_joints, 3, 3), lambda: "rotations must be (B, J, 3, 3)")
    torch._check(vertex_template.dim() == 3 and vertex_template.shape[1:] == (num_vertices, 3),
                 lambda: "vertex_template must be (1 or B, V, 3)")
    torch._check(posedirs.shape == (9 * (num_joints - 1), 3 * num_vertices), lambda: "posedirs must be (9 (J-1), 3V)")
    vertices = betas.new_empty((batch, num_vertices, 3))
    joints = betas.new_empty((batch, num_joints + num_regressed, 3))
    posed = betas.new_empty((batch, num_vertices, 3) if save_posed else (0,))
    return vertices, joints, posed


@torch.library.register_fake("meshrec::smpl_lbs_backward")
def _smpl_lbs_backward_fake(grad_vertices, grad_joints, betas, rotations, joint_template, shapedirs, posedirs,
                            joint_shapedirs, parents, skin_joints, skin_weights, regressor_vertices, regressor_rows,
                            regressor_weights, posed_template):
    batch, num_joints = betas.shape[0], len(parents)
    torch._check(grad_vertices.numel() == 0 or posed_template.shape == grad_vertices.shape,
                 lambda: "posed_template must be (B, V, 3) like grad_vertices (empty: zeros)")
    grad_vertices = posed_template
    return (betas.new_empty(betas.shape), betas.new_empty((batch, num_joints, 3, 3)), betas.new_empty((batch, 3)),
            betas.new_empty(grad_vertices.shape), betas.new_empty((batch, num_joints, 3)))


# The autograd of meshrec::smpl_lbs and smpl_lbs_backward is registered in C++
# (csrc/smpl/smpl_autograd.cpp): a fitting loop calls SMPL hundreds of times on one body, and
# the Python glue of a registered formula cost ~200 us per call, several times the kernels.


@torch.library.register_fake("meshrec::joint_regression")
def _joint_regression_fake(vertices, vertex_ids, rows, weights, num_joints):
    torch._check(vertices.dim() == 3 and vertices.shape[2] == 3, lambda: "vertices must be (B, V, 3)")
    return vertices.new_empty((vertices.shape[0], num_joints, 3))


@torch.library.register_fake("meshrec::joint_regression_backward")
def _joint_regression_backward_fake(grad_joints, vertex_ids, rows, weights, num_vertices):
    return grad_joints.new_empty((grad_joints.shape[0], num_vertices, 3))


def _joint_regression_setup_context(ctx, inputs, output):
    vertices, vertex_ids, rows, weights, _ = inputs
    ctx.num_vertices = vertices.shape[1]
    ctx.save_for_backward(vertex_ids, rows, weights)


def _joint_regression_backward(ctx, grad_joints):
    if ctx.needs_input_grad[3]:
        raise RuntimeError("meshrec::joint_regression has no gradient with respect to the regressor's weights; "
                           "use meshrec.ops.reference.joint_regression to learn them")
    vertex_ids, rows, weights = ctx.saved_tensors
    grad = torch.ops.meshrec.joint_regression_backward(grad_joints, vertex_ids, rows, weights, ctx.num_vertices)
    return grad, None, None, None, None


torch.library.register_autograd("meshrec::joint_regression", _joint_regression_backward,
                                setup_context=_joint_regression_setup_context)
torch.library.register_autograd(
    "meshrec::joint_regression_backward", no_double_backward("joint_regression"),
    setup_context=lambda ctx, inputs, output: None,
)
