// Torch binding of the SMPL CUDA kernels: checks, allocation, chunking, current stream.
// The blend-shape gradients are two GEMMs through ATen (cuBLAS, honouring torch's TF32 settings).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/mm.h>
#include <torch/library.h>

#include <algorithm>

#include "../common/cuda_binding.h"
#include "smpl_binding.h"
#include "smpl_cuda.h"

namespace meshrec {
namespace {

using smpl::kTransformSize;

// Bodies whose coefficients and transforms are held at once (~20 MB of workspace in float32).
constexpr int64_t kBodiesPerChunk = 8192;

template <typename T>
cuda::SMPLModelView<T> model_view(const SMPLSizes& s, const at::Tensor& blend_panels, const at::Tensor& joint_shapedirs,
                                  at::IntArrayRef parents, const at::Tensor& skin_joints,
                                  const at::Tensor& skin_weights) {
  cuda::SMPLModelView<T> m;
  m.blend_panels = blend_panels.defined() ? blend_panels.const_data_ptr<T>() : nullptr;
  m.joint_shapedirs = joint_shapedirs.const_data_ptr<T>();
  m.skin_joints = skin_joints.const_data_ptr<int32_t>();
  m.skin_weights = skin_weights.const_data_ptr<T>();
  m.num_betas = static_cast<int>(s.num_betas);
  m.num_joints = static_cast<int>(s.num_joints);
  m.num_vertices = static_cast<int>(s.num_vertices);
  m.skin_width = static_cast<int>(s.skin_width);
  std::fill(m.parents, m.parents + smpl::kMaxJoints, -1);
  for (int64_t j = 0; j < s.num_joints; ++j) m.parents[j] = static_cast<int>(parents[j]);
  return m;
}

template <typename T>
cuda::SMPLBodies<T> bodies_view(const SMPLSizes& s, const at::Tensor& betas, const at::Tensor& rotations,
                                const at::Tensor& joint_template, const at::Tensor& vertex_template,
                                const at::Tensor& transl, int64_t first, int64_t count) {
  cuda::SMPLBodies<T> b;
  const int64_t J = s.num_joints, V = s.num_vertices;
  b.betas = betas.const_data_ptr<T>() + first * s.num_betas;
  b.rotations = rotations.const_data_ptr<T>() + first * J * 9;
  b.joint_template_stride = s.batched_joint_template ? 3 * J : 0;
  b.joint_template = joint_template.const_data_ptr<T>() + first * b.joint_template_stride;
  b.vertex_template_stride = s.batched_vertex_template ? 3 * V : 0;
  b.vertex_template = vertex_template.defined()
                          ? vertex_template.const_data_ptr<T>() + first * b.vertex_template_stride
                          : nullptr;
  b.transl = transl.defined() ? transl.const_data_ptr<T>() + first * 3 : nullptr;
  b.count = count;
  return b;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> smpl_lbs_cuda(
    const at::Tensor& betas_in, const at::Tensor& rotations_in, const c10::optional<at::Tensor>& transl_in,
    const at::Tensor& vertex_template_in, const at::Tensor& joint_template_in, const at::Tensor& shapedirs_in,
    const at::Tensor& posedirs_in, const at::Tensor& blend_panels_in, const at::Tensor& joint_shapedirs_in,
    at::IntArrayRef parents, const at::Tensor& skin_joints_in, const at::Tensor& skin_weights_in,
    const at::Tensor& regressor_vertices_in, const at::Tensor& regressor_rows_in,
    const at::Tensor& regressor_weights_in, int64_t num_regressed, bool save_posed) {
  const SMPLSizes s = check_smpl_forward(betas_in, rotations_in, transl_in, vertex_template_in, joint_template_in,
                                         shapedirs_in, posedirs_in, blend_panels_in, joint_shapedirs_in, parents,
                                         skin_joints_in, skin_weights_in, regressor_vertices_in, regressor_rows_in,
                                         regressor_weights_in, num_regressed);
  const c10::cuda::CUDAGuard guard(betas_in.device());
  const at::Tensor betas = betas_in.contiguous(), rotations = rotations_in.contiguous();
  const at::Tensor vertex_template = vertex_template_in.contiguous(), joint_template = joint_template_in.contiguous();
  const at::Tensor blend_panels = blend_panels_in.contiguous(), joint_shapedirs = joint_shapedirs_in.contiguous();
  const at::Tensor skin_joints = skin_joints_in.contiguous(), skin_weights = skin_weights_in.contiguous();
  const at::Tensor regressor_vertices = regressor_vertices_in.contiguous();
  const at::Tensor regressor_rows = regressor_rows_in.contiguous();
  const at::Tensor regressor_weights = regressor_weights_in.contiguous();
  const at::Tensor transl = transl_in.has_value() ? transl_in->contiguous() : at::Tensor();

  const int64_t B = s.batch, V = s.num_vertices, J = s.num_joints, R = s.num_regressed;
  at::Tensor vertices = at::empty({B, V, 3}, betas.options());
  at::Tensor joints = at::empty({B, J + R, 3}, betas.options());
  at::Tensor posed = save_posed ? at::empty({B, V, 3}, betas.options()) : at::empty({0}, betas.options());
  if (B == 0) return {vertices, joints, posed};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES(betas.scalar_type(), "meshrec::smpl_lbs", [&] {
    using T = scalar_t;
    const cuda::SMPLModelView<T> model =
        model_view<T>(s, blend_panels, joint_shapedirs, parents, skin_joints, skin_weights);
    const int64_t K = s.num_betas + 9 * (J - 1);
    const int64_t chunk = std::min(B, kBodiesPerChunk);
    const int64_t grouped = (chunk + cuda::kSMPLGroup - 1) / cuda::kSMPLGroup * cuda::kSMPLGroup;
    at::Tensor workspace = at::empty({grouped * K + chunk * J * kTransformSize}, betas.options());
    T* coefficients = workspace.mutable_data_ptr<T>();
    T* transforms = coefficients + grouped * K;
    for (int64_t c0 = 0; c0 < B; c0 += chunk) {
      const int64_t n = std::min(chunk, B - c0);
      const cuda::SMPLBodies<T> bodies = bodies_view<T>(s, betas, rotations, joint_template, vertex_template, transl, c0, n);
      T* joints_ptr = joints.mutable_data_ptr<T>() + c0 * (J + R) * 3;
      T* vertices_ptr = vertices.mutable_data_ptr<T>() + c0 * 3 * V;
      check_launch(cuda::launch_smpl_prepare<T>(model, bodies, coefficients, transforms, joints_ptr, J + R, nullptr,
                                                nullptr, stream),
                   "smpl_lbs (prepare)");
      check_launch(cuda::launch_smpl_blend_skin<T>(model, bodies, coefficients, transforms, vertices_ptr,
                                                   save_posed ? posed.mutable_data_ptr<T>() + c0 * 3 * V : nullptr,
                                                   stream),
                   "smpl_lbs (blend and skin)");
      check_launch(cuda::launch_smpl_regress<T>(vertices_ptr, V, regressor_vertices.const_data_ptr<int32_t>(),
                                                regressor_rows.const_data_ptr<int32_t>(),
                                                regressor_weights.const_data_ptr<T>(), regressor_weights.numel(), R,
                                                joints_ptr + 3 * J, (J + R) * 3, n, stream),
                   "smpl_lbs (regressed joints)");
    }
  });
  return {vertices, joints, posed};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> smpl_lbs_backward_cuda(
    const at::Tensor& grad_vertices_in, const at::Tensor& grad_joints_in, const at::Tensor& betas_in,
    const at::Tensor& rotations_in, const at::Tensor& joint_template_in, const at::Tensor& shapedirs_in,
    const at::Tensor& posedirs_in, const at::Tensor& joint_shapedirs_in, at::IntArrayRef parents,
    const at::Tensor& skin_joints_in, const at::Tensor& skin_weights_in, const at::Tensor& regressor_vertices_in,
    const at::Tensor& regressor_rows_in, const at::Tensor& regressor_weights_in, const at::Tensor& posed_in) {
  const SMPLSizes s = check_smpl_backward(grad_vertices_in, grad_joints_in, betas_in, rotations_in, joint_template_in,
                                          shapedirs_in, posedirs_in, joint_shapedirs_in, parents, skin_joints_in,
                                          skin_weights_in, regressor_vertices_in, regressor_rows_in,
                                          regressor_weights_in, posed_in);
  const c10::cuda::CUDAGuard guard(betas_in.device());
  // An empty grad_vertices stands for zeros (the vertices were not used); the kernels read a
  // zeroed buffer then (one memset on the device).
  const at::Tensor grad_vertices =
      grad_vertices_in.numel() > 0 || betas_in.size(0) * skin_weights_in.size(0) == 0
          ? grad_vertices_in.contiguous()
          : at::zeros({betas_in.size(0), skin_weights_in.size(0), 3}, betas_in.options());
  const at::Tensor grad_joints = grad_joints_in.contiguous();
  const at::Tensor betas = betas_in.contiguous(), rotations = rotations_in.contiguous();
  const at::Tensor joint_template = joint_template_in.contiguous();
  const at::Tensor shapedirs = shapedirs_in.contiguous(), posedirs = posedirs_in.contiguous();
  const at::Tensor joint_shapedirs = joint_shapedirs_in.contiguous();
  const at::Tensor skin_joints = skin_joints_in.contiguous(), skin_weights = skin_weights_in.contiguous();
  const at::Tensor regressor_vertices = regressor_vertices_in.contiguous();
  const at::Tensor regressor_rows = regressor_rows_in.contiguous();
  const at::Tensor regressor_weights = regressor_weights_in.contiguous();
  const at::Tensor posed = posed_in.contiguous();

  const int64_t B = s.batch, V = s.num_vertices, J = s.num_joints, NB = s.num_betas;
  const int64_t joint_rows = J + s.num_regressed;
  at::Tensor grad_betas = at::empty({B, NB}, betas.options());
  at::Tensor grad_rotations = at::empty({B, J, 3, 3}, betas.options());
  at::Tensor grad_transl = at::empty({B, 3}, betas.options());
  at::Tensor grad_posed = at::empty({B, V, 3}, betas.options());
  at::Tensor grad_joint_template = at::empty({B, J, 3}, betas.options());
  if (B == 0) return {grad_betas, grad_rotations, grad_transl, grad_posed, grad_joint_template};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES(betas.scalar_type(), "meshrec::smpl_lbs_backward", [&] {
    using T = scalar_t;
    const cuda::SMPLModelView<T> model = model_view<T>(s, at::Tensor(), joint_shapedirs, parents, skin_joints, skin_weights);
    const int64_t chunk = std::min(B, kBodiesPerChunk);
    at::Tensor workspace = at::empty({chunk * J * (2 * kTransformSize + 9 + 3)}, betas.options());
    T* transforms = workspace.mutable_data_ptr<T>();
    T* grad_transforms = transforms + chunk * J * kTransformSize;
    T* global_rotations = grad_transforms + chunk * J * kTransformSize;
    T* rest = global_rotations + chunk * J * 9;
    for (int64_t c0 = 0; c0 < B; c0 += chunk) {
      const int64_t n = std::min(chunk, B - c0);
      const cuda::SMPLBodies<T> bodies = bodies_view<T>(s, betas, rotations, joint_template, at::Tensor(), at::Tensor(), c0, n);
      cuda::SMPLGradients<T> grads;
      grads.grad_vertices = grad_vertices.const_data_ptr<T>() + c0 * 3 * V;
      grads.grad_joints = grad_joints.const_data_ptr<T>() + c0 * joint_rows * 3;
      grads.joint_rows = joint_rows;
      grads.posed = posed.const_data_ptr<T>() + c0 * 3 * V;
      grads.regressor_vertices = regressor_vertices.const_data_ptr<int32_t>();
      grads.regressor_rows = regressor_rows.const_data_ptr<int32_t>();
      grads.regressor_weights = regressor_weights.const_data_ptr<T>();
      grads.regressor_entries = regressor_weights.numel();
      T* grad_transl_ptr = grad_transl.mutable_data_ptr<T>() + c0 * 3;
      check_launch(cuda::launch_smpl_prepare<T>(model, bodies, nullptr, transforms, nullptr, 0, global_rotations, rest,
                                                stream),
                   "smpl_lbs_backward (kinematics)");
      check_launch(cuda::launch_smpl_skin_backward<T>(model, grads, transforms, n,
                                                      grad_posed.mutable_data_ptr<T>() + c0 * 3 * V, stream),
                   "smpl_lbs_backward (skinning)");
      check_launch(cuda::launch_smpl_transform_backward<T>(model, grads, n, grad_transforms, grad_transl_ptr, stream),
                   "smpl_lbs_backward (transforms)");
      check_launch(cuda::launch_smpl_kinematics_backward<T>(
                       model, bodies, global_rotations, rest, grad_transforms, grads.grad_joints, joint_rows,
                       grad_rotations.mutable_data_ptr<T>() + c0 * J * 9,
                       grad_joint_template.mutable_data_ptr<T>() + c0 * J * 3,
                       grad_betas.mutable_data_ptr<T>() + c0 * NB, grad_transl_ptr, stream),
                   "smpl_lbs_backward (tree)");
    }
  });
  const at::Tensor grad_posed_rows = grad_posed.view({B, 3 * V});
  if (NB > 0) grad_betas.add_(at::mm(grad_posed_rows, shapedirs.t()));
  if (J > 1) grad_rotations.view({B, J * 9}).narrow(1, 9, 9 * (J - 1)).add_(at::mm(grad_posed_rows, posedirs.t()));
  return {grad_betas, grad_rotations, grad_transl, grad_posed, grad_joint_template};
}

at::Tensor joint_regression_cuda(const at::Tensor& vertices_in, const at::Tensor& vertex_ids_in,
                                 const at::Tensor& rows_in, const at::Tensor& weights_in, int64_t num_joints) {
  check_joint_regression(vertices_in, vertex_ids_in, rows_in, weights_in, num_joints);
  const c10::cuda::CUDAGuard guard(vertices_in.device());
  const at::Tensor vertices = vertices_in.contiguous(), vertex_ids = vertex_ids_in.contiguous();
  const at::Tensor rows = rows_in.contiguous(), weights = weights_in.contiguous();
  const int64_t B = vertices.size(0), V = vertices.size(1);
  at::Tensor joints = at::empty({B, num_joints, 3}, vertices.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(vertices.scalar_type(), "meshrec::joint_regression", [&] {
    check_launch(cuda::launch_smpl_regress<scalar_t>(vertices.const_data_ptr<scalar_t>(), V,
                                                     vertex_ids.const_data_ptr<int32_t>(), rows.const_data_ptr<int32_t>(),
                                                     weights.const_data_ptr<scalar_t>(), weights.numel(), num_joints,
                                                     joints.mutable_data_ptr<scalar_t>(), 3 * num_joints, B, stream),
                 "joint_regression");
  });
  return joints;
}

at::Tensor joint_regression_backward_cuda(const at::Tensor& grad_joints_in, const at::Tensor& vertex_ids_in,
                                          const at::Tensor& rows_in, const at::Tensor& weights_in,
                                          int64_t num_vertices) {
  check_joint_regression_backward(grad_joints_in, vertex_ids_in, rows_in, weights_in, num_vertices);
  const c10::cuda::CUDAGuard guard(grad_joints_in.device());
  const at::Tensor grad_joints = grad_joints_in.contiguous(), vertex_ids = vertex_ids_in.contiguous();
  const at::Tensor rows = rows_in.contiguous(), weights = weights_in.contiguous();
  const int64_t B = grad_joints.size(0), R = grad_joints.size(1);
  at::Tensor grad_vertices = at::empty({B, num_vertices, 3}, grad_joints.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(grad_joints.scalar_type(), "meshrec::joint_regression_backward", [&] {
    check_launch(cuda::launch_smpl_regress_transposed<scalar_t>(
                     grad_joints.const_data_ptr<scalar_t>(), R, vertex_ids.const_data_ptr<int32_t>(),
                     rows.const_data_ptr<int32_t>(), weights.const_data_ptr<scalar_t>(), weights.numel(), num_vertices,
                     grad_vertices.mutable_data_ptr<scalar_t>(), B, stream),
                 "joint_regression_backward");
  });
  return grad_vertices;
}

}  // namespace

TORCH_LIBRARY_IMPL(meshrec, CUDA, m) {
  m.impl("smpl_lbs", &smpl_lbs_cuda);
  m.impl("smpl_lbs_backward", &smpl_lbs_backward_cuda);
  m.impl("joint_regression", &joint_regression_cuda);
  m.impl("joint_regression_backward", &joint_regression_backward_cuda);
}

}  // namespace meshrec
