// Launch geometry shared by the CUDA kernels (nvcc only, no torch).
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

namespace meshrec {
namespace cuda {

constexpr int kThreadsPerBlock = 256;
// Grid-stride loops cover any count with a bounded grid; 65535 blocks keeps every arch legal.
constexpr int64_t kMaxBlocks = 65535;

inline unsigned int blocks_for(int64_t count) {
  const int64_t blocks = (count + kThreadsPerBlock - 1) / kThreadsPerBlock;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min(blocks, kMaxBlocks)));
}

}  // namespace cuda
}  // namespace meshrec
