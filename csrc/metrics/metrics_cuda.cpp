// Torch binding of the metrics CUDA kernels: checks, allocation (outputs and grid scratch
// space, sized from shapes alone), current stream. No host synchronisation.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <tuple>

#include "../common/cuda_binding.h"
#include "metrics_binding.h"
#include "metrics_cuda.h"

namespace meshrec {
namespace {

int64_t point_sets(const at::Tensor& points) {
  int64_t sets = 1;
  for (int64_t d = 0; d < points.dim() - 2; ++d) sets *= points.size(d);
  return sets;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> procrustes_cuda(const at::Tensor& source,
                                                                           const at::Tensor& target,
                                                                           const c10::optional<at::Tensor>& weights,
                                                                           bool scaling) {
  check_procrustes_inputs(source, target, weights);
  const c10::cuda::CUDAGuard guard(source.device());
  const at::Tensor x = source.contiguous(), y = target.contiguous();
  const at::Tensor w = weights.has_value() ? weights->contiguous() : at::Tensor();
  at::Tensor aligned = at::empty_like(x);
  at::Tensor scale = at::empty(procrustes_batch_shape(x), x.options());
  at::Tensor rotation = at::empty(procrustes_batch_shape(x, 3, 3), x.options());
  at::Tensor translation = at::empty(procrustes_batch_shape(x, 3), x.options());
  at::Tensor residual = at::empty(procrustes_batch_shape(x, x.size(-2)), x.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "meshrec::procrustes", [&] {
    check_launch(cuda::launch_procrustes<scalar_t>(
                     x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
                     w.defined() ? w.const_data_ptr<scalar_t>() : nullptr, point_sets(x), x.size(-2), scaling,
                     aligned.mutable_data_ptr<scalar_t>(), scale.mutable_data_ptr<scalar_t>(),
                     rotation.mutable_data_ptr<scalar_t>(), translation.mutable_data_ptr<scalar_t>(),
                     residual.mutable_data_ptr<scalar_t>(), stream),
                 "procrustes");
  });
  return {aligned, scale, rotation, translation, residual};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> procrustes_backward_cuda(
    const c10::optional<at::Tensor>& grad_aligned, const c10::optional<at::Tensor>& grad_scale,
    const c10::optional<at::Tensor>& grad_rotation, const c10::optional<at::Tensor>& grad_translation,
    const c10::optional<at::Tensor>& grad_residual, const at::Tensor& source, const at::Tensor& target,
    const c10::optional<at::Tensor>& weights, bool scaling) {
  const ProcrustesGradients given{grad_aligned, grad_scale, grad_rotation, grad_translation, grad_residual};
  check_procrustes_backward_inputs(given, source, target, weights);
  const c10::cuda::CUDAGuard guard(source.device());
  const ProcrustesGradients grads = contiguous(given);
  const at::Tensor x = source.contiguous(), y = target.contiguous();
  const at::Tensor w = weights.has_value() ? weights->contiguous() : at::Tensor();
  at::Tensor grad_source = at::empty_like(x), grad_target = at::empty_like(y);
  at::Tensor grad_weights = at::empty(procrustes_batch_shape(x, x.size(-2)), x.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "meshrec::procrustes_backward", [&] {
    check_launch(cuda::launch_procrustes_backward<scalar_t>(
                     optional_data<scalar_t>(grads.aligned), optional_data<scalar_t>(grads.scale),
                     optional_data<scalar_t>(grads.rotation), optional_data<scalar_t>(grads.translation),
                     optional_data<scalar_t>(grads.residual), x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
                     w.defined() ? w.const_data_ptr<scalar_t>() : nullptr, point_sets(x), x.size(-2), scaling,
                     grad_source.mutable_data_ptr<scalar_t>(), grad_target.mutable_data_ptr<scalar_t>(),
                     grad_weights.mutable_data_ptr<scalar_t>(), stream),
                 "procrustes_backward");
  });
  return {grad_source, grad_target, grad_weights};
}

at::Tensor sample_sdf_cuda(const at::Tensor& points, const at::Tensor& sdf, at::ArrayRef<double> grid_min,
                           at::ArrayRef<double> grid_max) {
  const metrics::SdfGrid grid = check_sdf_inputs(points, sdf, grid_min, grid_max);
  const c10::cuda::CUDAGuard guard(points.device());
  const at::Tensor p = points.contiguous(), field = sdf.contiguous();
  at::Tensor values = at::empty(sdf_values_shape(p), p.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "meshrec::sample_sdf", [&] {
    check_launch(cuda::launch_sample_sdf<scalar_t>(p.const_data_ptr<scalar_t>(), p.numel() / 3,
                                                   field.const_data_ptr<scalar_t>(), grid,
                                                   values.mutable_data_ptr<scalar_t>(), stream),
                 "sample_sdf");
  });
  return values;
}

at::Tensor sample_sdf_backward_cuda(const at::Tensor& grad_values, const at::Tensor& points, const at::Tensor& sdf,
                                    at::ArrayRef<double> grid_min, at::ArrayRef<double> grid_max) {
  const metrics::SdfGrid grid = check_sdf_inputs(points, sdf, grid_min, grid_max);
  check_sdf_backward_inputs(grad_values, points);
  const c10::cuda::CUDAGuard guard(points.device());
  const at::Tensor p = points.contiguous(), field = sdf.contiguous(), g = grad_values.contiguous();
  at::Tensor grad_points = at::empty_like(p);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "meshrec::sample_sdf_backward", [&] {
    check_launch(cuda::launch_sample_sdf_backward<scalar_t>(g.const_data_ptr<scalar_t>(), p.const_data_ptr<scalar_t>(),
                                                            p.numel() / 3, field.const_data_ptr<scalar_t>(), grid,
                                                            grad_points.mutable_data_ptr<scalar_t>(), stream),
                 "sample_sdf_backward");
  });
  return grad_points;
}

// Face indices are validated by meshrec.ops.winding_number (check_closed_mesh) before the call;
// checking them here would need a host synchronisation.
at::Tensor winding_number_cuda(const at::Tensor& points, const at::Tensor& vertices, const at::Tensor& faces) {
  check_winding_inputs(points, vertices, faces);
  const c10::cuda::CUDAGuard guard(vertices.device());
  const at::Tensor p = points.contiguous(), v = vertices.contiguous(), f = faces.contiguous();
  const int64_t bodies = v.size(0), vertex_count = v.size(1), face_count = f.size(0), count = p.size(1);
  at::Tensor winding = at::empty({bodies, count}, v.options());
  const size_t bytes = cuda::WindingWorkspace::layout(nullptr, bodies, vertex_count, face_count, nullptr);
  at::Tensor scratch = at::empty({static_cast<int64_t>(bytes)}, v.options().dtype(at::kByte));
  cuda::WindingWorkspace workspace;
  cuda::WindingWorkspace::layout(scratch.mutable_data_ptr(), bodies, vertex_count, face_count, &workspace);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "meshrec::winding_number", [&] {
    check_launch(cuda::launch_winding_number<scalar_t>(p.const_data_ptr<scalar_t>(), p.size(0), count,
                                                       v.const_data_ptr<scalar_t>(), bodies, vertex_count,
                                                       f.const_data_ptr<int64_t>(), face_count, workspace,
                                                       winding.mutable_data_ptr<scalar_t>(), stream),
                 "winding_number");
  });
  return winding;
}

std::tuple<at::Tensor, at::Tensor> nearest_points_cuda(const at::Tensor& queries, const at::Tensor& points) {
  check_nearest_inputs(queries, points);
  const c10::cuda::CUDAGuard guard(queries.device());
  const at::Tensor q = queries.contiguous(), p = points.contiguous();
  const int64_t batch = q.size(0), count = q.size(1), scenes = p.size(0), scene_size = p.size(1);
  at::Tensor distance = at::empty({batch, count}, q.options());
  at::Tensor index = at::empty({batch, count}, q.options().dtype(at::kLong));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "meshrec::nearest_points", [&] {
    const size_t bytes = cuda::NearestWorkspace<scalar_t>::layout(nullptr, scenes, scene_size, nullptr);
    at::Tensor scratch = at::empty({static_cast<int64_t>(bytes)}, q.options().dtype(at::kByte));
    cuda::NearestWorkspace<scalar_t> workspace;
    cuda::NearestWorkspace<scalar_t>::layout(scratch.mutable_data_ptr(), scenes, scene_size, &workspace);
    check_launch(cuda::launch_nearest_points<scalar_t>(q.const_data_ptr<scalar_t>(), batch, count,
                                                       p.const_data_ptr<scalar_t>(), scenes, scene_size, workspace,
                                                       distance.mutable_data_ptr<scalar_t>(),
                                                       index.mutable_data_ptr<int64_t>(), stream),
                 "nearest_points");
  });
  return {distance, index};
}

}  // namespace

TORCH_LIBRARY_IMPL(meshrec, CUDA, m) {
  m.impl("procrustes", &procrustes_cuda);
  m.impl("procrustes_backward", &procrustes_backward_cuda);
  m.impl("sample_sdf", &sample_sdf_cuda);
  m.impl("sample_sdf_backward", &sample_sdf_backward_cuda);
  m.impl("winding_number", &winding_number_cuda);
  m.impl("nearest_points", &nearest_points_cuda);
}

}  // namespace meshrec
