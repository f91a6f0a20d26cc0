// Torch binding of the Rodrigues CUDA kernels: checks, allocation, current stream.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "rodrigues_binding.h"
#include "../common/cuda_binding.h"
#include "rodrigues_cuda.h"

namespace meshrec {
namespace {

at::Tensor rodrigues_cuda(const at::Tensor& axis_angle) {
  check_rodrigues_input(axis_angle);
  const c10::cuda::CUDAGuard guard(axis_angle.device());
  const at::Tensor w = axis_angle.contiguous();
  at::Tensor rotation = at::empty(rotation_shape(w), w.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "meshrec::rodrigues", [&] {
    check_launch(cuda::launch_rodrigues_forward<scalar_t>(w.const_data_ptr<scalar_t>(),
                                                          rotation.mutable_data_ptr<scalar_t>(), w.numel() / 3,
                                                          stream),
                 "rodrigues");
  });
  return rotation;
}

at::Tensor rodrigues_backward_cuda(const at::Tensor& grad_rotation, const at::Tensor& axis_angle) {
  check_rodrigues_backward_inputs(grad_rotation, axis_angle);
  const c10::cuda::CUDAGuard guard(axis_angle.device());
  const at::Tensor w = axis_angle.contiguous();
  const at::Tensor g = grad_rotation.contiguous();
  at::Tensor grad_w = at::empty_like(w);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "meshrec::rodrigues_backward", [&] {
    check_launch(cuda::launch_rodrigues_backward<scalar_t>(g.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                                           grad_w.mutable_data_ptr<scalar_t>(), w.numel() / 3,
                                                           stream),
                 "rodrigues_backward");
  });
  return grad_w;
}

}  // namespace

TORCH_LIBRARY_IMPL(meshrec, CUDA, m) {
  m.impl("rodrigues", &rodrigues_cuda);
  m.impl("rodrigues_backward", &rodrigues_backward_cuda);
}

}  // namespace meshrec
