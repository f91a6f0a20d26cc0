// CUDA kernels of the SDF sampling op: one thread per point, grid-stride loop.
#include "../common/cuda_launch.h"
#include "metrics_cuda.h"
#include "sdf.h"

namespace meshrec {
namespace cuda {
namespace {

template <typename T>
__global__ void sample_sdf_kernel(const T* __restrict__ points, int64_t count, const T* __restrict__ sdf,
                                  metrics::SdfGrid grid, T* __restrict__ values) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    values[i] = metrics::sample_sdf_point<T>(sdf, grid, points + 3 * i, nullptr);
}

template <typename T>
__global__ void sample_sdf_backward_kernel(const T* __restrict__ grad_values, const T* __restrict__ points,
                                           int64_t count, const T* __restrict__ sdf, metrics::SdfGrid grid,
                                           T* __restrict__ grad_points) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    T gradient[3];
    metrics::sample_sdf_point<T>(sdf, grid, points + 3 * i, gradient);
    for (int a = 0; a < 3; ++a) grad_points[3 * i + a] = grad_values[i] * gradient[a];
  }
}

}  // namespace

template <typename T>
cudaError_t launch_sample_sdf(const T* points, int64_t count, const T* sdf, metrics::SdfGrid grid, T* values,
                              cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  sample_sdf_kernel<T><<<blocks_for(count), kThreadsPerBlock, 0, stream>>>(points, count, sdf, grid, values);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_sample_sdf_backward(const T* grad_values, const T* points, int64_t count, const T* sdf,
                                       metrics::SdfGrid grid, T* grad_points, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  sample_sdf_backward_kernel<T><<<blocks_for(count), kThreadsPerBlock, 0, stream>>>(grad_values, points, count, sdf,
                                                                                     grid, grad_points);
  return cudaGetLastError();
}

template cudaError_t launch_sample_sdf<float>(const float*, int64_t, const float*, metrics::SdfGrid, float*,
                                              cudaStream_t);
template cudaError_t launch_sample_sdf<double>(const double*, int64_t, const double*, metrics::SdfGrid, double*,
                                               cudaStream_t);
template cudaError_t launch_sample_sdf_backward<float>(const float*, const float*, int64_t, const float*,
                                                       metrics::SdfGrid, float*, cudaStream_t);
template cudaError_t launch_sample_sdf_backward<double>(const double*, const double*, int64_t, const double*,
                                                        metrics::SdfGrid, double*, cudaStream_t);

}  // namespace cuda
}  // namespace meshrec
