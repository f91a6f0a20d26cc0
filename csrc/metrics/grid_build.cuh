// Device helpers shared by the grid builds of winding.cu and nearest.cu (nvcc only).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace meshrec {
namespace cuda {

constexpr int kReduceThreads = 256;
constexpr int kScanThreads = 1024;

// Exclusive prefix sums of `length` counts per segment (one block of kScanThreads per segment):
// starts[0] = 0, starts[length - 1] = total of the first length - 1 counts. A template so that
// each .cu file including this header gets its own instance without duplicate host stubs.
template <int Threads = kScanThreads>
__global__ void exclusive_scan_segments(const int32_t* __restrict__ counts, int32_t* __restrict__ starts,
                                               int64_t length) {
  __shared__ int32_t partial[Threads];
  __shared__ int32_t carry;
  const int32_t* in = counts + blockIdx.x * length;
  int32_t* out = starts + blockIdx.x * length;
  if (threadIdx.x == 0) carry = 0;
  __syncthreads();
  for (int64_t base = 0; base < length; base += blockDim.x) {
    const int64_t i = base + threadIdx.x;
    const int32_t value = i < length ? in[i] : 0;
    partial[threadIdx.x] = value;
    __syncthreads();
    for (unsigned int offset = 1; offset < blockDim.x; offset <<= 1) {
      const int32_t add = threadIdx.x >= offset ? partial[threadIdx.x - offset] : 0;
      __syncthreads();
      partial[threadIdx.x] += add;
      __syncthreads();
    }
    if (i < length) out[i] = carry + partial[threadIdx.x] - value;
    __syncthreads();
    if (threadIdx.x == blockDim.x - 1) carry += partial[threadIdx.x];
    __syncthreads();
  }
}

// Block-wide min (is_min) or max of one double per thread; the result is valid in thread 0.
__device__ inline double block_reduce(double value, bool is_min) {
  __shared__ double shared[kReduceThreads];
  shared[threadIdx.x] = value;
  __syncthreads();
  for (unsigned int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      const double other = shared[threadIdx.x + stride];
      shared[threadIdx.x] = is_min ? (other < shared[threadIdx.x] ? other : shared[threadIdx.x])
                                   : (other > shared[threadIdx.x] ? other : shared[threadIdx.x]);
    }
    __syncthreads();
  }
  const double result = shared[0];
  __syncthreads();
  return result;
}

__device__ inline double block_sum(double value) {
  __shared__ double shared[kReduceThreads];
  shared[threadIdx.x] = value;
  __syncthreads();
  for (unsigned int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  const double result = shared[0];
  __syncthreads();
  return result;
}

}  // namespace cuda
}  // namespace meshrec
