// Argument checks and output shapes shared by the CPU and CUDA bindings of the metrics ops.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "../common/checks.h"
#include "sdf.h"
#include "winding.h"

namespace meshrec {

// ---- procrustes: source, target (..., N, 3); weights (..., N)

inline void check_procrustes_inputs(const at::Tensor& source, const at::Tensor& target,
                                    const c10::optional<at::Tensor>& weights) {
  check_floating(source, "source");
  TORCH_CHECK(source.dim() >= 2 && source.size(-1) == 3, "meshrec: source must have shape (..., N, 3), got ",
              source.sizes());
  check_same_dtype_device(source, "source", target, "target");
  TORCH_CHECK(source.sizes() == target.sizes(), "meshrec: source ", source.sizes(), " and target ", target.sizes(),
              " must have the same shape (..., N, 3)");
  if (weights.has_value()) {
    check_same_dtype_device(source, "source", *weights, "weights");
    const auto expected = source.sizes().slice(0, source.dim() - 1);
    TORCH_CHECK(weights->sizes() == expected, "meshrec: weights must have shape (..., N) = ", expected, ", got ",
                weights->sizes());
  }
}

// (..., N, 3) -> (...), (..., 3, 3), (..., 3)
inline std::vector<int64_t> procrustes_batch_shape(const at::Tensor& source, int64_t trailing_a = -1,
                                                   int64_t trailing_b = -1) {
  std::vector<int64_t> shape(source.sizes().begin(), source.sizes().end() - 2);
  if (trailing_a >= 0) shape.push_back(trailing_a);
  if (trailing_b >= 0) shape.push_back(trailing_b);
  return shape;
}

// Incoming gradients are optional (absent: zero); each present one has its output's shape.
struct ProcrustesGradients {
  c10::optional<at::Tensor> aligned, scale, rotation, translation, residual;
};

inline void check_procrustes_backward_inputs(const ProcrustesGradients& grads, const at::Tensor& source,
                                             const at::Tensor& target, const c10::optional<at::Tensor>& weights) {
  check_procrustes_inputs(source, target, weights);
  const auto check = [&](const c10::optional<at::Tensor>& grad, const char* name, std::vector<int64_t> shape,
                         const char* layout) {
    if (!grad.has_value()) return;
    check_same_dtype_device(*grad, name, source, "source");
    TORCH_CHECK(grad->sizes() == at::IntArrayRef(shape), "meshrec: ", name, " must have shape ", layout, " = ",
                at::IntArrayRef(shape), ", got ", grad->sizes());
  };
  check(grads.aligned, "grad_aligned", source.sizes().vec(), "(..., N, 3)");
  check(grads.scale, "grad_scale", procrustes_batch_shape(source), "(...)");
  check(grads.rotation, "grad_rotation", procrustes_batch_shape(source, 3, 3), "(..., 3, 3)");
  check(grads.translation, "grad_translation", procrustes_batch_shape(source, 3), "(..., 3)");
  check(grads.residual, "grad_residual", procrustes_batch_shape(source, source.size(-2)), "(..., N)");
}

// Contiguous copies of the present gradients (undefined tensors for absent ones).
inline ProcrustesGradients contiguous(const ProcrustesGradients& grads) {
  const auto make = [](const c10::optional<at::Tensor>& grad) -> c10::optional<at::Tensor> {
    return grad.has_value() ? c10::optional<at::Tensor>(grad->contiguous()) : c10::nullopt;
  };
  return {make(grads.aligned), make(grads.scale), make(grads.rotation), make(grads.translation), make(grads.residual)};
}

template <typename T>
inline const T* optional_data(const c10::optional<at::Tensor>& tensor) {
  return tensor.has_value() ? tensor->const_data_ptr<T>() : nullptr;
}

// ---- sdf_sample: points (..., 3), sdf (X, Y, Z), grid box

inline metrics::SdfGrid check_sdf_inputs(const at::Tensor& points, const at::Tensor& sdf, at::ArrayRef<double> grid_min,
                                         at::ArrayRef<double> grid_max) {
  check_floating(points, "points");
  check_last_dim(points, 3, "points", "(..., 3)");
  check_same_dtype_device(points, "points", sdf, "sdf");
  TORCH_CHECK(sdf.dim() == 3 && sdf.size(0) >= 2 && sdf.size(1) >= 2 && sdf.size(2) >= 2,
              "meshrec: sdf must be a 3-D grid (X, Y, Z) with at least 2 samples per axis, got ", sdf.sizes());
  TORCH_CHECK(grid_min.size() == 3 && grid_max.size() == 3, "meshrec: grid_min and grid_max must have 3 values, got ",
              grid_min.size(), " and ", grid_max.size());
  metrics::SdfGrid grid;
  for (int a = 0; a < 3; ++a) {
    TORCH_CHECK(grid_max[a] > grid_min[a], "meshrec: grid_max must exceed grid_min on every axis, got ", grid_min,
                " and ", grid_max);
    grid.origin[a] = grid_min[a];
    grid.dims[a] = sdf.size(a);
    grid.inverse_step[a] = static_cast<double>(sdf.size(a) - 1) / (grid_max[a] - grid_min[a]);
  }
  return grid;
}

inline void check_sdf_backward_inputs(const at::Tensor& grad_values, const at::Tensor& points) {
  check_same_dtype_device(grad_values, "grad_values", points, "points");
  TORCH_CHECK(grad_values.numel() * 3 == points.numel(), "meshrec: grad_values must have shape (...) matching points (..., 3), got ",
              grad_values.sizes(), " and ", points.sizes());
}

inline std::vector<int64_t> sdf_values_shape(const at::Tensor& points) {
  return std::vector<int64_t>(points.sizes().begin(), points.sizes().end() - 1);
}

// ---- winding_number: points (Bp, P, 3), vertices (B, V, 3), faces (F, 3) int64

inline void check_winding_inputs(const at::Tensor& points, const at::Tensor& vertices, const at::Tensor& faces) {
  check_floating(vertices, "vertices");
  TORCH_CHECK(vertices.dim() == 3 && vertices.size(2) == 3, "meshrec: vertices must have shape (B, V, 3), got ",
              vertices.sizes());
  check_same_dtype_device(vertices, "vertices", points, "points");
  TORCH_CHECK(points.dim() == 3 && points.size(2) == 3 && (points.size(0) == 1 || points.size(0) == vertices.size(0)),
              "meshrec: points must have shape (B, P, 3) or (1, P, 3) with B = ", vertices.size(0), ", got ",
              points.sizes());
  TORCH_CHECK(faces.scalar_type() == at::kLong, "meshrec: faces must be int64, got ", faces.scalar_type());
  TORCH_CHECK(faces.device() == vertices.device(), "meshrec: faces (", faces.device(), ") and vertices (",
              vertices.device(), ") must be on the same device");
  TORCH_CHECK(faces.dim() == 2 && faces.size(1) == 3, "meshrec: faces must have shape (F, 3), got ", faces.sizes());
  TORCH_CHECK(faces.size(0) < std::numeric_limits<int32_t>::max() / 2,
              "meshrec: at most 2^30 faces are supported, got ", faces.size(0));
  TORCH_CHECK(vertices.size(1) > 0 || faces.size(0) == 0, "meshrec: faces index an empty vertex array");
}

// ---- nearest_points: queries (B, Q, 3), points (Bp, P, 3)

inline void check_nearest_inputs(const at::Tensor& queries, const at::Tensor& points) {
  check_floating(queries, "queries");
  TORCH_CHECK(queries.dim() == 3 && queries.size(2) == 3, "meshrec: queries must have shape (B, Q, 3), got ",
              queries.sizes());
  check_same_dtype_device(queries, "queries", points, "points");
  TORCH_CHECK(points.dim() == 3 && points.size(2) == 3 && (points.size(0) == 1 || points.size(0) == queries.size(0)),
              "meshrec: points must have shape (B, P, 3) or (1, P, 3) with B = ", queries.size(0), ", got ",
              points.sizes());
  TORCH_CHECK(points.size(1) < std::numeric_limits<int32_t>::max(), "meshrec: at most 2^31 - 1 points per scene, got ",
              points.size(1));
}

}  // namespace meshrec
