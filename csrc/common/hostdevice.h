// Portability macros and scalar math shared by the CPU and CUDA kernels.
//
// Kernel math lives in headers that both the host compiler and nvcc read, so the CPU and CUDA
// backends compute the same expressions. Nothing here includes torch.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define MESHREC_HOST_DEVICE __host__ __device__
#else
#define MESHREC_HOST_DEVICE
#endif

namespace meshrec {

// Overloads instead of std:: calls: std::sin is not a device function in every nvcc mode.
MESHREC_HOST_DEVICE inline float math_sqrt(float x) { return sqrtf(x); }
MESHREC_HOST_DEVICE inline double math_sqrt(double x) { return sqrt(x); }
MESHREC_HOST_DEVICE inline float math_sin(float x) { return sinf(x); }
MESHREC_HOST_DEVICE inline double math_sin(double x) { return sin(x); }
MESHREC_HOST_DEVICE inline float math_cos(float x) { return cosf(x); }
MESHREC_HOST_DEVICE inline double math_cos(double x) { return cos(x); }

// Below this squared angle the closed forms lose precision to cancellation, so the kernels
// switch to Taylor series (error < 1e-15 relative there for double, < 1e-9 for float).
template <typename T>
struct SmallAngle;
template <>
struct SmallAngle<float> {
  static constexpr float squared_threshold = 1e-2f;
};
template <>
struct SmallAngle<double> {
  static constexpr double squared_threshold = 1e-4;
};

}  // namespace meshrec
