// What the CPU sparse convolution was compiled and dispatched with (for meshrec.info()).
#pragma once

#include <string>

namespace meshrec {

// The instruction set the CPU convolution kernels run with: "avx512", "avx2" or "generic".
std::string sparse_cpu_kernels();

}  // namespace meshrec
