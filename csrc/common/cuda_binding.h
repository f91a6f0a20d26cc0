// Helpers for the torch bindings of CUDA kernels (host compiler, torch CUDA headers; no CUDA syntax).
//
// Only c10's CUDA headers: they need the CUDA runtime headers alone. ATen/cuda/CUDAContext.h would
// also pull in the cuBLAS/cuSPARSE/cuSOLVER headers, which a CUDA toolkit made of nvcc and the
// runtime (or torch's pip wheels) may not have, and nothing here uses those libraries.
#pragma once

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

namespace meshrec {

inline void check_launch(cudaError_t status, const char* op) {
  TORCH_CHECK(status == cudaSuccess, "meshrec: CUDA launch of ", op, " failed: ", cudaGetErrorString(status));
}

}  // namespace meshrec
