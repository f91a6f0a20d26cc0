// CUDA kernels of the Rodrigues op: one thread per rotation, grid-stride loop.
#include "../common/cuda_launch.h"
#include "rodrigues.h"
#include "rodrigues_cuda.h"

namespace meshrec {
namespace cuda {
namespace {

template <typename T>
__global__ void rodrigues_forward_kernel(const T* __restrict__ axis_angle, T* __restrict__ rotation,
                                         int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    T w[3] = {axis_angle[3 * i], axis_angle[3 * i + 1], axis_angle[3 * i + 2]};
    T r[9];
    rotation::rodrigues_forward(w, r);
#pragma unroll
    for (int k = 0; k < 9; ++k) rotation[9 * i + k] = r[k];
  }
}

template <typename T>
__global__ void rodrigues_backward_kernel(const T* __restrict__ grad_rotation, const T* __restrict__ axis_angle,
                                          T* __restrict__ grad_axis_angle, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    T w[3] = {axis_angle[3 * i], axis_angle[3 * i + 1], axis_angle[3 * i + 2]};
    T g[9];
#pragma unroll
    for (int k = 0; k < 9; ++k) g[k] = grad_rotation[9 * i + k];
    T gw[3];
    rotation::rodrigues_backward(g, w, gw);
    grad_axis_angle[3 * i] = gw[0];
    grad_axis_angle[3 * i + 1] = gw[1];
    grad_axis_angle[3 * i + 2] = gw[2];
  }
}

}  // namespace

template <typename T>
cudaError_t launch_rodrigues_forward(const T* axis_angle, T* rotation, int64_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  rodrigues_forward_kernel<T><<<blocks_for(count), kThreadsPerBlock, 0, stream>>>(axis_angle, rotation, count);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_rodrigues_backward(const T* grad_rotation, const T* axis_angle, T* grad_axis_angle,
                                      int64_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  rodrigues_backward_kernel<T><<<blocks_for(count), kThreadsPerBlock, 0, stream>>>(grad_rotation, axis_angle,
                                                                                   grad_axis_angle, count);
  return cudaGetLastError();
}

template cudaError_t launch_rodrigues_forward<float>(const float*, float*, int64_t, cudaStream_t);
template cudaError_t launch_rodrigues_forward<double>(const double*, double*, int64_t, cudaStream_t);
template cudaError_t launch_rodrigues_backward<float>(const float*, const float*, float*, int64_t, cudaStream_t);
template cudaError_t launch_rodrigues_backward<double>(const double*, const double*, double*, int64_t,
                                                       cudaStream_t);

}  // namespace cuda
}  // namespace meshrec
