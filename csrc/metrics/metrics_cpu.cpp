// CPU kernels of the metrics ops: procrustes (+ backward), sample_sdf (+ backward),
// winding_number and nearest_points.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "../common/parallel.h"
#include "grids_host.h"
#include "metrics_binding.h"
#include "procrustes.h"
#include "sdf.h"

namespace meshrec {
namespace {

// Single-thread costs measured on the development machine (benchmarks/grain_costs.py, recorded in
// benchmarks/RESULTS.md "Grain sizes"), for the grain sizes of common/parallel.h.
constexpr double kProcrustesPointNanoseconds = 12.0;   // per point of a sample
constexpr double kProcrustesSampleNanoseconds = 300.0; // per sample: the 3x3 SVD
constexpr double kSdfPointNanoseconds = 20.0;          // trilinear sample (and gradient)
constexpr double kWindingPointNanoseconds = 160.0;     // winding-number query against a body's grid
constexpr double kWindingGridNanoseconds = 3.0e6;      // building one (SMPL) body's grid
constexpr double kNearestQueryNanoseconds = 4000.0;    // nearest-point query against a scene's grid
constexpr double kNearestGridPointNanoseconds = 25.0;  // building a scene's grid, per scene point

// Number of point sets in a (..., N, 3) tensor (also when N = 0).
int64_t point_sets(const at::Tensor& points) {
  int64_t sets = 1;
  for (int64_t d = 0; d < points.dim() - 2; ++d) sets *= points.size(d);
  return sets;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> procrustes_cpu(const at::Tensor& source,
                                                                          const at::Tensor& target,
                                                                          const c10::optional<at::Tensor>& weights,
                                                                          bool scaling) {
  check_procrustes_inputs(source, target, weights);
  const at::Tensor x = source.contiguous(), y = target.contiguous();
  const at::Tensor w = weights.has_value() ? weights->contiguous() : at::Tensor();
  at::Tensor aligned = at::empty_like(x);
  at::Tensor scale = at::empty(procrustes_batch_shape(x), x.options());
  at::Tensor rotation = at::empty(procrustes_batch_shape(x, 3, 3), x.options());
  at::Tensor translation = at::empty(procrustes_batch_shape(x, 3), x.options());
  at::Tensor residual = at::empty(procrustes_batch_shape(x, x.size(-2)), x.options());
  const int64_t batch = point_sets(x), count = x.size(-2);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "meshrec::procrustes", [&] {
    const scalar_t* x_ptr = x.const_data_ptr<scalar_t>();
    const scalar_t* y_ptr = y.const_data_ptr<scalar_t>();
    const scalar_t* w_ptr = w.defined() ? w.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* aligned_ptr = aligned.mutable_data_ptr<scalar_t>();
    scalar_t* scale_ptr = scale.mutable_data_ptr<scalar_t>();
    scalar_t* rotation_ptr = rotation.mutable_data_ptr<scalar_t>();
    scalar_t* translation_ptr = translation.mutable_data_ptr<scalar_t>();
    scalar_t* residual_ptr = residual.mutable_data_ptr<scalar_t>();
    parallel_for_cost(0, batch, kProcrustesSampleNanoseconds + kProcrustesPointNanoseconds * count,
                      [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        metrics::ProcrustesSolution solution;
        const int64_t offset = 3 * count * b;
        metrics::solve_procrustes(x_ptr + offset, y_ptr + offset, w_ptr ? w_ptr + count * b : nullptr, count, scaling,
                                  solution);
        metrics::apply_similarity(solution, x_ptr + offset, y_ptr + offset, count, aligned_ptr + offset,
                                  residual_ptr + count * b);
        scale_ptr[b] = static_cast<scalar_t>(solution.scale);
        for (int k = 0; k < 9; ++k) rotation_ptr[9 * b + k] = static_cast<scalar_t>(solution.rotation[k]);
        for (int a = 0; a < 3; ++a) translation_ptr[3 * b + a] = static_cast<scalar_t>(solution.translation[a]);
      }
    });
  });
  return {aligned, scale, rotation, translation, residual};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> procrustes_backward_cpu(
    const c10::optional<at::Tensor>& grad_aligned, const c10::optional<at::Tensor>& grad_scale,
    const c10::optional<at::Tensor>& grad_rotation, const c10::optional<at::Tensor>& grad_translation,
    const c10::optional<at::Tensor>& grad_residual, const at::Tensor& source, const at::Tensor& target,
    const c10::optional<at::Tensor>& weights, bool scaling) {
  const ProcrustesGradients given{grad_aligned, grad_scale, grad_rotation, grad_translation, grad_residual};
  check_procrustes_backward_inputs(given, source, target, weights);
  const ProcrustesGradients grads = contiguous(given);
  const at::Tensor x = source.contiguous(), y = target.contiguous();
  const at::Tensor w = weights.has_value() ? weights->contiguous() : at::Tensor();
  at::Tensor grad_source = at::empty_like(x), grad_target = at::empty_like(y);
  at::Tensor grad_weights = at::empty(procrustes_batch_shape(x, x.size(-2)), x.options());
  const int64_t batch = point_sets(x), count = x.size(-2);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "meshrec::procrustes_backward", [&] {
    const scalar_t* x_ptr = x.const_data_ptr<scalar_t>();
    const scalar_t* y_ptr = y.const_data_ptr<scalar_t>();
    const scalar_t* w_ptr = w.defined() ? w.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* ga_ptr = optional_data<scalar_t>(grads.aligned);
    const scalar_t* gs_ptr = optional_data<scalar_t>(grads.scale);
    const scalar_t* gr_ptr = optional_data<scalar_t>(grads.rotation);
    const scalar_t* gt_ptr = optional_data<scalar_t>(grads.translation);
    const scalar_t* gres_ptr = optional_data<scalar_t>(grads.residual);
    scalar_t* gx_ptr = grad_source.mutable_data_ptr<scalar_t>();
    scalar_t* gy_ptr = grad_target.mutable_data_ptr<scalar_t>();
    scalar_t* gw_ptr = grad_weights.mutable_data_ptr<scalar_t>();
    parallel_for_cost(0, batch, kProcrustesSampleNanoseconds + kProcrustesPointNanoseconds * count,
                      [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const int64_t offset = 3 * count * b;
        metrics::procrustes_backward_sample(
            x_ptr + offset, y_ptr + offset, w_ptr ? w_ptr + count * b : nullptr, count, scaling,
            ga_ptr ? ga_ptr + offset : nullptr, gs_ptr ? gs_ptr + b : nullptr, gr_ptr ? gr_ptr + 9 * b : nullptr,
            gt_ptr ? gt_ptr + 3 * b : nullptr, gres_ptr ? gres_ptr + count * b : nullptr, gx_ptr + offset,
            gy_ptr + offset, gw_ptr + count * b);
      }
    });
  });
  return {grad_source, grad_target, grad_weights};
}

at::Tensor sample_sdf_cpu(const at::Tensor& points, const at::Tensor& sdf, at::ArrayRef<double> grid_min,
                          at::ArrayRef<double> grid_max) {
  const metrics::SdfGrid grid = check_sdf_inputs(points, sdf, grid_min, grid_max);
  const at::Tensor p = points.contiguous(), field = sdf.contiguous();
  at::Tensor values = at::empty(sdf_values_shape(p), p.options());
  const int64_t n = p.numel() / 3;
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "meshrec::sample_sdf", [&] {
    const scalar_t* p_ptr = p.const_data_ptr<scalar_t>();
    const scalar_t* field_ptr = field.const_data_ptr<scalar_t>();
    scalar_t* out = values.mutable_data_ptr<scalar_t>();
    parallel_for_cost(0, n, kSdfPointNanoseconds, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        out[i] = metrics::sample_sdf_point<scalar_t>(field_ptr, grid, p_ptr + 3 * i, nullptr);
    });
  });
  return values;
}

at::Tensor sample_sdf_backward_cpu(const at::Tensor& grad_values, const at::Tensor& points, const at::Tensor& sdf,
                                   at::ArrayRef<double> grid_min, at::ArrayRef<double> grid_max) {
  const metrics::SdfGrid grid = check_sdf_inputs(points, sdf, grid_min, grid_max);
  check_sdf_backward_inputs(grad_values, points);
  const at::Tensor p = points.contiguous(), field = sdf.contiguous(), g = grad_values.contiguous();
  at::Tensor grad_points = at::empty_like(p);
  const int64_t n = p.numel() / 3;
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "meshrec::sample_sdf_backward", [&] {
    const scalar_t* p_ptr = p.const_data_ptr<scalar_t>();
    const scalar_t* field_ptr = field.const_data_ptr<scalar_t>();
    const scalar_t* g_ptr = g.const_data_ptr<scalar_t>();
    scalar_t* out = grad_points.mutable_data_ptr<scalar_t>();
    parallel_for_cost(0, n, kSdfPointNanoseconds, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        scalar_t gradient[3];
        metrics::sample_sdf_point<scalar_t>(field_ptr, grid, p_ptr + 3 * i, gradient);
        for (int a = 0; a < 3; ++a) out[3 * i + a] = g_ptr[i] * gradient[a];
      }
    });
  });
  return grad_points;
}

at::Tensor winding_number_cpu(const at::Tensor& points, const at::Tensor& vertices, const at::Tensor& faces) {
  check_winding_inputs(points, vertices, faces);
  const at::Tensor p = points.contiguous(), v = vertices.contiguous(), f = faces.contiguous();
  const int64_t bodies = v.size(0), vertex_count = v.size(1), face_count = f.size(0), count = p.size(1);
  const int64_t* f_ptr = f.const_data_ptr<int64_t>();
  for (int64_t k = 0; k < 3 * face_count; ++k)
    TORCH_CHECK(f_ptr[k] >= 0 && f_ptr[k] < vertex_count, "meshrec: faces must index vertices in [0, ", vertex_count,
                "), found ", f_ptr[k]);
  at::Tensor winding = at::empty({bodies, count}, v.options());
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "meshrec::winding_number", [&] {
    const scalar_t* v_ptr = v.const_data_ptr<scalar_t>();
    const scalar_t* p_ptr = p.const_data_ptr<scalar_t>();
    scalar_t* out = winding.mutable_data_ptr<scalar_t>();
    std::vector<metrics::WindingGridHost> grids(bodies);
    parallel_for_cost(0, bodies, kWindingGridNanoseconds, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b)
        metrics::build_winding_grid(v_ptr + 3 * vertex_count * b, vertex_count, f_ptr, face_count, grids[b]);
    });
    const int64_t point_stride = p.size(0) == 1 ? 0 : 3 * count;
    parallel_for_cost(0, bodies * count, kWindingPointNanoseconds, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / count, k = i % count;
        const scalar_t* point = p_ptr + point_stride * b + 3 * k;
        const bool nan = !(point[0] == point[0] && point[1] == point[1] && point[2] == point[2]);
        // A NaN or infinite vertex leaves the mesh without an inside: NaN, never "outside" (0).
        out[i] = nan                          ? point[0] + point[1] + point[2]
                 : grids[b].params.nonfinite ? static_cast<scalar_t>(NAN)
                                              : static_cast<scalar_t>(
                           metrics::winding_query(point, grids[b], v_ptr + 3 * vertex_count * b, f_ptr));
      }
    });
  });
  return winding;
}

std::tuple<at::Tensor, at::Tensor> nearest_points_cpu(const at::Tensor& queries, const at::Tensor& points) {
  check_nearest_inputs(queries, points);
  const at::Tensor q = queries.contiguous(), p = points.contiguous();
  const int64_t batch = q.size(0), count = q.size(1), scenes = p.size(0), scene_size = p.size(1);
  at::Tensor distance = at::empty({batch, count}, q.options());
  at::Tensor index = at::empty({batch, count}, q.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "meshrec::nearest_points", [&] {
    const scalar_t* q_ptr = q.const_data_ptr<scalar_t>();
    const scalar_t* p_ptr = p.const_data_ptr<scalar_t>();
    scalar_t* d_ptr = distance.mutable_data_ptr<scalar_t>();
    int64_t* i_ptr = index.mutable_data_ptr<int64_t>();
    std::vector<metrics::PointGridHost<scalar_t>> grids(scenes);
    parallel_for_cost(0, scenes, kNearestGridPointNanoseconds * scene_size, [&](int64_t begin, int64_t end) {
      for (int64_t s = begin; s < end; ++s) metrics::build_point_grid(p_ptr + 3 * scene_size * s, scene_size, grids[s]);
    });
    parallel_for_cost(0, batch * count, kNearestQueryNanoseconds, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / count;
        const double squared = metrics::nearest_query(q_ptr + 3 * i, grids[scenes == 1 ? 0 : b], i_ptr + i);
        d_ptr[i] = static_cast<scalar_t>(sqrt(squared));
      }
    });
  });
  return {distance, index};
}

}  // namespace

TORCH_LIBRARY_IMPL(meshrec, CPU, m) {
  m.impl("procrustes", &procrustes_cpu);
  m.impl("procrustes_backward", &procrustes_backward_cpu);
  m.impl("sample_sdf", &sample_sdf_cpu);
  m.impl("sample_sdf_backward", &sample_sdf_backward_cpu);
  m.impl("winding_number", &winding_number_cpu);
  m.impl("nearest_points", &nearest_points_cpu);
}

}  // namespace meshrec
