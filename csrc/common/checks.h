// Argument checks shared by the torch bindings (CPU and CUDA). Messages name the argument and
// the expected layout, because they reach users through meshrec's Python API.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string>

namespace meshrec {

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "meshrec: ", name,
              " must be float32 or float64, got ", t.scalar_type());
}

inline void check_last_dim(const at::Tensor& t, int64_t size, const char* name, const char* layout) {
  TORCH_CHECK(t.dim() >= 1 && t.size(-1) == size, "meshrec: ", name, " must have shape ", layout,
              ", got ", t.sizes());
}

inline void check_same_dtype_device(const at::Tensor& a, const char* name_a, const at::Tensor& b,
                                    const char* name_b) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "meshrec: ", name_a, " (", a.scalar_type(), ") and ",
              name_b, " (", b.scalar_type(), ") must have the same dtype");
  TORCH_CHECK(a.device() == b.device(), "meshrec: ", name_a, " (", a.device(), ") and ", name_b, " (",
              b.device(), ") must be on the same device");
}

}  // namespace meshrec
