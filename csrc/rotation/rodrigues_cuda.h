// Launchers of the Rodrigues CUDA kernels. Plain pointers and a stream: no torch types, so the
// .cu file compiles with nvcc alone and the torch binding needs no CUDA syntax.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace meshrec {
namespace cuda {

// axis_angle: count x 3, rotation: count x 9 (row-major 3x3), both contiguous on the device.
template <typename T>
cudaError_t launch_rodrigues_forward(const T* axis_angle, T* rotation, int64_t count, cudaStream_t stream);

// grad_rotation: count x 9, axis_angle: count x 3, grad_axis_angle: count x 3.
template <typename T>
cudaError_t launch_rodrigues_backward(const T* grad_rotation, const T* axis_angle, T* grad_axis_angle,
                                      int64_t count, cudaStream_t stream);

}  // namespace cuda
}  // namespace meshrec
