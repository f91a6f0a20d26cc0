// Helpers for the torch bindings of CUDA kernels (host compiler, torch CUDA headers; no CUDA syntax).
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>

namespace meshrec {

inline void check_launch(cudaError_t status, const char* op) {
  TORCH_CHECK(status == cudaSuccess, "meshrec: CUDA launch of ", op, " failed: ", cudaGetErrorString(status));
}

}  // namespace meshrec
