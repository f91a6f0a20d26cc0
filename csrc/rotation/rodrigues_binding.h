// Argument checks and output shapes shared by the CPU and CUDA bindings of the Rodrigues op.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "../common/checks.h"

namespace meshrec {

inline void check_rodrigues_input(const at::Tensor& axis_angle) {
  check_floating(axis_angle, "axis_angle");
  check_last_dim(axis_angle, 3, "axis_angle", "(..., 3)");
}

inline void check_rodrigues_backward_inputs(const at::Tensor& grad_rotation, const at::Tensor& axis_angle) {
  check_rodrigues_input(axis_angle);
  check_same_dtype_device(grad_rotation, "grad_rotation", axis_angle, "axis_angle");
  TORCH_CHECK(grad_rotation.numel() == 3 * axis_angle.numel(),
              "meshrec: grad_rotation must have shape (..., 3, 3) matching axis_angle (..., 3), got ",
              grad_rotation.sizes(), " and ", axis_angle.sizes());
}

// (..., 3) -> (..., 3, 3)
inline std::vector<int64_t> rotation_shape(const at::Tensor& axis_angle) {
  std::vector<int64_t> shape(axis_angle.sizes().begin(), axis_angle.sizes().end() - 1);
  shape.push_back(3);
  shape.push_back(3);
  return shape;
}

}  // namespace meshrec
