"""Fake kernels and autograd of meshrec::smpl_lbs and meshrec::joint_regression."""

from __future__ import annotations

import torch

from meshrec.ops._registrations.common import no_double_backward

# smpl_lbs's inputs by position (the schema's order, csrc/ops.cpp)
(_BETAS, _ROTATIONS, _TRANSL, _VERTEX_TEMPLATE, _JOINT_TEMPLATE, _SHAPEDIRS, _POSEDIRS, _BLEND_PANELS,
 _JOINT_SHAPEDIRS, _PARENTS, _SKIN_JOINTS, _SKIN_WEIGHTS, _REGRESSOR_VERTICES, _REGRESSOR_ROWS, _REGRESSOR_WEIGHTS,
 _NUM_REGRESSED, _SAVE_POSED) = range(17)
_MODEL_ARRAYS = {_SHAPEDIRS: "shapedirs", _POSEDIRS: "posedirs", _BLEND_PANELS: "blend_panels",
                 _JOINT_SHAPEDIRS: "joint_shapedirs", _SKIN_WEIGHTS: "skin_weights",
                 _REGRESSOR_WEIGHTS: "regressor_weights"}


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


def _smpl_lbs_setup_context(ctx, inputs, output):
    ctx.parents = inputs[_PARENTS]
    ctx.num_regressed = inputs[_NUM_REGRESSED]
    ctx.has_transl = inputs[_TRANSL] is not None
    ctx.shared_vertex_template = inputs[_VERTEX_TEMPLATE].shape[0] == 1
    ctx.shared_joint_template = inputs[_JOINT_TEMPLATE].shape[0] == 1
    ctx.mark_non_differentiable(output[2])
    ctx.save_for_backward(*(inputs[i] for i in (_BETAS, _ROTATIONS, _JOINT_TEMPLATE, _SHAPEDIRS, _POSEDIRS,
                                                _JOINT_SHAPEDIRS, _SKIN_JOINTS, _SKIN_WEIGHTS, _REGRESSOR_VERTICES,
                                                _REGRESSOR_ROWS, _REGRESSOR_WEIGHTS)), output[2])


def _smpl_lbs_backward(ctx, grad_vertices, grad_joints, _grad_posed):
    (betas, rotations, joint_template, shapedirs, posedirs, joint_shapedirs, skin_joints, skin_weights,
     regressor_vertices, regressor_rows, regressor_weights, posed) = ctx.saved_tensors
    needs = ctx.needs_input_grad
    wrong = [name for index, name in _MODEL_ARRAYS.items() if needs[index]]
    if wrong:
        raise RuntimeError(f"meshrec::smpl_lbs has no gradient with respect to the model arrays ({', '.join(wrong)}); "
                           "use meshrec.ops.reference.smpl_lbs to learn them")
    batch = betas.shape[0]
    if posed.numel() == 0 and batch > 0:
        raise RuntimeError("meshrec::smpl_lbs was called with save_posed=False, so it kept nothing to differentiate; "
                           "call it through meshrec.ops.smpl_lbs, which sets save_posed when a gradient is needed")
    if grad_vertices is None:
        # The vertices were not used: an empty tensor stands for their zero gradient, which the
        # kernels skip instead of reading a (B, V, 3) buffer of zeros.
        grad_vertices = betas.new_empty((0,))
    if grad_joints is None:
        grad_joints = betas.new_zeros((batch, len(ctx.parents) + ctx.num_regressed, 3))
    grad_betas, grad_rotations, grad_transl, grad_vertex_template, grad_joint_template = (
        torch.ops.meshrec.smpl_lbs_backward(
            grad_vertices, grad_joints, betas, rotations, joint_template, shapedirs, posedirs, joint_shapedirs,
            ctx.parents, skin_joints, skin_weights, regressor_vertices, regressor_rows, regressor_weights, posed))
    if ctx.shared_vertex_template and needs[_VERTEX_TEMPLATE]:
        grad_vertex_template = grad_vertex_template.sum(0, keepdim=True)
    if ctx.shared_joint_template and needs[_JOINT_TEMPLATE]:
        grad_joint_template = grad_joint_template.sum(0, keepdim=True)
    return (
        grad_betas if needs[_BETAS] else None,
        grad_rotations if needs[_ROTATIONS] else None,
        grad_transl if ctx.has_transl and needs[_TRANSL] else None,
        grad_vertex_template if needs[_VERTEX_TEMPLATE] else None,
        grad_joint_template if needs[_JOINT_TEMPLATE] else None,
    ) + (None,) * 12


torch.library.register_autograd("meshrec::smpl_lbs", _smpl_lbs_backward, setup_context=_smpl_lbs_setup_context)
torch.library.register_autograd(
    "meshrec::smpl_lbs_backward", no_double_backward("smpl_lbs"), setup_context=lambda ctx, inputs, output: None
)


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
