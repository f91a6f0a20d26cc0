// Portable SIMD for the CPU kernels: GCC/Clang vector types plus per-ISA entry points.
//
// Kernels are written once as always-inline templates over Vec<T, N> (a vector of N lanes);
// each ISA gets a thin entry point compiled with `target(...)` and `flatten`, so the template
// body is inlined into it and compiled for that instruction set (AVX-512, AVX2+FMA, or the
// baseline). The library itself is built for the baseline ISA and picks an entry point at run
// time from torch's CPU capability (which honours ATEN_CPU_CAPABILITY). No intrinsics: the
// same code compiles on any GCC/Clang target, non-x86 ones using only the baseline variant.
#pragma once

#include <cstring>
#include <string>

#include <ATen/Version.h>

#if !defined(__GNUC__)
#error "meshrec's CPU kernels use GCC/Clang vector extensions"
#endif

#define MESHREC_ALWAYS_INLINE inline __attribute__((always_inline))
#define MESHREC_FLATTEN __attribute__((flatten))

#if defined(__x86_64__) || defined(__i386__)
#define MESHREC_X86 1
#define MESHREC_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,bmi,bmi2,popcnt,lzcnt,f16c"), flatten))
#define MESHREC_TARGET_AVX2 __attribute__((target("avx2,fma,bmi,bmi2,popcnt,lzcnt,f16c"), flatten))
#else
#define MESHREC_X86 0
#endif

namespace meshrec {
namespace simd {

template <typename T, int N>
struct VecType {
  typedef T type __attribute__((vector_size(N * sizeof(T))));
};
template <typename T, int N>
using Vec = typename VecType<T, N>::type;

// Vectors travel by reference, never by value: a by-value vector wider than the baseline ISA
// would have an ABI that depends on the compile flags (GCC's -Wpsabi).
template <typename V, typename T>
MESHREC_ALWAYS_INLINE void load(V& v, const T* p) {
  std::memcpy(&v, p, sizeof(V));
}

template <typename V, typename T>
MESHREC_ALWAYS_INLINE void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

enum class Isa { kBaseline, kAvx2, kAvx512 };

// The widest instruction set both the machine and torch's dispatch allow.
inline Isa cpu_isa() {
  static const Isa isa = [] {
#if MESHREC_X86
    const std::string capability = at::get_cpu_capability();
    __builtin_cpu_init();
    if (capability.find("AVX512") != std::string::npos && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw")) {
      return Isa::kAvx512;
    }
    if (capability.find("AVX2") != std::string::npos && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma")) {
      return Isa::kAvx2;
    }
#endif
    return Isa::kBaseline;
  }();
  return isa;
}

// Native vector width in bytes of each instruction set (the baseline: 16, SSE2 / NEON).
constexpr int vector_bytes(Isa isa) { return isa == Isa::kAvx512 ? 64 : isa == Isa::kAvx2 ? 32 : 16; }

}  // namespace simd
}  // namespace meshrec
