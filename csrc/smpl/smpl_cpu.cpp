// CPU kernels of the SMPL ops: meshrec::smpl_lbs (+ backward) and meshrec::joint_regression
// (+ backward).
//
// Forward, per chunk of at most kBodiesPerChunk bodies (bounding the scratch memory):
//  1. prepare (parallel over bodies): coefficients x = [betas ; pose feature], forward
//     kinematics, the joint transforms, and the posed joints (written to the output).
//  2. blend + skin (work items = panel of 64 vertices x group of up to 64 bodies, handed out on
//     demand): a register-tiled GEMM of the coefficients with the packed blend shapes gives the
//     posed-template offsets of a few bodies in an L1 scratch tile, which is skinned at once and
//     written out. The B x V x 3 posed template never exists in memory (unless kept for the
//     backward), nor does smplx's B x V x 16 per-vertex transform. Items of one panel are
//     consecutive, so a thread streams each panel from memory once and reuses it from L2.
//  3. regressed joints (parallel over bodies): the sparse regressor applied to the finished
//     vertices.
// Backward recomputes the kinematics, runs one pass over the vertices (per-vertex gradients of
// the posed template and per-joint transform gradients, reduced in a fixed order), walks the
// tree backwards, and gets the blend-shape gradients from two GEMMs through ATen (BLAS).
// Forward outputs are bitwise independent of the thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../common/cpu_simd.h"
#include "../common/parallel.h"
#include "lbs.h"
#include "smpl_binding.h"

namespace meshrec {
namespace {

using smpl::kMaxJoints;
using smpl::kTransformSize;

constexpr int64_t kBodiesPerChunk = 1024;   // bodies whose coefficients and transforms are held at once
constexpr int64_t kPanel = smpl::kPanelColumns;
constexpr int64_t kBodiesPerItem = 64;      // bodies of a work item; they reuse the item's panel from L2
constexpr int64_t kPrefetchRows = 16;       // panel rows ahead that an item's first tile prefetches
constexpr int64_t kBackwardItems = 16;      // the backward's vertex pass splits a chunk into >= this many items
constexpr int64_t kVerticesPerSplit = 256;  // ... unless a split would hold fewer vertices than this
constexpr int64_t kInterleave = 4;          // partial sums per joint in the backward's vertex pass
constexpr int64_t kBlendBackwardBodies = 8; // up to this batch the backward's blend product is meshrec's own,
constexpr int64_t kBlendBackwardColumns = 4 * kPanel;  // ... and for any batch on models this narrow

// Single-thread costs measured on the development machine (AVX-512, float32; benchmarks/RESULTS.md,
// "Grain sizes"), for the grain sizes of common/parallel.h.
constexpr double kPrepareNanoseconds = 450.0;      // per body: kinematics and transforms
constexpr double kPanelBytesPerNanosecond = 50.0;  // streaming a blend panel from memory
constexpr double kMacsPerNanosecond = 40.0;        // the blend GEMM, once a panel is in cache
constexpr double kSkinBackwardNanoseconds = 20.0;  // per vertex of the backward's vertex pass
constexpr double kRegressNanoseconds = 3.0;        // per regressor entry and body

// Register tiling per instruction set: kLanes values per vector; a tile of R bodies holds
// kAccumulators / R vectors of columns per body (at most 12), so that the accumulators plus a
// row's vectors fit the register file (32 zmm: 24 accumulators; 16 ymm/xmm: 12), and so that one
// body still has 12 independent FMA chains (a 3-vector tile would wait on FMA latency).
template <typename T, int kVectorBytes>
struct Isa {
  static constexpr int kLanes = kVectorBytes / static_cast<int>(sizeof(T));
  static constexpr int kAccumulators = kVectorBytes == 64 ? 24 : 12;
  static constexpr int kTileRows = kVectorBytes == 64 ? 8 : 6;
  template <int kRows>
  static constexpr int tile_vectors() {
    return kAccumulators / kRows < 12 ? kAccumulators / kRows : 12;
  }
  // A joint transform (16 values) as native vectors.
  static constexpr int kTransformVectors = kTransformSize > kLanes ? kTransformSize / kLanes : 1;
  static constexpr int kTransformLanes = kTransformSize / kTransformVectors;
  using Vector = simd::Vec<T, kLanes>;
  using TransformPart = simd::Vec<T, kTransformLanes>;
};

template <typename T>
struct Model {
  const T* panels;           // (num_panels, K, kPanel): [S ; P] packed
  const T* joint_shapedirs;  // (NB, 3J)
  const int32_t* skin_joints;
  const T* skin_weights;     // (V, K)
  int64_t num_betas, num_pose, num_coefficients, num_panels, num_vertices, num_joints, skin_width;
  std::array<int, kMaxJoints> parents;
};

template <typename T>
Model<T> model_view(const SMPLSizes& s, const at::Tensor& blend_panels, const at::Tensor& joint_shapedirs,
                    at::IntArrayRef parents, const at::Tensor& skin_joints, const at::Tensor& skin_weights) {
  Model<T> m;
  m.panels = blend_panels.defined() ? blend_panels.const_data_ptr<T>() : nullptr;
  m.joint_shapedirs = joint_shapedirs.const_data_ptr<T>();
  m.skin_joints = skin_joints.const_data_ptr<int32_t>();
  m.skin_weights = skin_weights.const_data_ptr<T>();
  m.num_betas = s.num_betas;
  m.num_pose = 9 * (s.num_joints - 1);
  m.num_coefficients = m.num_betas + m.num_pose;
  m.num_panels = (3 * s.num_vertices + kPanel - 1) / kPanel;
  m.num_vertices = s.num_vertices;
  m.num_joints = s.num_joints;
  m.skin_width = s.skin_width;
  m.parents.fill(-1);
  for (int64_t j = 0; j < s.num_joints; ++j) m.parents[j] = static_cast<int>(parents[j]);
  return m;
}

// One chunk of bodies of the forward pass; pointers are at the chunk's first body.
template <typename T>
struct ForwardChunk {
  const Model<T>* model;
  const T* coefficients;     // (n, K)
  const T* transforms;       // (n, J, 16)
  const T* vertex_template;  // (1 or n, V, 3)
  int64_t template_stride;   // 0 or 3V
  const T* transl;           // (n, 3) or nullptr
  T* vertices;               // (n, V, 3)
  T* posed;                  // (n, V, 3) or nullptr
  int64_t num_bodies, num_groups;
};

// ---- blend: register-tiled GEMM of the coefficients with one panel of the blend matrices ------

// out[r][0 : tile_vectors * kLanes] = sum_k x_r[k] tile[k] for kRows bodies, where tile is a
// column range of a panel (rows kPanel apart). With kPrefetch, also pulls the panel's row
// kPrefetchRows ahead into L2 for the tiles and bodies that follow.
template <typename T, class I, int kRows, bool kPrefetch>
MESHREC_ALWAYS_INLINE void blend_tile(const T* const (&x)[kRows], int64_t num_coefficients, const T* panel,
                                      int64_t offset, T* out, int64_t out_ld) {
  using V = typename I::Vector;
  constexpr int kLanes = I::kLanes;
  constexpr int kVectorsPerTile = I::template tile_vectors<kRows>();
  V acc[kRows][kVectorsPerTile];
  for (int r = 0; r < kRows; ++r) {
    for (int v = 0; v < kVectorsPerTile; ++v) acc[r][v] = V{};
  }
  const T* tile = panel + offset;
  for (int64_t k = 0; k < num_coefficients; ++k) {
    if (kPrefetch && k + kPrefetchRows < num_coefficients) {
      const char* ahead = reinterpret_cast<const char*>(panel + (k + kPrefetchRows) * kPanel);
      for (int64_t byte = 0; byte < kPanel * static_cast<int64_t>(sizeof(T)); byte += 64) {
        __builtin_prefetch(ahead + byte, 0, 2);
      }
    }
    V m[kVectorsPerTile];
    for (int v = 0; v < kVectorsPerTile; ++v) simd::load(m[v], tile + k * kPanel + v * kLanes);
    for (int r = 0; r < kRows; ++r) {
      const V xr = x[r][k] - V{};  // broadcast (x - 0 folds to x, unlike x + 0)
      for (int v = 0; v < kVectorsPerTile; ++v) acc[r][v] += xr * m[v];
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int v = 0; v < kVectorsPerTile; ++v) simd::store(out + r * out_ld + v * kLanes, acc[r][v]);
  }
}

// ---- skinning ------------------------------------------------------------------------------------

// A blended joint transform held in native vectors; element e is at part e / lanes, lane e % lanes.
template <typename T, class I>
struct Transform {
  typename I::TransformPart part[I::kTransformVectors];
  MESHREC_ALWAYS_INLINE T operator[](int e) const { return part[e / I::kTransformLanes][e % I::kTransformLanes]; }
};

// fn(std::integral_constant<int, K>) with the model's skinning width K as a compile-time constant
// when it is 1..8, so the per-vertex loops unroll; 0 stands for any other width (a run-time loop).
template <typename F>
MESHREC_ALWAYS_INLINE void with_skin_width(int64_t width, const F& fn) {
  switch (width) {
    case 1: fn(std::integral_constant<int, 1>{}); break;
    case 2: fn(std::integral_constant<int, 2>{}); break;
    case 3: fn(std::integral_constant<int, 3>{}); break;
    case 4: fn(std::integral_constant<int, 4>{}); break;
    case 5: fn(std::integral_constant<int, 5>{}); break;
    case 6: fn(std::integral_constant<int, 6>{}); break;
    case 7: fn(std::integral_constant<int, 7>{}); break;
    case 8: fn(std::integral_constant<int, 8>{}); break;
    default: fn(std::integral_constant<int, 0>{}); break;
  }
}

// m = sum of the vertex's weighted joint transforms (the vectorised smpl::blend_transforms).
template <typename T, class I, int kSlots>
MESHREC_ALWAYS_INLINE void blend_vertex(const T* transforms, const int32_t* joints, const T* weights, int64_t width,
                                        Transform<T, I>& m) {
  const int64_t count = kSlots > 0 ? kSlots : width;
  for (int p = 0; p < I::kTransformVectors; ++p) m.part[p] = typename I::TransformPart{};
  for (int64_t s = 0; s < count; ++s) {
    const T* a = transforms + static_cast<int64_t>(joints[s]) * kTransformSize;
    const T w = weights[s];
    for (int p = 0; p < I::kTransformVectors; ++p) {
      typename I::TransformPart ap;
      simd::load(ap, a + p * I::kTransformLanes);
      m.part[p] += w * ap;
    }
  }
}

// Column k (4 lanes) of a transform held in parts of 16, 8 or 4 lanes (narrowing shuffles, which
// stay in registers; widening ones would go through the stack and stall store forwarding).
template <typename T>
MESHREC_ALWAYS_INLINE void columns(const simd::Vec<T, 16>* part, simd::Vec<T, 4> (&col)[4]) {
  col[0] = __builtin_shufflevector(part[0], part[0], 0, 1, 2, 3);
  col[1] = __builtin_shufflevector(part[0], part[0], 4, 5, 6, 7);
  col[2] = __builtin_shufflevector(part[0], part[0], 8, 9, 10, 11);
  col[3] = __builtin_shufflevector(part[0], part[0], 12, 13, 14, 15);
}
template <typename T>
MESHREC_ALWAYS_INLINE void columns(const simd::Vec<T, 8>* part, simd::Vec<T, 4> (&col)[4]) {
  col[0] = __builtin_shufflevector(part[0], part[0], 0, 1, 2, 3);
  col[1] = __builtin_shufflevector(part[0], part[0], 4, 5, 6, 7);
  col[2] = __builtin_shufflevector(part[1], part[1], 0, 1, 2, 3);
  col[3] = __builtin_shufflevector(part[1], part[1], 4, 5, 6, 7);
}
template <typename T>
MESHREC_ALWAYS_INLINE void columns(const simd::Vec<T, 4>* part, simd::Vec<T, 4> (&col)[4]) {
  for (int k = 0; k < 4; ++k) col[k] = part[k];
}

// The inverse: four columns into parts.
template <typename T>
MESHREC_ALWAYS_INLINE void from_columns(const simd::Vec<T, 4> (&col)[4], simd::Vec<T, 16>* part) {
  const simd::Vec<T, 8> low = __builtin_shufflevector(col[0], col[1], 0, 1, 2, 3, 4, 5, 6, 7);
  const simd::Vec<T, 8> high = __builtin_shufflevector(col[2], col[3], 0, 1, 2, 3, 4, 5, 6, 7);
  part[0] = __builtin_shufflevector(low, high, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}
template <typename T>
MESHREC_ALWAYS_INLINE void from_columns(const simd::Vec<T, 4> (&col)[4], simd::Vec<T, 8>* part) {
  part[0] = __builtin_shufflevector(col[0], col[1], 0, 1, 2, 3, 4, 5, 6, 7);
  part[1] = __builtin_shufflevector(col[2], col[3], 0, 1, 2, 3, 4, 5, 6, 7);
}
template <typename T>
MESHREC_ALWAYS_INLINE void from_columns(const simd::Vec<T, 4> (&col)[4], simd::Vec<T, 4>* part) {
  for (int k = 0; k < 4; ++k) part[k] = col[k];
}

// out = b [x y z 1]^T + t   (t: (t0 t1 t2 0))
template <typename T, class I>
MESHREC_ALWAYS_INLINE void apply_blended(const Transform<T, I>& b, T x, T y, T z, const simd::Vec<T, 4>& t, T* out) {
  if constexpr (I::kTransformLanes >= 4) {
    simd::Vec<T, 4> col[4];
    columns<T>(b.part, col);
    const simd::Vec<T, 4> r = col[0] * x + col[1] * y + col[2] * z + (col[3] + t);
    out[0] = r[0];
    out[1] = r[1];
    out[2] = r[2];
  } else {
    for (int k = 0; k < 3; ++k) out[k] = b[k] * x + b[4 + k] * y + b[8 + k] * z + b[12 + k] + t[k];
  }
}

// Vertices [first, first + count) of one body: posed template = template + offsets, then skinned.
template <typename T, class I, int kSlots>
MESHREC_ALWAYS_INLINE void skin_vertices(const Model<T>& m, const T* transforms, const T* transl, int64_t first,
                                         int64_t count, const T* vertex_template, const T* offsets, T* posed_out,
                                         T* out) {
  const simd::Vec<T, 4> t = transl ? simd::Vec<T, 4>{transl[0], transl[1], transl[2], T(0)} : simd::Vec<T, 4>{};
  const int32_t* joints = m.skin_joints + first * m.skin_width;
  const T* weights = m.skin_weights + first * m.skin_width;
  for (int64_t i = 0; i < count; ++i) {
    const T x = vertex_template[3 * i] + offsets[3 * i];
    const T y = vertex_template[3 * i + 1] + offsets[3 * i + 1];
    const T z = vertex_template[3 * i + 2] + offsets[3 * i + 2];
    if (posed_out != nullptr) {
      posed_out[3 * i] = x;
      posed_out[3 * i + 1] = y;
      posed_out[3 * i + 2] = z;
    }
    Transform<T, I> b;
    blend_vertex<T, I, kSlots>(transforms, joints + i * m.skin_width, weights + i * m.skin_width, m.skin_width, b);
    apply_blended<T, I>(b, x, y, z, t, out + 3 * i);
  }
}

// Offsets of one panel for kRows bodies into scratch (kRows x kPanel).
template <typename T, class I, int kRows>
MESHREC_ALWAYS_INLINE void blend_panel(const ForwardChunk<T>& c, int64_t first, const T* panel, bool prefetch,
                                       T* scratch) {
  constexpr int64_t kTileColumns = I::template tile_vectors<kRows>() * I::kLanes;
  static_assert(kPanel % kTileColumns == 0, "a panel must hold whole register tiles");
  const int64_t K = c.model->num_coefficients;
  const T* x[kRows];
  for (int r = 0; r < kRows; ++r) x[r] = c.coefficients + (first + r) * K;
  int64_t offset = 0;
  if (prefetch) {
    blend_tile<T, I, kRows, true>(x, K, panel, offset, scratch + offset, kPanel);
    offset += kTileColumns;
  }
  for (; offset < kPanel; offset += kTileColumns) {
    blend_tile<T, I, kRows, false>(x, K, panel, offset, scratch + offset, kPanel);
  }
}

template <typename T, class I>
MESHREC_ALWAYS_INLINE void blend_skin_items(const ForwardChunk<T>& c, int64_t begin, int64_t end) {
  const Model<T>& m = *c.model;
  const int64_t V = m.num_vertices;
  alignas(64) T scratch[I::kTileRows * kPanel];
  for (int64_t item = begin; item < end; ++item) {
    // Items of one panel are consecutive: a thread streams each panel once, then reuses it from L2.
    const int64_t panel_index = item / c.num_groups;
    const int64_t group = item % c.num_groups;
    const T* panel = m.panels + panel_index * m.num_coefficients * kPanel;
    const int64_t first_vertex = panel_index * (kPanel / 3);
    const int64_t count = std::min(kPanel / 3, V - first_vertex);
    const int64_t body_begin = group * kBodiesPerItem;
    const int64_t body_end = std::min(c.num_bodies, body_begin + kBodiesPerItem);
    for (int64_t first = body_begin; first < body_end;) {
      // Full tiles, then the remainder in tiles of 4, 2 and 1 bodies.
      const int64_t left = body_end - first;
      const int rows = left >= I::kTileRows ? I::kTileRows : left >= 4 ? 4 : left >= 2 ? 2 : 1;
      const bool prefetch = first == body_begin;
      switch (rows) {
        case I::kTileRows: blend_panel<T, I, I::kTileRows>(c, first, panel, prefetch, scratch); break;
        case 4: blend_panel<T, I, 4>(c, first, panel, prefetch, scratch); break;
        case 2: blend_panel<T, I, 2>(c, first, panel, prefetch, scratch); break;
        default: blend_panel<T, I, 1>(c, first, panel, prefetch, scratch); break;
      }
      for (int r = 0; r < rows; ++r) {
        const int64_t body = first + r;
        const int64_t at = body * 3 * V + 3 * first_vertex;
        with_skin_width(m.skin_width, [&](auto slots) {
          skin_vertices<T, I, decltype(slots)::value>(
              m, c.transforms + body * m.num_joints * kTransformSize, c.transl ? c.transl + 3 * body : nullptr,
              first_vertex, count, c.vertex_template + body * c.template_stride + 3 * first_vertex,
              scratch + r * kPanel, c.posed != nullptr ? c.posed + at : nullptr, c.vertices + at);
        });
      }
      first += rows;
    }
  }
}

// ---- backward: one pass over the vertices ---------------------------------------------------------

template <typename T>
struct BackwardChunk {
  const Model<T>* model;
  const T* transforms;        // (n, J, 16) recomputed
  const T* grad_vertices;     // (n, V, 3), or nullptr: zero (the vertices were not used)
  const T* grad_joints;       // (n, J + R, 3)
  const T* posed;             // (n, V, 3) saved posed template
  const int32_t* regressor_vertices;  // regressor entries, sorted by vertex
  const int32_t* regressor_rows;
  const T* regressor_weights;
  int64_t regressor_entries;
  T* grad_posed;              // (n, V, 3)
  T* partial_transforms;      // (n * splits, kInterleave, J, 16)
  T* partial_transl;          // (n * splits, 4)
  int64_t num_bodies, splits, num_joint_rows;
};

// g [x y z 1] in the transform layout: column k = g * (x, y, z, 1)[k], with g = (g0 g1 g2 0).
template <typename T, class I>
MESHREC_ALWAYS_INLINE void outer_product(const simd::Vec<T, 4>& g, T x, T y, T z,
                                         typename I::TransformPart (&part)[I::kTransformVectors]) {
  if constexpr (I::kTransformLanes >= 4) {
    const simd::Vec<T, 4> col[4] = {g * x, g * y, g * z, g};
    from_columns<T>(col, part);
  } else {
    const T coordinate[4] = {x, y, z, T(1)};
    for (int k = 0; k < 4; ++k) {
      part[2 * k] = typename I::TransformPart{g[0], g[1]} * coordinate[k];
      part[2 * k + 1] = typename I::TransformPart{g[2], T(0)} * coordinate[k];
    }
  }
}

template <typename T, class I, int kSlots>
MESHREC_ALWAYS_INLINE void skin_backward_items(const BackwardChunk<T>& c, int64_t begin, int64_t end) {
  const Model<T>& m = *c.model;
  const int64_t V = m.num_vertices, J = m.num_joints;
  const int64_t per_split = (V + c.splits - 1) / c.splits;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t body = item / c.splits, split = item % c.splits;
    const int64_t v_begin = std::min(V, split * per_split), v_end = std::min(V, v_begin + per_split);
    const T* transforms = c.transforms + body * J * kTransformSize;
    const T* grad_vertices = c.grad_vertices != nullptr ? c.grad_vertices + body * 3 * V : nullptr;
    const T* grad_regressed = c.grad_joints + (body * c.num_joint_rows + J) * 3;
    const T* posed = c.posed + body * 3 * V;
    T* grad_posed = c.grad_posed + body * 3 * V;
    T* partial = c.partial_transforms + item * kInterleave * J * kTransformSize;
    std::fill(partial, partial + kInterleave * J * kTransformSize, T(0));
    T gt0 = 0, gt1 = 0, gt2 = 0;
    // The regressed joints' gradients reach the vertices of their entries.
    int64_t entry = std::lower_bound(c.regressor_vertices, c.regressor_vertices + c.regressor_entries,
                                     static_cast<int32_t>(v_begin)) - c.regressor_vertices;
    for (int64_t i = v_begin; i < v_end; ++i) {
      T g0 = 0, g1 = 0, g2 = 0;
      if (grad_vertices != nullptr) {
        g0 = grad_vertices[3 * i];
        g1 = grad_vertices[3 * i + 1];
        g2 = grad_vertices[3 * i + 2];
      }
      for (; entry < c.regressor_entries && c.regressor_vertices[entry] == i; ++entry) {
        const T w = c.regressor_weights[entry];
        const T* gr = grad_regressed + 3 * static_cast<int64_t>(c.regressor_rows[entry]);
        g0 += w * gr[0];
        g1 += w * gr[1];
        g2 += w * gr[2];
      }
      if (g0 == T(0) && g1 == T(0) && g2 == T(0)) {
        // A vertex the loss does not read (e.g. all but the regressed ones of a joints loss)
        // contributes nothing: skip its skinning transform and outer product.
        grad_posed[3 * i] = grad_posed[3 * i + 1] = grad_posed[3 * i + 2] = T(0);
        continue;
      }
      gt0 += g0;
      gt1 += g1;
      gt2 += g2;
      const int32_t* joints = m.skin_joints + i * m.skin_width;
      const T* weights = m.skin_weights + i * m.skin_width;
      Transform<T, I> b;
      blend_vertex<T, I, kSlots>(transforms, joints, weights, m.skin_width, b);
      grad_posed[3 * i] = b[0] * g0 + b[1] * g1 + b[2] * g2;
      grad_posed[3 * i + 1] = b[4] * g0 + b[5] * g1 + b[6] * g2;
      grad_posed[3 * i + 2] = b[8] * g0 + b[9] * g1 + b[10] * g2;
      // grad_vertex [v_p ; 1]^T in the transform layout, accumulated by each joint with its weight
      // into one of kInterleave partial sums: neighbouring vertices share joints, and a single
      // accumulator per joint would chain every update through a store and a reload.
      const simd::Vec<T, 4> gv = {g0, g1, g2, T(0)};
      typename I::TransformPart outer[I::kTransformVectors];
      outer_product<T, I>(gv, posed[3 * i], posed[3 * i + 1], posed[3 * i + 2], outer);
      T* lane = partial + (i % kInterleave) * J * kTransformSize;
      for (int64_t s = 0; s < (kSlots > 0 ? kSlots : m.skin_width); ++s) {
        T* target = lane + static_cast<int64_t>(joints[s]) * kTransformSize;
        const T w = weights[s];
        for (int p = 0; p < I::kTransformVectors; ++p) {
          typename I::TransformPart sum;
          simd::load(sum, target + p * I::kTransformLanes);
          sum += w * outer[p];
          simd::store(target + p * I::kTransformLanes, sum);
        }
      }
    }
    for (int64_t k = 1; k < kInterleave; ++k) {
      const T* other = partial + k * J * kTransformSize;
      for (int64_t e = 0; e < J * kTransformSize; ++e) partial[e] += other[e];
    }
    T* gt = c.partial_transl + item * 4;
    gt[0] = gt0;
    gt[1] = gt1;
    gt[2] = gt2;
    gt[3] = T(0);
  }
}

// ---- backward: the blend shapes' share of the coefficient gradients -------------------------------

// grad_x[b, k] = sum_c M[k, c] grad_posed[b, c] for a few bodies, M = [S ; P] (K x 3V, its two
// parts row-major as the model stores them), over the 192-column blocks where some body's
// grad_posed is non-zero: a joints-only loss leaves most blocks zero, and the product then reads
// only the few blocks its vertices live in. Each row is one task's, summed in a fixed order.
template <typename T>
struct BlendBackward {
  const T* shapedirs;      // (NB, 3V)
  const T* posedirs;       // (P, 3V)
  const T* grad_posed;     // (n, 3V)
  const int64_t* blocks;   // active column blocks, ascending
  int64_t num_blocks, num_betas, columns, num_bodies;
  T* grad_betas;           // (n, NB), added to
  T* grad_pose;            // (n, J * 9), rows 9.. added to
  int64_t pose_stride;     // J * 9
};

template <typename T, class I>
MESHREC_ALWAYS_INLINE void blend_backward_rows(const BlendBackward<T>& c, int64_t begin, int64_t end) {
  using V = typename I::Vector;
  constexpr int kLanes = I::kLanes;
  for (int64_t k = begin; k < end; ++k) {
    const T* row = k < c.num_betas ? c.shapedirs + k * c.columns : c.posedirs + (k - c.num_betas) * c.columns;
    for (int64_t b0 = 0; b0 < c.num_bodies; b0 += 4) {
      const int rows = static_cast<int>(std::min<int64_t>(4, c.num_bodies - b0));
      V acc[4] = {V{}, V{}, V{}, V{}};
      T tail[4] = {0, 0, 0, 0};
      for (int64_t q = 0; q < c.num_blocks; ++q) {
        const int64_t first = c.blocks[q] * kPanel, last = std::min(c.columns, first + kPanel);
        int64_t col = first;
        for (; col + kLanes <= last; col += kLanes) {
          V m;
          simd::load(m, row + col);
          for (int r = 0; r < rows; ++r) {
            V g;
            simd::load(g, c.grad_posed + (b0 + r) * c.columns + col);
            acc[r] += m * g;
          }
        }
        for (; col < last; ++col) {
          for (int r = 0; r < rows; ++r) tail[r] += row[col] * c.grad_posed[(b0 + r) * c.columns + col];
        }
      }
      for (int r = 0; r < rows; ++r) {
        T sum = tail[r];
        for (int lane = 0; lane < kLanes; ++lane) sum += acc[r][lane];
        const int64_t b = b0 + r;
        if (k < c.num_betas) {
          c.grad_betas[b * c.num_betas + k] += sum;
        } else {
          c.grad_pose[b * c.pose_stride + 9 + (k - c.num_betas)] += sum;
        }
      }
    }
  }
}

// ---- per-ISA entry points -------------------------------------------------------------------------

template <typename T>
using ForwardItems = void (*)(const ForwardChunk<T>&, int64_t, int64_t);
template <typename T>
using BackwardItems = void (*)(const BackwardChunk<T>&, int64_t, int64_t);
template <typename T>
using BlendBackwardRows = void (*)(const BlendBackward<T>&, int64_t, int64_t);

template <typename T>
MESHREC_FLATTEN void blend_backward_baseline(const BlendBackward<T>& c, int64_t begin, int64_t end) {
  blend_backward_rows<T, Isa<T, 16>>(c, begin, end);
}
#if MESHREC_X86
template <typename T>
MESHREC_TARGET_AVX2 void blend_backward_avx2(const BlendBackward<T>& c, int64_t begin, int64_t end) {
  blend_backward_rows<T, Isa<T, 32>>(c, begin, end);
}
template <typename T>
MESHREC_TARGET_AVX512 void blend_backward_avx512(const BlendBackward<T>& c, int64_t begin, int64_t end) {
  blend_backward_rows<T, Isa<T, 64>>(c, begin, end);
}
#endif

template <typename T>
BlendBackwardRows<T> blend_backward_fn() {
#if MESHREC_X86
  switch (simd::cpu_isa()) {
    case simd::Isa::kAvx512: return &blend_backward_avx512<T>;
    case simd::Isa::kAvx2: return &blend_backward_avx2<T>;
    default: break;
  }
#endif
  return &blend_backward_baseline<T>;
}

template <typename T>
MESHREC_FLATTEN void blend_skin_baseline(const ForwardChunk<T>& c, int64_t begin, int64_t end) {
  blend_skin_items<T, Isa<T, 16>>(c, begin, end);
}
template <typename T>
MESHREC_FLATTEN void skin_backward_baseline(const BackwardChunk<T>& c, int64_t begin, int64_t end) {
  with_skin_width(c.model->skin_width, [&](auto slots) {
    skin_backward_items<T, Isa<T, 16>, decltype(slots)::value>(c, begin, end);
  });
}
#if MESHREC_X86
template <typename T>
MESHREC_TARGET_AVX2 void blend_skin_avx2(const ForwardChunk<T>& c, int64_t begin, int64_t end) {
  blend_skin_items<T, Isa<T, 32>>(c, begin, end);
}
template <typename T>
MESHREC_TARGET_AVX2 void skin_backward_avx2(const BackwardChunk<T>& c, int64_t begin, int64_t end) {
  with_skin_width(c.model->skin_width, [&](auto slots) {
    skin_backward_items<T, Isa<T, 32>, decltype(slots)::value>(c, begin, end);
  });
}
template <typename T>
MESHREC_TARGET_AVX512 void blend_skin_avx512(const ForwardChunk<T>& c, int64_t begin, int64_t end) {
  blend_skin_items<T, Isa<T, 64>>(c, begin, end);
}
template <typename T>
MESHREC_TARGET_AVX512 void skin_backward_avx512(const BackwardChunk<T>& c, int64_t begin, int64_t end) {
  with_skin_width(c.model->skin_width, [&](auto slots) {
    skin_backward_items<T, Isa<T, 64>, decltype(slots)::value>(c, begin, end);
  });
}
#endif

template <typename T>
ForwardItems<T> forward_items() {
#if MESHREC_X86
  switch (simd::cpu_isa()) {
    case simd::Isa::kAvx512: return &blend_skin_avx512<T>;
    case simd::Isa::kAvx2: return &blend_skin_avx2<T>;
    default: break;
  }
#endif
  return &blend_skin_baseline<T>;
}

template <typename T>
BackwardItems<T> backward_items() {
#if MESHREC_X86
  switch (simd::cpu_isa()) {
    case simd::Isa::kAvx512: return &skin_backward_avx512<T>;
    case simd::Isa::kAvx2: return &skin_backward_avx2<T>;
    default: break;
  }
#endif
  return &skin_backward_baseline<T>;
}

// ---- ops ------------------------------------------------------------------------------------------

// out[b, rows[e]] += weights[e] * in[b, ids[e]] over the regressor's entries, for every body
// (out zeroed first; in and out hold 3 values per row). Sequential per body: deterministic.
template <typename T>
void scatter_entries(const T* in, int64_t in_stride, const int32_t* ids, const int32_t* rows, const T* weights,
                     int64_t entries, T* out, int64_t out_rows, int64_t out_stride, int64_t num_bodies) {
  const double body_ns = kRegressNanoseconds * static_cast<double>(entries + out_rows);
  parallel_for_cost(0, num_bodies, body_ns, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const T* v = in + b * in_stride;
      T* o = out + b * out_stride;
      std::fill(o, o + 3 * out_rows, T(0));
      for (int64_t e = 0; e < entries; ++e) {
        const T w = weights[e];
        const T* p = v + 3 * static_cast<int64_t>(ids[e]);
        T* q = o + 3 * static_cast<int64_t>(rows[e]);
        q[0] += w * p[0];
        q[1] += w * p[1];
        q[2] += w * p[2];
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> smpl_lbs_cpu(
    const at::Tensor& betas_in, const at::Tensor& rotations_in, const c10::optional<at::Tensor>& transl_in,
    const at::Tensor& vertex_template_in, const at::Tensor& joint_template_in, const at::Tensor& shapedirs_in,
    const at::Tensor& posedirs_in, const at::Tensor& blend_panels_in, const at::Tensor& joint_shapedirs_in,
    at::IntArrayRef parents, const at::Tensor& skin_joints_in, const at::Tensor& skin_weights_in,
    const at::Tensor& regressor_vertices_in, const at::Tensor& regressor_rows_in,
    const at::Tensor& regressor_weights_in, int64_t num_regressed, bool save_posed) {
  const SMPLSizes s = check_smpl_forward(betas_in, rotations_in, transl_in, vertex_template_in, joint_template_in,
                                         shapedirs_in, posedirs_in, blend_panels_in, joint_shapedirs_in, parents,
                                         skin_joints_in, skin_weights_in, regressor_vertices_in, regressor_rows_in,
                                         regressor_weights_in, num_regressed);
  const at::Tensor betas = betas_in.contiguous(), rotations = rotations_in.contiguous();
  const at::Tensor vertex_template = vertex_template_in.contiguous(), joint_template = joint_template_in.contiguous();
  const at::Tensor blend_panels = blend_panels_in.contiguous();
  const at::Tensor joint_shapedirs = joint_shapedirs_in.contiguous();
  const at::Tensor skin_joints = skin_joints_in.contiguous(), skin_weights = skin_weights_in.contiguous();
  const at::Tensor regressor_vertices = regressor_vertices_in.contiguous();
  const at::Tensor regressor_rows = regressor_rows_in.contiguous();
  const at::Tensor regressor_weights = regressor_weights_in.contiguous();
  at::Tensor transl;
  if (transl_in.has_value()) transl = transl_in->contiguous();

  const int64_t B = s.batch, V = s.num_vertices, J = s.num_joints, R = s.num_regressed;
  at::Tensor vertices = at::empty({B, V, 3}, betas.options());
  at::Tensor joints = at::empty({B, J + R, 3}, betas.options());
  at::Tensor posed = save_posed ? at::empty({B, V, 3}, betas.options()) : at::empty({0}, betas.options());
  if (B == 0) return {vertices, joints, posed};

  AT_DISPATCH_FLOATING_TYPES(betas.scalar_type(), "meshrec::smpl_lbs", [&] {
    using T = scalar_t;
    const Model<T> model = model_view<T>(s, blend_panels, joint_shapedirs, parents, skin_joints, skin_weights);
    const int64_t K = model.num_coefficients;
    const int64_t chunk = std::min(B, kBodiesPerChunk);
    at::Tensor workspace = at::empty({chunk * (K + J * kTransformSize)}, betas.options());
    T* coefficients = workspace.mutable_data_ptr<T>();
    T* transforms = coefficients + chunk * K;
    const ForwardItems<T> items_fn = forward_items<T>();

    for (int64_t c0 = 0; c0 < B; c0 += chunk) {
      const int64_t n = std::min(chunk, B - c0);
      const T* betas_ptr = betas.const_data_ptr<T>() + c0 * model.num_betas;
      const T* rotations_ptr = rotations.const_data_ptr<T>() + c0 * J * 9;
      const T* transl_ptr = transl.defined() ? transl.const_data_ptr<T>() + c0 * 3 : nullptr;
      const int64_t joint_stride = s.batched_joint_template ? 3 * J : 0;
      const T* joint_template_ptr = joint_template.const_data_ptr<T>() + c0 * joint_stride;
      T* joints_ptr = joints.mutable_data_ptr<T>() + c0 * (J + R) * 3;

      parallel_for_cost(0, n, kPrepareNanoseconds, [&](int64_t begin, int64_t end) {
        T global_rotations[kMaxJoints * 9], posed_joints[kMaxJoints * 3], rest[kMaxJoints * 3];
        for (int64_t b = begin; b < end; ++b) {
          smpl::prepare_body(betas_ptr + b * model.num_betas, rotations_ptr + b * J * 9,
                             joint_template_ptr + b * joint_stride, model.joint_shapedirs, model.parents.data(),
                             static_cast<int>(model.num_betas), static_cast<int>(J), coefficients + b * K,
                             transforms + b * J * kTransformSize, posed_joints, global_rotations, rest);
          T* out = joints_ptr + b * (J + R) * 3;
          for (int64_t j = 0; j < J; ++j) {
            for (int k = 0; k < 3; ++k) out[3 * j + k] = posed_joints[3 * j + k] + (transl_ptr ? transl_ptr[3 * b + k] : T(0));
          }
        }
      });

      ForwardChunk<T> fc;
      fc.model = &model;
      fc.coefficients = coefficients;
      fc.transforms = transforms;
      fc.template_stride = s.batched_vertex_template ? 3 * V : 0;
      fc.vertex_template = vertex_template.const_data_ptr<T>() + c0 * fc.template_stride;
      fc.transl = transl_ptr;
      fc.vertices = vertices.mutable_data_ptr<T>() + c0 * 3 * V;
      fc.posed = save_posed ? posed.mutable_data_ptr<T>() + c0 * 3 * V : nullptr;
      fc.num_bodies = n;
      fc.num_groups = (n + kBodiesPerItem - 1) / kBodiesPerItem;
      // An item streams one panel (K x 192 values) and multiplies it with up to kBodiesPerItem bodies.
      const double item_ns = static_cast<double>(K * kPanel * sizeof(T)) / kPanelBytesPerNanosecond +
                             static_cast<double>(std::min(n, kBodiesPerItem) * K * kPanel) / kMacsPerNanosecond;
      parallel_dynamic(model.num_panels * fc.num_groups, item_ns,
                       [&](int64_t begin, int64_t end) { items_fn(fc, begin, end); });

      if (R > 0) {
        scatter_entries(fc.vertices, 3 * V, regressor_vertices.const_data_ptr<int32_t>(),
                        regressor_rows.const_data_ptr<int32_t>(), regressor_weights.const_data_ptr<T>(),
                        regressor_weights.numel(), joints_ptr + 3 * J, R, (J + R) * 3, n);
      }
    }
  });
  return {vertices, joints, posed};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> smpl_lbs_backward_cpu(
    const at::Tensor& grad_vertices_in, const at::Tensor& grad_joints_in, const at::Tensor& betas_in,
    const at::Tensor& rotations_in, const at::Tensor& joint_template_in, const at::Tensor& shapedirs_in,
    const at::Tensor& posedirs_in, const at::Tensor& joint_shapedirs_in, at::IntArrayRef parents,
    const at::Tensor& skin_joints_in, const at::Tensor& skin_weights_in, const at::Tensor& regressor_vertices_in,
    const at::Tensor& regressor_rows_in, const at::Tensor& regressor_weights_in, const at::Tensor& posed_in) {
  const SMPLSizes s = check_smpl_backward(grad_vertices_in, grad_joints_in, betas_in, rotations_in, joint_template_in,
                                          shapedirs_in, posedirs_in, joint_shapedirs_in, parents, skin_joints_in,
                                          skin_weights_in, regressor_vertices_in, regressor_rows_in,
                                          regressor_weights_in, posed_in);
  // An empty grad_vertices stands for zeros: the vertices were not used (no (B, V, 3) fill).
  const bool vertices_used = grad_vertices_in.numel() > 0;
  const at::Tensor grad_vertices = vertices_used ? grad_vertices_in.contiguous() : at::Tensor();
  const at::Tensor grad_joints = grad_joints_in.contiguous();
  const at::Tensor betas = betas_in.contiguous(), rotations = rotations_in.contiguous();
  const at::Tensor joint_template = joint_template_in.contiguous();
  const at::Tensor shapedirs = shapedirs_in.contiguous(), posedirs = posedirs_in.contiguous();
  const at::Tensor joint_shapedirs = joint_shapedirs_in.contiguous();
  const at::Tensor skin_joints = skin_joints_in.contiguous(), skin_weights = skin_weights_in.contiguous();
  const at::Tensor regressor_vertices = regressor_vertices_in.contiguous();
  const at::Tensor regressor_rows = regressor_rows_in.contiguous();
  const at::Tensor regressor_weights = regressor_weights_in.contiguous();
  const at::Tensor posed = posed_in.contiguous();

  const int64_t B = s.batch, V = s.num_vertices, J = s.num_joints, NB = s.num_betas;
  const int64_t joint_rows = J + s.num_regressed;
  at::Tensor grad_betas = at::empty({B, NB}, betas.options());
  at::Tensor grad_rotations = at::empty({B, J, 3, 3}, betas.options());
  at::Tensor grad_transl = at::empty({B, 3}, betas.options());
  at::Tensor grad_posed = at::empty({B, V, 3}, betas.options());
  at::Tensor grad_joint_template = at::empty({B, J, 3}, betas.options());
  if (B == 0) return {grad_betas, grad_rotations, grad_transl, grad_posed, grad_joint_template};

  AT_DISPATCH_FLOATING_TYPES(betas.scalar_type(), "meshrec::smpl_lbs_backward", [&] {
    using T = scalar_t;
    const Model<T> model = model_view<T>(s, at::Tensor(), joint_shapedirs, parents, skin_joints, skin_weights);
    const int64_t chunk = std::min(B, kBodiesPerChunk);
    // Splits of each body's vertices: enough items for the threads, none of only a few vertices.
    // They depend on the sizes only, so the fixed-order reduction below is thread-count independent.
    const int64_t splits = std::max<int64_t>(
        1, std::min({kBackwardItems, (kBackwardItems + chunk - 1) / chunk, (V + kVerticesPerSplit - 1) / kVerticesPerSplit}));
    // Per body: transforms, global rotations and rest joints; per item: partial transform and
    // translation gradients.
    const int64_t per_body = J * (kTransformSize + 9 + 3);
    const int64_t per_item = kInterleave * J * kTransformSize + 4;
    at::Tensor workspace = at::empty({chunk * per_body + chunk * splits * per_item}, betas.options());
    T* transforms = workspace.mutable_data_ptr<T>();
    T* global_rotations = transforms + chunk * J * kTransformSize;
    T* rest = global_rotations + chunk * J * 9;
    T* partial_transforms = rest + chunk * J * 3;
    T* partial_transl = partial_transforms + chunk * splits * kInterleave * J * kTransformSize;
    const BackwardItems<T> items_fn = backward_items<T>();

    for (int64_t c0 = 0; c0 < B; c0 += chunk) {
      const int64_t n = std::min(chunk, B - c0);
      const T* betas_ptr = betas.const_data_ptr<T>() + c0 * NB;
      const T* rotations_ptr = rotations.const_data_ptr<T>() + c0 * J * 9;
      const int64_t joint_stride = s.batched_joint_template ? 3 * J : 0;
      const T* joint_template_ptr = joint_template.const_data_ptr<T>() + c0 * joint_stride;
      const T* grad_joints_ptr = grad_joints.const_data_ptr<T>() + c0 * joint_rows * 3;

      parallel_for_cost(0, n, kPrepareNanoseconds, [&](int64_t begin, int64_t end) {
        T posed_joints[kMaxJoints * 3];
        for (int64_t b = begin; b < end; ++b) {
          smpl::prepare_body(betas_ptr + b * NB, rotations_ptr + b * J * 9, joint_template_ptr + b * joint_stride,
                             model.joint_shapedirs, model.parents.data(), static_cast<int>(NB), static_cast<int>(J),
                             static_cast<T*>(nullptr), transforms + b * J * kTransformSize, posed_joints,
                             global_rotations + b * J * 9, rest + b * J * 3);
        }
      });

      BackwardChunk<T> bc;
      bc.model = &model;
      bc.transforms = transforms;
      bc.grad_vertices = vertices_used ? grad_vertices.const_data_ptr<T>() + c0 * 3 * V : nullptr;
      bc.grad_joints = grad_joints_ptr;
      bc.posed = posed.const_data_ptr<T>() + c0 * 3 * V;
      bc.regressor_vertices = regressor_vertices.const_data_ptr<int32_t>();
      bc.regressor_rows = regressor_rows.const_data_ptr<int32_t>();
      bc.regressor_weights = regressor_weights.const_data_ptr<T>();
      bc.regressor_entries = regressor_weights.numel();
      bc.grad_posed = grad_posed.mutable_data_ptr<T>() + c0 * 3 * V;
      bc.partial_transforms = partial_transforms;
      bc.partial_transl = partial_transl;
      bc.num_bodies = n;
      bc.splits = splits;
      bc.num_joint_rows = joint_rows;
      const double item_ns = kSkinBackwardNanoseconds * static_cast<double>((V + splits - 1) / splits);
      parallel_dynamic(n * splits, item_ns, [&](int64_t begin, int64_t end) { items_fn(bc, begin, end); });

      T* grad_betas_ptr = grad_betas.mutable_data_ptr<T>() + c0 * NB;
      T* grad_rotations_ptr = grad_rotations.mutable_data_ptr<T>() + c0 * J * 9;
      T* grad_transl_ptr = grad_transl.mutable_data_ptr<T>() + c0 * 3;
      T* grad_joint_template_ptr = grad_joint_template.mutable_data_ptr<T>() + c0 * J * 3;
      parallel_for_cost(0, n, kPrepareNanoseconds, [&](int64_t begin, int64_t end) {
        T grad_transforms[kMaxJoints * kTransformSize], scratch_M[kMaxJoints * 9], scratch_q[kMaxJoints * 3];
        for (int64_t b = begin; b < end; ++b) {
          // Fixed-order reduction of the vertex pass's partial sums.
          std::fill(grad_transforms, grad_transforms + J * kTransformSize, T(0));
          T gt[3] = {0, 0, 0};
          for (int64_t split = 0; split < splits; ++split) {
            const T* partial = partial_transforms + (b * splits + split) * kInterleave * J * kTransformSize;
            for (int64_t e = 0; e < J * kTransformSize; ++e) grad_transforms[e] += partial[e];
            for (int k = 0; k < 3; ++k) gt[k] += partial_transl[(b * splits + split) * 4 + k];
          }
          const T* grad_posed_joints = grad_joints_ptr + b * joint_rows * 3;
          for (int64_t j = 0; j < J; ++j) {
            for (int k = 0; k < 3; ++k) gt[k] += grad_posed_joints[3 * j + k];
          }
          for (int k = 0; k < 3; ++k) grad_transl_ptr[3 * b + k] = gt[k];
          T* grad_rest = grad_joint_template_ptr + b * J * 3;
          smpl::forward_kinematics_backward(rotations_ptr + b * J * 9, rest + b * J * 3, model.parents.data(),
                                            static_cast<int>(J), global_rotations + b * J * 9, grad_transforms,
                                            grad_posed_joints, grad_rotations_ptr + b * J * 9, grad_rest, scratch_M,
                                            scratch_q);
          T* gb = grad_betas_ptr + b * NB;
          std::fill(gb, gb + NB, T(0));
          smpl::rest_joints_backward(model.joint_shapedirs, grad_rest, static_cast<int>(NB), static_cast<int>(J), gb);
        }
      });
    }
  });

  // The blend shapes' share: d/dx of v_p = T + [S ; P]^T x is [S ; P] grad_posed. A few bodies:
  // meshrec's product, which streams the rows once and skips the column blocks no gradient reaches
  // (a GEMM reads all 17 MB for them); more: BLAS GEMMs, which then run at their compute peak.
  // A model restricted to a few vertices (the joints-only path) always takes meshrec's product:
  // it is small for any batch, and BLAS would open a parallel region for it (a stall on a busy
  // machine: a fit of 8 people ran 2.3x slower next to one busy process before this).
  const at::Tensor grad_posed_rows = grad_posed.view({B, 3 * V});
  if (B <= kBlendBackwardBodies || 3 * V <= kBlendBackwardColumns) {
    AT_DISPATCH_FLOATING_TYPES(betas.scalar_type(), "meshrec::smpl_lbs_backward (blend)", [&] {
      using T = scalar_t;
      const T* gp = grad_posed.const_data_ptr<T>();
      const int64_t columns = 3 * V, num_blocks = (columns + kPanel - 1) / kPanel;
      std::vector<int64_t> blocks;
      blocks.reserve(num_blocks);
      for (int64_t q = 0; q < num_blocks; ++q) {
        const int64_t first = q * kPanel, last = std::min(columns, first + kPanel);
        bool active = false;
        for (int64_t b = 0; b < B && !active; ++b) {
          for (int64_t col = first; col < last; ++col) {
            if (gp[b * columns + col] != T(0)) {
              active = true;
              break;
            }
          }
        }
        if (active) blocks.push_back(q);
      }
      BlendBackward<T> c;
      c.shapedirs = shapedirs.const_data_ptr<T>();
      c.posedirs = posedirs.const_data_ptr<T>();
      c.grad_posed = gp;
      c.blocks = blocks.data();
      c.num_blocks = static_cast<int64_t>(blocks.size());
      c.num_betas = NB;
      c.columns = columns;
      c.num_bodies = B;
      c.grad_betas = grad_betas.mutable_data_ptr<T>();
      c.grad_pose = grad_rotations.mutable_data_ptr<T>();
      c.pose_stride = J * 9;
      const int64_t rows = NB + 9 * (J - 1);
      const double row_ns = static_cast<double>(c.num_blocks * kPanel * sizeof(T)) / kPanelBytesPerNanosecond +
                            static_cast<double>(B * c.num_blocks * kPanel) / kMacsPerNanosecond;
      const BlendBackwardRows<T> rows_fn = blend_backward_fn<T>();
      parallel_for_cost(0, rows, row_ns, [&](int64_t begin, int64_t end) { rows_fn(c, begin, end); });
    });
  } else {
    if (NB > 0) grad_betas.add_(at::mm(grad_posed_rows, shapedirs.t()));
    if (J > 1) grad_rotations.view({B, J * 9}).narrow(1, 9, 9 * (J - 1)).add_(at::mm(grad_posed_rows, posedirs.t()));
  }
  return {grad_betas, grad_rotations, grad_transl, grad_posed, grad_joint_template};
}

at::Tensor joint_regression_cpu(const at::Tensor& vertices_in, const at::Tensor& vertex_ids_in,
                                const at::Tensor& rows_in, const at::Tensor& weights_in, int64_t num_joints) {
  check_joint_regression(vertices_in, vertex_ids_in, rows_in, weights_in, num_joints);
  const at::Tensor vertices = vertices_in.contiguous(), vertex_ids = vertex_ids_in.contiguous();
  const at::Tensor rows = rows_in.contiguous(), weights = weights_in.contiguous();
  const int64_t B = vertices.size(0), V = vertices.size(1);
  at::Tensor joints = at::empty({B, num_joints, 3}, vertices.options());
  AT_DISPATCH_FLOATING_TYPES(vertices.scalar_type(), "meshrec::joint_regression", [&] {
    scatter_entries(vertices.const_data_ptr<scalar_t>(), 3 * V, vertex_ids.const_data_ptr<int32_t>(),
                    rows.const_data_ptr<int32_t>(), weights.const_data_ptr<scalar_t>(), weights.numel(),
                    joints.mutable_data_ptr<scalar_t>(), num_joints, 3 * num_joints, B);
  });
  return joints;
}

at::Tensor joint_regression_backward_cpu(const at::Tensor& grad_joints_in, const at::Tensor& vertex_ids_in,
                                         const at::Tensor& rows_in, const at::Tensor& weights_in,
                                         int64_t num_vertices) {
  check_joint_regression_backward(grad_joints_in, vertex_ids_in, rows_in, weights_in, num_vertices);
  const at::Tensor grad_joints = grad_joints_in.contiguous(), vertex_ids = vertex_ids_in.contiguous();
  const at::Tensor rows = rows_in.contiguous(), weights = weights_in.contiguous();
  const int64_t B = grad_joints.size(0), R = grad_joints.size(1);
  at::Tensor grad_vertices = at::empty({B, num_vertices, 3}, grad_joints.options());
  AT_DISPATCH_FLOATING_TYPES(grad_joints.scalar_type(), "meshrec::joint_regression_backward", [&] {
    // The transposed regressor: entries scatter each joint's gradient back to its vertex.
    scatter_entries(grad_joints.const_data_ptr<scalar_t>(), 3 * R, rows.const_data_ptr<int32_t>(),
                    vertex_ids.const_data_ptr<int32_t>(), weights.const_data_ptr<scalar_t>(), weights.numel(),
                    grad_vertices.mutable_data_ptr<scalar_t>(), num_vertices, 3 * num_vertices, B);
  });
  return grad_vertices;
}

}  // namespace

TORCH_LIBRARY_IMPL(meshrec, CPU, m) {
  m.impl("smpl_lbs", &smpl_lbs_cpu);
  m.impl("smpl_lbs_backward", &smpl_lbs_backward_cpu);
  m.impl("joint_regression", &joint_regression_cpu);
  m.impl("joint_regression_backward", &joint_regression_backward_cpu);
}

}  // namespace meshrec
