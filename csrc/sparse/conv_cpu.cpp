// CPU sparse convolution: output-stationary gather-GEMM-scatter with register-blocked kernels.
//
// A convolution is a table `neighbors` (N_out, K): for output row r and kernel offset k, the
// input row feeding it (or -1). Then out[r] = sum_k in[neighbors[r, k]] @ W[k]. The same op
// computes the input gradient, grad_in[i] = sum_k grad_out[reverse[i, k]] @ W[k]^T, called with
// the inverted table and the transposed weight (meshrec/ops/_registrations/sparse.py), so
// forward and backward share one code path.
//
// Output rows are processed in tiles. For a tile and an offset, the rows that have a neighbour
// are listed as pointers into the input (the gather is never copied) and multiplied by the
// offset's weight panel into a tile accumulator that stays in cache (the scatter is a register
// store into that accumulator). A thread owns its tiles, so no two threads ever add into the same
// output, and each output element sums its terms in one fixed order (offsets in order, input
// channels in order): results are bitwise identical across runs and thread counts, without
// atomics. The weight gradient sums over pairs in fixed-size chunks with one partial buffer per
// chunk, reduced in chunk order, so it is deterministic too.
//
// The kernels are compiled for AVX-512, AVX2+FMA and portable C++, and chosen at run time from
// the CPU (override with MESHREC_CPU_ISA=avx512|avx2|generic).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "conv_cpu.h"
#include "sparse_binding.h"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define MESHREC_X86_KERNELS 1
#include <immintrin.h>
#endif

namespace meshrec {
namespace conv_cpu {

template <typename T>
using GemmRowsFn = void (*)(int m, const T* const* a, int64_t cin, const T* b, int64_t ldb, int64_t panel_step,
                            int npanel, T* tile, const int32_t* crow, int64_t ldc);
template <typename T>
using OuterRowsFn = void (*)(int m, const T* const* a, int64_t cin, const T* const* g, int npanel, T* gw);

// A weight-gradient kernel and the input channels (rows of the gradient) it blocks by.
template <typename T>
struct OuterKernel {
  int rows;
  OuterRowsFn<T> run;
};

// The compiled kernels of one instruction set for one scalar type. Panels are nv * lanes
// columns wide; gemm[nv] and outer[nv] exist for nv = 1, 2 and, where registers allow, 4 (null
// otherwise); outer[nv] in three row blockings, the widest first.
template <typename T>
struct KernelSet {
  const char* isa;
  int lanes;
  GemmRowsFn<T> gemm[5];
  OuterKernel<T> outer[5][3];
};

// ---- portable kernels ------------------------------------------------------------------------
namespace generic {
template <typename T>
struct VecOps {
  static constexpr int kLanes = 8;
  struct V {
    T v[kLanes];
  };
  static V load(const T* p) {
    V r;
    for (int l = 0; l < kLanes; ++l) r.v[l] = p[l];
    return r;
  }
  static void store(T* p, const V& x) {
    for (int l = 0; l < kLanes; ++l) p[l] = x.v[l];
  }
  static V broadcast(T x) {
    V r;
    for (int l = 0; l < kLanes; ++l) r.v[l] = x;
    return r;
  }
  static V fma(const V& a, const V& b, const V& c) {
    V r;
    for (int l = 0; l < kLanes; ++l) r.v[l] = a.v[l] * b.v[l] + c.v[l];
    return r;
  }
};
#include "conv_cpu_microkernels.inc"
template <typename T>
KernelSet<T> kernels() {
  return {"generic",
          VecOps<T>::kLanes,
          {nullptr, gemm_rows<T, 4, 1>, gemm_rows<T, 4, 2>, nullptr, nullptr},
          {{},
           {{4, outer_rows<T, 4, 1>}, {2, outer_rows<T, 2, 1>}, {1, outer_rows<T, 1, 1>}},
           {{4, outer_rows<T, 4, 2>}, {2, outer_rows<T, 2, 2>}, {1, outer_rows<T, 1, 2>}},
           {},
           {}}};
}
}  // namespace generic

#if defined(MESHREC_X86_KERNELS)
// ---- AVX2 + FMA (16 vector registers: at most 15 live in a block) -------------------------------
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace avx2 {
template <typename T>
struct VecOps;
template <>
struct VecOps<float> {
  using V = __m256;
  static constexpr int kLanes = 8;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V x) { _mm256_storeu_ps(p, x); }
  static V broadcast(float x) { return _mm256_set1_ps(x); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
};
template <>
struct VecOps<double> {
  using V = __m256d;
  static constexpr int kLanes = 4;
  static V load(const double* p) { return _mm256_loadu_pd(p); }
  static void store(double* p, V x) { _mm256_storeu_pd(p, x); }
  static V broadcast(double x) { return _mm256_set1_pd(x); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
};
#include "conv_cpu_microkernels.inc"
template <typename T>
KernelSet<T> kernels() {
  // No four-vector panels: with 16 registers only two rows of them fit, too few to hide latency.
  return {"avx2",
          VecOps<T>::kLanes,
          {nullptr, gemm_rows<T, 12, 1>, gemm_rows<T, 6, 2>, nullptr, nullptr},
          {{},
           {{12, outer_rows<T, 12, 1>}, {8, outer_rows<T, 8, 1>}, {4, outer_rows<T, 4, 1>}},
           {{6, outer_rows<T, 6, 2>}, {4, outer_rows<T, 4, 2>}, {2, outer_rows<T, 2, 2>}},
           {},
           {}}};
}
}  // namespace avx2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

// ---- AVX-512 (32 vector registers: at most 26 live in a block) ----------------------------------
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#endif
namespace avx512 {
template <typename T>
struct VecOps;
template <>
struct VecOps<float> {
  using V = __m512;
  static constexpr int kLanes = 16;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V x) { _mm512_storeu_ps(p, x); }
  static V broadcast(float x) { return _mm512_set1_ps(x); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
};
template <>
struct VecOps<double> {
  using V = __m512d;
  static constexpr int kLanes = 8;
  static V load(const double* p) { return _mm512_loadu_pd(p); }
  static void store(double* p, V x) { _mm512_storeu_pd(p, x); }
  static V broadcast(double x) { return _mm512_set1_pd(x); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
};
#include "conv_cpu_microkernels.inc"
template <typename T>
KernelSet<T> kernels() {
  return {"avx512",
          VecOps<T>::kLanes,
          {nullptr, gemm_rows<T, 24, 1>, gemm_rows<T, 12, 2>, nullptr, gemm_rows<T, 6, 4>},
          {{},
           {{24, outer_rows<T, 24, 1>}, {16, outer_rows<T, 16, 1>}, {8, outer_rows<T, 8, 1>}},
           {{12, outer_rows<T, 12, 2>}, {8, outer_rows<T, 8, 2>}, {4, outer_rows<T, 4, 2>}},
           {},
           {{6, outer_rows<T, 6, 4>}, {4, outer_rows<T, 4, 4>}, {2, outer_rows<T, 2, 4>}}}};
}
}  // namespace avx512
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // MESHREC_X86_KERNELS

// ---- run-time choice of the instruction set ------------------------------------------------------

enum class Isa { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };

Isa detect_isa() {
  Isa best = Isa::kGeneric;
#if defined(MESHREC_X86_KERNELS)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::kAvx2;
  if (best == Isa::kAvx2 && __builtin_cpu_supports("avx512f")) best = Isa::kAvx512;
#endif
  // MESHREC_CPU_ISA lowers the choice (tests run every path); it never raises it above the CPU's.
  if (const char* requested = std::getenv("MESHREC_CPU_ISA")) {
    const std::string name(requested);
    Isa wanted = best;
    if (name == "generic") wanted = Isa::kGeneric;
    else if (name == "avx2") wanted = Isa::kAvx2;
    else if (name == "avx512") wanted = Isa::kAvx512;
    else TORCH_WARN("meshrec: MESHREC_CPU_ISA='", name, "' is not one of avx512, avx2, generic; ignored");
    best = std::min(best, wanted);
  }
  return best;
}

template <typename T>
KernelSet<T> kernel_set() {
  static const Isa isa = detect_isa();
#if defined(MESHREC_X86_KERNELS)
  if (isa == Isa::kAvx512) return avx512::kernels<T>();
  if (isa == Isa::kAvx2) return avx2::kernels<T>();
#endif
  (void)isa;
  return generic::kernels<T>();
}

// Panel width in vectors: the widest the instruction set offers (of 4, 2, 1) whose padding of
// `cols` wastes less than one vector (96 channels on AVX-512 floats: two-vector panels, 96
// wide, rather than 128).
template <typename T>
int panel_vectors(int64_t cols, const KernelSet<T>& set) {
  for (int nv : {4, 2}) {
    const int64_t width = int64_t(nv) * set.lanes;
    if (set.gemm[nv] != nullptr && (cols + width - 1) / width * width - cols < set.lanes) return nv;
  }
  return 1;
}

// The weight of every offset, W[k] (cin x cout), as npanel zero-padded panels of cin x NR.
template <typename T>
std::vector<T> pack_weight(const T* weight, int64_t k_count, int64_t cin, int64_t cout, int nr, int npanel) {
  std::vector<T> packed(size_t(k_count) * npanel * cin * nr, T(0));
  for (int64_t k = 0; k < k_count; ++k) {
    const T* w = weight + k * cin * cout;
    for (int j = 0; j < npanel; ++j) {
      T* panel = packed.data() + (k * npanel + j) * cin * nr;
      for (int64_t p = 0; p < cin; ++p) {
        for (int q = 0; q < nr; ++q) {
          const int64_t c = int64_t(j) * nr + q;
          if (c < cout) panel[p * nr + q] = w[p * cout + c];
        }
      }
    }
  }
  return packed;
}

// out (rows x cout) = sum_k src[table[r, k]] @ weight[k]; src is (n_src x cin), weight (K, cin, cout).
template <typename T>
void gather_gemm(const T* src, int64_t n_src, int64_t cin, const T* weight, const int32_t* table, int64_t rows,
                 int64_t k_count, int64_t cout, T* out) {
  if (rows == 0 || cout == 0) return;
  const KernelSet<T> set = kernel_set<T>();
  const int nv = panel_vectors(cout, set);
  const int nr = nv * set.lanes;
  const int npanel = int((cout + nr - 1) / nr);
  const int64_t ldc = int64_t(npanel) * nr;
  // When the panels tile cout exactly, the kernels read the weight and write the output in
  // place; otherwise they work on zero-padded copies (a packed weight, a tile accumulator).
  const bool in_place = ldc == cout;
  std::vector<T> packed;
  if (!in_place) packed = pack_weight(weight, k_count, cin, cout, nr, npanel);
  const T* b = in_place ? weight : packed.data();
  const int64_t ldb = in_place ? cout : nr, panel_step = in_place ? nr : cin * nr, offset_step = cin * ldc;
  const GemmRowsFn<T> gemm = set.gemm[nv];
  // About 128 KiB of accumulator per tile: it stays in L2 while all offsets add into it.
  const int64_t tile_rows = std::clamp<int64_t>((int64_t(128) << 10) / (ldc * int64_t(sizeof(T))), 16, 1024);
  const int64_t tiles = (rows + tile_rows - 1) / tile_rows;
  // Deep layers have few voxels and many channels: with fewer tiles than threads, the column
  // panels of a tile are split between tasks too. Each output element is still summed by one
  // task in the same order, so the split changes nothing in the result.
  const int64_t threads = at::get_num_threads();
  const int64_t groups = tiles >= 2 * threads ? 1 : std::min<int64_t>(npanel, (2 * threads + tiles - 1) / tiles);
  const int64_t panels_per_group = (npanel + groups - 1) / groups;
  at::parallel_for(0, tiles * groups, 1, [&](int64_t task_begin, int64_t task_end) {
    std::vector<T> buffer(in_place ? 0 : size_t(tile_rows) * ldc);
    std::vector<const T*> a(tile_rows);
    std::vector<int32_t> crow(tile_rows);
    for (int64_t task = task_begin; task < task_end; ++task) {
      const int64_t t = task / groups, j0 = (task % groups) * panels_per_group;
      const int64_t j1 = std::min<int64_t>(npanel, j0 + panels_per_group);
      if (j0 >= j1) continue;
      const int64_t r0 = t * tile_rows, r1 = std::min(rows, r0 + tile_rows);
      const int64_t c0 = j0 * nr, c1 = j1 * nr;  // this task's columns of the accumulator
      T* acc = in_place ? out + r0 * cout : buffer.data();
      for (int64_t r = 0; r < r1 - r0; ++r) std::fill(acc + r * ldc + c0, acc + r * ldc + c1, T(0));
      for (int64_t k = 0; k < k_count; ++k) {
        int m = 0;
        for (int64_t r = r0; r < r1; ++r) {
          const int32_t i = table[r * k_count + k];
          if (i < 0) continue;
          TORCH_CHECK(i < n_src, "meshrec: a neighbour table holds row ", i, " but its source has ", n_src, " rows");
          a[m] = src + int64_t(i) * cin;
          crow[m++] = int32_t(r - r0);
        }
        if (m > 0) {
          gemm(m, a.data(), cin, b + k * offset_step + j0 * panel_step, ldb, panel_step, int(j1 - j0), acc + c0,
               crow.data(), ldc);
        }
      }
      if (!in_place) {
        const int64_t width = std::min(cout, c1) - c0;
        for (int64_t r = r0; r < r1; ++r) {
          std::memcpy(out + r * cout + c0, acc + (r - r0) * ldc + c0, sizeof(T) * width);
        }
      }
    }
  });
}

constexpr int kPairsPerChunk = 64;
constexpr int64_t kRowsPerRange = 16384;
constexpr int64_t kPartialBytes = int64_t(64) << 20;

// The blocking of the input channels that wastes least: fewest blocks of (MR + 4), counting
// the rows a partial block computes in vain and a fixed cost per block.
template <typename T>
OuterKernel<T> pick_outer(const OuterKernel<T> (&options)[3], int64_t cin) {
  OuterKernel<T> best = options[0];
  int64_t best_cost = -1;
  for (const OuterKernel<T>& option : options) {
    const int64_t cost = (cin + option.rows - 1) / option.rows * (option.rows + 4);
    if (best_cost < 0 || cost < best_cost) best = option, best_cost = cost;
  }
  return best;
}

// grad_weight[k] (cin x cout) = sum_r features[table[r, k]]^T grad[r].
template <typename T>
void weight_grad(const T* features, int64_t n_in, int64_t cin, const T* grad, int64_t cout, const int32_t* table,
                 int64_t rows, int64_t k_count, T* grad_weight) {
  std::fill(grad_weight, grad_weight + k_count * cin * cout, T(0));
  if (rows == 0 || cin == 0 || cout == 0 || k_count == 0) return;
  const KernelSet<T> set = kernel_set<T>();
  const int nv = panel_vectors(cout, set);
  const int nr = nv * set.lanes;
  const int npanel = int((cout + nr - 1) / nr);
  const int64_t ld = int64_t(npanel) * nr;
  const OuterRowsFn<T> outer = pick_outer(set.outer[nv], cin).run;
  // Gradient rows are read in place when the panels tile cout, else from a padded copy.
  const bool in_place = ld == cout;
  // Rows are split into ranges; a task is (range, offset) with its own partial sum. The split
  // depends only on the problem size (never on the thread count), so the reduction order, and
  // with it the result, is fixed.
  const int64_t partial_elems = cin * ld;
  const int64_t max_ranges = std::max<int64_t>(1, kPartialBytes / (k_count * partial_elems * int64_t(sizeof(T))));
  const int64_t ranges = std::clamp<int64_t>((rows + kRowsPerRange - 1) / kRowsPerRange, 1, max_ranges);
  const int64_t rows_per_range = (rows + ranges - 1) / ranges;
  std::vector<T> partial(size_t(ranges * k_count * partial_elems), T(0));
  at::parallel_for(0, ranges * k_count, 1, [&](int64_t task_begin, int64_t task_end) {
    std::vector<const T*> a(kPairsPerChunk), g(kPairsPerChunk);
    std::vector<T> padded(in_place ? 0 : size_t(kPairsPerChunk) * ld, T(0));
    for (int64_t task = task_begin; task < task_end; ++task) {
      const int64_t range = task / k_count, k = task % k_count;
      const int64_t r_begin = range * rows_per_range, r_end = std::min(rows, r_begin + rows_per_range);
      T* gw = partial.data() + task * partial_elems;
      int m = 0;
      for (int64_t r = r_begin; r < r_end; ++r) {
        const int32_t i = table[r * k_count + k];
        if (i >= 0) {
          TORCH_CHECK(i < n_in, "meshrec: neighbors holds row ", i, " but features has ", n_in, " rows");
          a[m] = features + int64_t(i) * cin;
          // Gathered rows defeat the hardware prefetcher; the chunk is multiplied only once full,
          // so loads started now have landed by then.
          for (int64_t line = 0; line < cin; line += 64 / int64_t(sizeof(T))) __builtin_prefetch(a[m] + line);
          if (in_place) {
            g[m] = grad + r * cout;
          } else {
            std::memcpy(padded.data() + m * ld, grad + r * cout, sizeof(T) * cout);
            g[m] = padded.data() + m * ld;
          }
          ++m;
        }
        if (m == kPairsPerChunk || (r + 1 == r_end && m > 0)) {
          outer(m, a.data(), cin, g.data(), npanel, gw);
          m = 0;
        }
      }
    }
  });
  at::parallel_for(0, k_count * cin, 64, [&](int64_t begin, int64_t end) {
    for (int64_t kp = begin; kp < end; ++kp) {
      const int64_t k = kp / cin, p = kp % cin;
      T* dst = grad_weight + kp * cout;
      for (int64_t range = 0; range < ranges; ++range) {
        const T* src = partial.data() + (range * k_count + k) * partial_elems + p * ld;
        for (int64_t c = 0; c < cout; ++c) dst[c] += src[c];
      }
    }
  });
}

}  // namespace conv_cpu

namespace {

at::Tensor sparse_conv_cpu(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& neighbors,
                           const at::Tensor& reverse_neighbors) {
  check_conv_inputs(features, weight, neighbors, reverse_neighbors);
  const at::Tensor f = features.contiguous();
  const at::Tensor w = weight.contiguous();
  const at::Tensor table = neighbors.contiguous();
  const int64_t rows = table.size(0), k_count = w.size(0), cin = w.size(1), cout = w.size(2);
  at::Tensor out = at::empty({rows, cout}, f.options());
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "meshrec::sparse_conv", [&] {
    conv_cpu::gather_gemm<scalar_t>(f.const_data_ptr<scalar_t>(), f.size(0), cin, w.const_data_ptr<scalar_t>(),
                                    table.const_data_ptr<int32_t>(), rows, k_count, cout,
                                    out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

at::Tensor sparse_conv_weight_grad_cpu(const at::Tensor& features, const at::Tensor& grad_output,
                                       const at::Tensor& neighbors, const at::Tensor& reverse_neighbors) {
  check_conv_weight_grad_inputs(features, grad_output, neighbors, reverse_neighbors);
  const at::Tensor f = features.contiguous();
  const at::Tensor g = grad_output.contiguous();
  const at::Tensor table = neighbors.contiguous();
  const int64_t k_count = table.size(1), cin = f.size(1), cout = g.size(1);
  at::Tensor grad_weight = at::empty({k_count, cin, cout}, f.options());
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "meshrec::sparse_conv_weight_grad", [&] {
    conv_cpu::weight_grad<scalar_t>(f.const_data_ptr<scalar_t>(), f.size(0), cin, g.const_data_ptr<scalar_t>(), cout,
                                    table.const_data_ptr<int32_t>(), table.size(0), k_count,
                                    grad_weight.mutable_data_ptr<scalar_t>());
  });
  return grad_weight;
}

}  // namespace

std::string sparse_cpu_kernels() { return conv_cpu::kernel_set<float>().isa; }

TORCH_LIBRARY_IMPL(meshrec, CPU, m) {
  m.impl("sparse_conv", &sparse_conv_cpu);
  m.impl("sparse_conv_weight_grad", &sparse_conv_weight_grad_cpu);
}

}  // namespace meshrec
