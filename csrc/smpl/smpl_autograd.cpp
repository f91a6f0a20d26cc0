// Autograd of meshrec::smpl_lbs (and a guard against the double backward), in C++.
//
// The op's gradient used to be registered from Python (torch.library.register_autograd); each
// call then ran ~200 us of Python glue around ~50 us of kernels. A fitting loop calls SMPL a few
// hundred times on one body, where that glue was a fifth of the fit, so the formula lives here.
// Fake kernels stay in Python (meshrec/ops/_registrations/smpl.py).
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/zeros.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <vector>

namespace meshrec {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// smpl_lbs's arguments by position (the schema's order, csrc/ops.cpp).
enum Argument : int {
  kBetas, kRotations, kTransl, kVertexTemplate, kJointTemplate, kShapedirs, kPosedirs, kBlendPanels,
  kJointShapedirs, kParents, kSkinJoints, kSkinWeights, kRegressorVertices, kRegressorRows, kRegressorWeights,
  kNumRegressed, kSavePosed, kArgumentCount
};

using ForwardSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, c10::IntArrayRef, const at::Tensor&,
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, bool);
using BackwardSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const at::Tensor&, c10::IntArrayRef, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const at::Tensor&, const at::Tensor&);

const c10::TypedOperatorHandle<ForwardSignature>& forward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("meshrec::smpl_lbs", "").typed<ForwardSignature>();
  return op;
}

const c10::TypedOperatorHandle<BackwardSignature>& backward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("meshrec::smpl_lbs_backward", "").typed<BackwardSignature>();
  return op;
}

class SMPLLbsBackward : public torch::autograd::Function<SMPLLbsBackward> {
 public:
  // The backward op's inputs, passed through; its outputs get a gradient function that refuses a
  // second differentiation.
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad_vertices, const at::Tensor& grad_joints,
                               const at::Tensor& betas, const at::Tensor& rotations, const at::Tensor& joint_template,
                               const at::Tensor& shapedirs, const at::Tensor& posedirs,
                               const at::Tensor& joint_shapedirs, c10::IntArrayRef parents,
                               const at::Tensor& skin_joints, const at::Tensor& skin_weights,
                               const at::Tensor& regressor_vertices, const at::Tensor& regressor_rows,
                               const at::Tensor& regressor_weights, const at::Tensor& posed) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [a, b, c, d, e] = backward_op().call(grad_vertices, grad_joints, betas, rotations, joint_template, shapedirs,
                                              posedirs, joint_shapedirs, parents, skin_joints, skin_weights,
                                              regressor_vertices, regressor_rows, regressor_weights, posed);
    return {a, b, c, d, e};
  }

  static variable_list backward(AutogradContext*, variable_list) {
    TORCH_CHECK(false, "meshrec::smpl_lbs has no double backward (gradients of its gradient). "
                       "Use the pure-PyTorch reference in meshrec.ops.reference for higher-order derivatives.");
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> smpl_lbs_backward_autograd(
    const at::Tensor& grad_vertices, const at::Tensor& grad_joints, const at::Tensor& betas,
    const at::Tensor& rotations, const at::Tensor& joint_template, const at::Tensor& shapedirs,
    const at::Tensor& posedirs, const at::Tensor& joint_shapedirs, c10::IntArrayRef parents,
    const at::Tensor& skin_joints, const at::Tensor& skin_weights, const at::Tensor& regressor_vertices,
    const at::Tensor& regressor_rows, const at::Tensor& regressor_weights, const at::Tensor& posed) {
  const variable_list out = SMPLLbsBackward::apply(grad_vertices, grad_joints, betas, rotations, joint_template,
                                                   shapedirs, posedirs, joint_shapedirs, parents, skin_joints,
                                                   skin_weights, regressor_vertices, regressor_rows,
                                                   regressor_weights, posed);
  return {out[0], out[1], out[2], out[3], out[4]};
}

class SMPLLbs : public torch::autograd::Function<SMPLLbs> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& betas, const at::Tensor& rotations,
                               const std::optional<at::Tensor>& transl, const at::Tensor& vertex_template,
                               const at::Tensor& joint_template, const at::Tensor& shapedirs,
                               const at::Tensor& posedirs, const at::Tensor& blend_panels,
                               const at::Tensor& joint_shapedirs, c10::IntArrayRef parents,
                               const at::Tensor& skin_joints, const at::Tensor& skin_weights,
                               const at::Tensor& regressor_vertices, const at::Tensor& regressor_rows,
                               const at::Tensor& regressor_weights, int64_t num_regressed, bool save_posed) {
    at::Tensor vertices, joints, posed;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(vertices, joints, posed) = forward_op().call(
          betas, rotations, transl, vertex_template, joint_template, shapedirs, posedirs, blend_panels,
          joint_shapedirs, parents, skin_joints, skin_weights, regressor_vertices, regressor_rows, regressor_weights,
          num_regressed, save_posed);
    }
    ctx->mark_non_differentiable({posed});
    ctx->saved_data["parents"] = parents.vec();
    ctx->saved_data["num_regressed"] = num_regressed;
    ctx->saved_data["has_transl"] = transl.has_value() && transl->defined();
    // Sizes through sym_size: under torch.compile with dynamic shapes they are symbolic.
    ctx->saved_data["shared_vertex_template"] = vertex_template.sym_size(0) == 1;
    ctx->saved_data["shared_joint_template"] = joint_template.sym_size(0) == 1;
    ctx->save_for_backward({betas, rotations, joint_template, shapedirs, posedirs, joint_shapedirs, skin_joints,
                            skin_weights, regressor_vertices, regressor_rows, regressor_weights, posed});
    return {vertices, joints, posed};
  }

  // needs_input_grad counts the tensor arguments only (the edges of the graph): transl when given,
  // not parents, num_regressed or save_posed.
  static bool needs(AutogradContext* ctx, int argument) {
    const bool has_transl = ctx->saved_data["has_transl"].toBool();
    if (argument == kTransl && !has_transl) return false;
    const int edge = argument - (argument > kTransl && !has_transl ? 1 : 0) - (argument > kParents ? 1 : 0);
    return ctx->needs_input_grad(edge);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& betas = saved[0];
    const at::Tensor& posed = saved[11];
    static const std::pair<int, const char*> model_arrays[] = {
        {kShapedirs, "shapedirs"}, {kPosedirs, "posedirs"}, {kBlendPanels, "blend_panels"},
        {kJointShapedirs, "joint_shapedirs"}, {kSkinWeights, "skin_weights"}, {kRegressorWeights, "regressor_weights"}};
    std::string wrong;
    for (const auto& [index, name] : model_arrays) {
      if (needs(ctx, index)) wrong += std::string(wrong.empty() ? "" : ", ") + name;
    }
    TORCH_CHECK(wrong.empty(), "meshrec::smpl_lbs has no gradient with respect to the model arrays (", wrong,
                "); use meshrec.ops.reference.smpl_lbs to learn them");
    const c10::SymInt batch = betas.sym_size(0);
    TORCH_CHECK(posed.sym_numel() != 0 || batch == 0,
                "meshrec::smpl_lbs was called with save_posed=False, so it kept nothing to differentiate; call it "
                "through meshrec.ops.smpl_lbs, which sets save_posed when a gradient is needed");
    const std::vector<int64_t> parents = ctx->saved_data["parents"].toIntVector();
    const int64_t num_regressed = ctx->saved_data["num_regressed"].toInt();
    // Unused outputs: an empty vertex gradient stands for zeros (the kernels skip it); the joint
    // gradient is small and zero-filled.
    at::Tensor grad_vertices = grads[0].defined() ? grads[0] : betas.new_empty({0});
    at::Tensor grad_joints =
        grads[1].defined()
            ? grads[1]
            : at::zeros_symint({batch, c10::SymInt(static_cast<int64_t>(parents.size()) + num_regressed), c10::SymInt(3)},
                               betas.options());
    auto [grad_betas, grad_rotations, grad_transl, grad_vertex_template, grad_joint_template] = backward_op().call(
        grad_vertices, grad_joints, betas, saved[1], saved[2], saved[3], saved[4], saved[5], parents, saved[6],
        saved[7], saved[8], saved[9], saved[10], posed);
    if (ctx->saved_data["shared_vertex_template"].toBool() && needs(ctx, kVertexTemplate)) {
      grad_vertex_template = grad_vertex_template.sum(0, /*keepdim=*/true);
    }
    if (ctx->saved_data["shared_joint_template"].toBool() && needs(ctx, kJointTemplate)) {
      grad_joint_template = grad_joint_template.sum(0, /*keepdim=*/true);
    }
    variable_list out(kArgumentCount);
    if (needs(ctx, kBetas)) out[kBetas] = grad_betas;
    if (needs(ctx, kRotations)) out[kRotations] = grad_rotations;
    if (needs(ctx, kTransl)) out[kTransl] = grad_transl;
    if (needs(ctx, kVertexTemplate)) out[kVertexTemplate] = grad_vertex_template;
    if (needs(ctx, kJointTemplate)) out[kJointTemplate] = grad_joint_template;
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> smpl_lbs_autograd(
    const at::Tensor& betas, const at::Tensor& rotations, const std::optional<at::Tensor>& transl,
    const at::Tensor& vertex_template, const at::Tensor& joint_template, const at::Tensor& shapedirs,
    const at::Tensor& posedirs, const at::Tensor& blend_panels, const at::Tensor& joint_shapedirs,
    c10::IntArrayRef parents, const at::Tensor& skin_joints, const at::Tensor& skin_weights,
    const at::Tensor& regressor_vertices, const at::Tensor& regressor_rows, const at::Tensor& regressor_weights,
    int64_t num_regressed, bool save_posed) {
  const variable_list out =
      SMPLLbs::apply(betas, rotations, transl, vertex_template, joint_template, shapedirs, posedirs, blend_panels,
                     joint_shapedirs, parents, skin_joints, skin_weights, regressor_vertices, regressor_rows,
                     regressor_weights, num_regressed, save_posed);
  return {out[0], out[1], out[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(meshrec, Autograd, m) {
  m.impl("smpl_lbs", &smpl_lbs_autograd);
  m.impl("smpl_lbs_backward", &smpl_lbs_backward_autograd);
}

}  // namespace meshrec
