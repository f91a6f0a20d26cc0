// CPU kernels of meshrec::rodrigues and meshrec::rodrigues_backward.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "../common/parallel.h"
#include "rodrigues_binding.h"
#include "rodrigues.h"

namespace meshrec {
namespace {

// Single-thread cost per rotation (forward or backward) on the development machine
// (benchmarks/RESULTS.md "Grain sizes"), for the grain size of common/parallel.h.
constexpr double kRotationNanoseconds = 15.0;

at::Tensor rodrigues_cpu(const at::Tensor& axis_angle) {
  check_rodrigues_input(axis_angle);
  const at::Tensor w = axis_angle.contiguous();
  at::Tensor rotation = at::empty(rotation_shape(w), w.options());
  const int64_t n = w.numel() / 3;
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "meshrec::rodrigues", [&] {
    const scalar_t* w_ptr = w.const_data_ptr<scalar_t>();
    scalar_t* r_ptr = rotation.mutable_data_ptr<scalar_t>();
    parallel_for_cost(0, n, kRotationNanoseconds, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        rotation::rodrigues_forward(w_ptr + 3 * i, r_ptr + 9 * i);
      }
    });
  });
  return rotation;
}

at::Tensor rodrigues_backward_cpu(const at::Tensor& grad_rotation, const at::Tensor& axis_angle) {
  check_rodrigues_backward_inputs(grad_rotation, axis_angle);
  const at::Tensor w = axis_angle.contiguous();
  const at::Tensor g = grad_rotation.contiguous();
  at::Tensor grad_w = at::empty_like(w);
  const int64_t n = w.numel() / 3;
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "meshrec::rodrigues_backward", [&] {
    const scalar_t* w_ptr = w.const_data_ptr<scalar_t>();
    const scalar_t* g_ptr = g.const_data_ptr<scalar_t>();
    scalar_t* out_ptr = grad_w.mutable_data_ptr<scalar_t>();
    parallel_for_cost(0, n, kRotationNanoseconds, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        rotation::rodrigues_backward(g_ptr + 9 * i, w_ptr + 3 * i, out_ptr + 3 * i);
      }
    });
  });
  return grad_w;
}

}  // namespace

TORCH_LIBRARY_IMPL(meshrec, CPU, m) {
  m.impl("rodrigues", &rodrigues_cpu);
  m.impl("rodrigues_backward", &rodrigues_backward_cpu);
}

}  // namespace meshrec
