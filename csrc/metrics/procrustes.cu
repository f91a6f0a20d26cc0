// CUDA kernels of the Procrustes op: one thread per point set, grid-stride loop, double math.
#include "../common/cuda_launch.h"
#include "metrics_cuda.h"
#include "procrustes.h"

namespace meshrec {
namespace cuda {
namespace {

template <typename T>
__global__ void procrustes_kernel(const T* __restrict__ source, const T* __restrict__ target,
                                  const T* __restrict__ weights, int64_t batch, int64_t count, bool scaling,
                                  T* __restrict__ aligned, T* __restrict__ scale, T* __restrict__ rotation,
                                  T* __restrict__ translation, T* __restrict__ residual) {
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < batch;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t offset = 3 * count * b;
    metrics::ProcrustesSolution solution;
    metrics::solve_procrustes(source + offset, target + offset, weights ? weights + count * b : nullptr, count,
                              scaling, solution);
    metrics::apply_similarity(solution, source + offset, target + offset, count, aligned + offset,
                              residual + count * b);
    scale[b] = static_cast<T>(solution.scale);
    for (int k = 0; k < 9; ++k) rotation[9 * b + k] = static_cast<T>(solution.rotation[k]);
    for (int a = 0; a < 3; ++a) translation[3 * b + a] = static_cast<T>(solution.translation[a]);
  }
}

template <typename T>
__global__ void procrustes_backward_kernel(const T* __restrict__ grad_aligned, const T* __restrict__ grad_scale,
                                           const T* __restrict__ grad_rotation,
                                           const T* __restrict__ grad_translation,
                                           const T* __restrict__ grad_residual, const T* __restrict__ source,
                                           const T* __restrict__ target, const T* __restrict__ weights,
                                           int64_t batch, int64_t count, bool scaling, T* __restrict__ grad_source,
                                           T* __restrict__ grad_target, T* __restrict__ grad_weights) {
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < batch;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t offset = 3 * count * b;
    metrics::procrustes_backward_sample(
        source + offset, target + offset, weights ? weights + count * b : nullptr, count, scaling,
        grad_aligned ? grad_aligned + offset : nullptr, grad_scale ? grad_scale + b : nullptr,
        grad_rotation ? grad_rotation + 9 * b : nullptr, grad_translation ? grad_translation + 3 * b : nullptr,
        grad_residual ? grad_residual + count * b : nullptr, grad_source + offset, grad_target + offset,
        grad_weights + count * b);
  }
}

}  // namespace

// One thread per point set keeps the whole solve in registers; 128 threads per block leave
// room for the solver's register use.
constexpr int kProcrustesThreads = 128;

inline unsigned int procrustes_blocks(int64_t batch) {
  const int64_t blocks = (batch + kProcrustesThreads - 1) / kProcrustesThreads;
  return static_cast<unsigned int>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

template <typename T>
cudaError_t launch_procrustes(const T* source, const T* target, const T* weights, int64_t batch, int64_t count,
                              bool scaling, T* aligned, T* scale, T* rotation, T* translation, T* residual,
                              cudaStream_t stream) {
  if (batch == 0) return cudaSuccess;
  procrustes_kernel<T><<<procrustes_blocks(batch), kProcrustesThreads, 0, stream>>>(
      source, target, weights, batch, count, scaling, aligned, scale, rotation, translation, residual);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_procrustes_backward(const T* grad_aligned, const T* grad_scale, const T* grad_rotation,
                                       const T* grad_translation, const T* grad_residual, const T* source,
                                       const T* target, const T* weights, int64_t batch, int64_t count, bool scaling,
                                       T* grad_source, T* grad_target, T* grad_weights, cudaStream_t stream) {
  if (batch == 0) return cudaSuccess;
  procrustes_backward_kernel<T><<<procrustes_blocks(batch), kProcrustesThreads, 0, stream>>>(
      grad_aligned, grad_scale, grad_rotation, grad_translation, grad_residual, source, target, weights, batch, count,
      scaling, grad_source, grad_target, grad_weights);
  return cudaGetLastError();
}

#define MESHREC_INSTANTIATE(T)                                                                                    \
  template cudaError_t launch_procrustes<T>(const T*, const T*, const T*, int64_t, int64_t, bool, T*, T*, T*, T*, \
                                            T*, cudaStream_t);                                                    \
  template cudaError_t launch_procrustes_backward<T>(const T*, const T*, const T*, const T*, const T*, const T*,  \
                                                     const T*, const T*, int64_t, int64_t, bool, T*, T*, T*,       \
                                                     cudaStream_t);
MESHREC_INSTANTIATE(float)
MESHREC_INSTANTIATE(double)
#undef MESHREC_INSTANTIATE

}  // namespace cuda
}  // namespace meshrec
