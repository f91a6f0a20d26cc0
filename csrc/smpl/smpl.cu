// CUDA kernels of the SMPL ops (see smpl_cuda.h for the plan). Deterministic: every output value
// is computed by one thread, or reduced by one warp in a fixed order; no atomics.
#include <algorithm>

#include "../common/cuda_launch.h"
#include "lbs.h"
#include "smpl_cuda.h"

namespace meshrec {
namespace cuda {
namespace {

using smpl::kMaxJoints;
using smpl::kPanelColumns;
using smpl::kTransformSize;

constexpr int kBlendThreads = kPanelColumns / 2;  // each thread computes two columns of a panel
constexpr int kStageRows = 32;                    // coefficient rows staged in shared memory at a time
constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 4;

__device__ inline int lower_bound(const int32_t* values, int count, int32_t key) {
  int lo = 0, hi = count;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (values[mid] < key) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// ---- forward -------------------------------------------------------------------------------------

template <typename T>
__global__ void prepare_kernel(SMPLModelView<T> model, SMPLBodies<T> bodies, T* coefficients, T* transforms,
                               T* joints, int64_t joint_rows, T* global_rotations_out, T* rest_out) {
  const int J = model.num_joints, NB = model.num_betas;
  const int K = NB + 9 * (J - 1);
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < bodies.count;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    T rest[kMaxJoints * 3], M[kMaxJoints * 9], posed[kMaxJoints * 3];
    const T* betas = bodies.betas + b * NB;
    const T* rotations = bodies.rotations + b * J * 9;
    smpl::rest_joints(bodies.joint_template + b * bodies.joint_template_stride, model.joint_shapedirs, betas, NB, J,
                      rest);
    smpl::forward_kinematics(rotations, rest, model.parents, J, M, posed);
    for (int j = 0; j < J; ++j) {
      smpl::joint_transform(M + 9 * j, posed + 3 * j, rest + 3 * j, transforms + (b * J + j) * kTransformSize);
    }
    if (coefficients != nullptr) {
      T* x = coefficients + (b / kSMPLGroup) * static_cast<int64_t>(K) * kSMPLGroup + b % kSMPLGroup;
      for (int l = 0; l < NB; ++l) x[l * kSMPLGroup] = betas[l];
      for (int j = 1; j < J; ++j) {
        for (int e = 0; e < 9; ++e) {
          x[(NB + 9 * (j - 1) + e) * kSMPLGroup] = rotations[9 * j + e] - (e % 4 == 0 ? T(1) : T(0));
        }
      }
    }
    if (joints != nullptr) {
      T* out = joints + b * joint_rows * 3;
      for (int j = 0; j < J; ++j) {
        for (int c = 0; c < 3; ++c) {
          out[3 * j + c] = posed[3 * j + c] + (bodies.transl ? bodies.transl[3 * b + c] : T(0));
        }
      }
    }
    if (global_rotations_out != nullptr) {
      for (int i = 0; i < 9 * J; ++i) global_rotations_out[b * 9 * J + i] = M[i];
      for (int i = 0; i < 3 * J; ++i) rest_out[b * 3 * J + i] = rest[i];
    }
  }
}

// One block: a panel (64 vertices, 192 columns) for one group of bodies. The GEMM tile lives in
// registers (kRows bodies x 2 columns per thread), the coefficient rows are staged in shared
// memory (read as broadcasts), then the tile moves to shared memory for skinning.
template <typename T, int kRows>
__global__ void __launch_bounds__(kBlendThreads) blend_skin_kernel(SMPLModelView<T> model, SMPLBodies<T> bodies,
                                                                  const T* coefficients, const T* transforms,
                                                                  T* vertices, T* posed, int64_t num_groups) {
  __shared__ T stage[kStageRows][kSMPLGroup];
  __shared__ T tile[kRows][kPanelColumns];
  const int64_t group = blockIdx.y + static_cast<int64_t>(gridDim.y) * blockIdx.z;
  if (group >= num_groups) return;
  const int panel = blockIdx.x;
  const int J = model.num_joints, V = model.num_vertices, W = model.skin_width;
  const int K = model.num_betas + 9 * (J - 1);
  const int64_t first_body = group * kSMPLGroup;
  const int rows = static_cast<int>(min(static_cast<int64_t>(kRows), bodies.count - first_body));
  const T* panel_rows = model.blend_panels + static_cast<int64_t>(panel) * K * kPanelColumns;
  const T* x = coefficients + group * static_cast<int64_t>(K) * kSMPLGroup;
  const int t = threadIdx.x;

  T acc[kRows][2];
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = T(0);
  for (int k0 = 0; k0 < K; k0 += kStageRows) {
    const int rows_here = min(kStageRows, K - k0);
    for (int i = t; i < rows_here * kSMPLGroup; i += blockDim.x) {
      stage[i / kSMPLGroup][i % kSMPLGroup] = x[k0 * kSMPLGroup + i];
    }
    __syncthreads();
    for (int k = 0; k < rows_here; ++k) {
      const T* row = panel_rows + static_cast<int64_t>(k0 + k) * kPanelColumns;
      const T m0 = row[t], m1 = row[t + kBlendThreads];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const T xr = stage[k][r];
        acc[r][0] += xr * m0;
        acc[r][1] += xr * m1;
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    tile[r][t] = acc[r][0];
    tile[r][t + kBlendThreads] = acc[r][1];
  }
  __syncthreads();

  const int vertices_per_panel = kPanelColumns / 3;
  const int first_vertex = panel * vertices_per_panel;
  const int count = min(vertices_per_panel, V - first_vertex);
  for (int task = t; task < rows * vertices_per_panel; task += blockDim.x) {
    const int r = task / vertices_per_panel, v = task % vertices_per_panel;
    if (v >= count) continue;
    const int64_t body = first_body + r;
    const int64_t vertex = first_vertex + v;
    const T* tmpl = bodies.vertex_template + body * bodies.vertex_template_stride + 3 * vertex;
    const T p[3] = {tmpl[0] + tile[r][3 * v], tmpl[1] + tile[r][3 * v + 1], tmpl[2] + tile[r][3 * v + 2]};
    const int64_t at = (body * V + vertex) * 3;
    if (posed != nullptr) {
      posed[at] = p[0];
      posed[at + 1] = p[1];
      posed[at + 2] = p[2];
    }
    T m[kTransformSize];
    smpl::blend_transforms(transforms + body * J * kTransformSize, model.skin_joints + vertex * W,
                           model.skin_weights + vertex * W, W, m);
    const T zero[3] = {T(0), T(0), T(0)};
    smpl::apply_transform(m, p, bodies.transl ? bodies.transl + 3 * body : zero, vertices + at);
  }
}

template <typename T>
__global__ void regress_kernel(const T* in, int64_t in_rows, const int32_t* vertex_ids, const int32_t* rows,
                               const T* weights, int64_t entries, int64_t num_rows, T* out, int64_t out_stride,
                               int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count * num_rows;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / num_rows, r = i % num_rows;
    const T* v = in + b * in_rows * 3;
    T s0 = 0, s1 = 0, s2 = 0;
    for (int64_t e = 0; e < entries; ++e) {
      if (rows[e] != r) continue;
      const T w = weights[e];
      const T* p = v + 3 * static_cast<int64_t>(vertex_ids[e]);
      s0 += w * p[0];
      s1 += w * p[1];
      s2 += w * p[2];
    }
    T* o = out + b * out_stride + 3 * r;
    o[0] = s0;
    o[1] = s1;
    o[2] = s2;
  }
}

template <typename T>
__global__ void regress_transposed_kernel(const T* in, int64_t in_rows, const int32_t* vertex_ids, const int32_t* rows,
                                          const T* weights, int64_t entries, int64_t num_vertices, T* out,
                                          int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count * num_vertices;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / num_vertices, v = i % num_vertices;
    const T* g = in + b * in_rows * 3;
    T s0 = 0, s1 = 0, s2 = 0;
    for (int64_t e = lower_bound(vertex_ids, static_cast<int>(entries), static_cast<int32_t>(v));
         e < entries && vertex_ids[e] == v; ++e) {
      const T w = weights[e];
      const T* p = g + 3 * static_cast<int64_t>(rows[e]);
      s0 += w * p[0];
      s1 += w * p[1];
      s2 += w * p[2];
    }
    out[i * 3] = s0;
    out[i * 3 + 1] = s1;
    out[i * 3 + 2] = s2;
  }
}

// ---- backward ------------------------------------------------------------------------------------

// The gradient reaching vertex i of body b: its own plus the regressed joints' through the regressor.
template <typename T>
__device__ inline void vertex_gradient(const SMPLGradients<T>& g, int num_joints, int num_vertices, int64_t b,
                                       int64_t i, T* out) {
  const T* gv = g.grad_vertices + (b * num_vertices + i) * 3;
  out[0] = gv[0];
  out[1] = gv[1];
  out[2] = gv[2];
  if (g.regressor_entries == 0) return;
  const T* gr = g.grad_joints + (b * g.joint_rows + num_joints) * 3;
  for (int64_t e = lower_bound(g.regressor_vertices, static_cast<int>(g.regressor_entries), static_cast<int32_t>(i));
       e < g.regressor_entries && g.regressor_vertices[e] == i; ++e) {
    const T w = g.regressor_weights[e];
    const T* p = gr + 3 * static_cast<int64_t>(g.regressor_rows[e]);
    out[0] += w * p[0];
    out[1] += w * p[1];
    out[2] += w * p[2];
  }
}

template <typename T>
__global__ void skin_backward_kernel(SMPLModelView<T> model, SMPLGradients<T> grads, const T* transforms,
                                     int64_t count, T* grad_posed) {
  const int J = model.num_joints, V = model.num_vertices, W = model.skin_width;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count * V;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / V, vertex = i % V;
    T g[3];
    vertex_gradient(grads, J, V, b, vertex, g);
    T m[kTransformSize];
    smpl::blend_transforms(transforms + b * J * kTransformSize, model.skin_joints + vertex * W,
                           model.skin_weights + vertex * W, W, m);
    for (int c = 0; c < 3; ++c) grad_posed[i * 3 + c] = m[4 * c] * g[0] + m[4 * c + 1] * g[1] + m[4 * c + 2] * g[2];
  }
}

// One warp per (body, task): task j < J sums w_ij g_i [v_p,i ; 1]^T over the vertices skinned to
// joint j; task J sums the vertex gradients (the translation's). Lanes take vertices in a fixed
// stride and the warp reduces with a fixed shuffle tree, so the result is deterministic.
template <typename T>
__global__ void transform_backward_kernel(SMPLModelView<T> model, SMPLGradients<T> grads, int64_t count,
                                          T* grad_transforms, T* grad_transl) {
  const int J = model.num_joints, V = model.num_vertices, W = model.skin_width;
  const int lane = threadIdx.x % kWarp;
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp;
  const int64_t warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) / kWarp;
  for (int64_t task = warp; task < count * (J + 1); task += warps) {
    const int64_t b = task / (J + 1);
    const int j = static_cast<int>(task % (J + 1));
    T acc[kTransformSize];
    for (int e = 0; e < kTransformSize; ++e) acc[e] = T(0);
    for (int64_t i = lane; i < V; i += kWarp) {
      if (j == J) {
        T g[3];
        vertex_gradient(grads, J, V, b, i, g);
        acc[0] += g[0];
        acc[1] += g[1];
        acc[2] += g[2];
        continue;
      }
      for (int s = 0; s < W; ++s) {
        if (model.skin_joints[i * W + s] != j) continue;
        const T w = model.skin_weights[i * W + s];
        T g[3];
        vertex_gradient(grads, J, V, b, i, g);
        const T* p = grads.posed + (b * V + i) * 3;
        for (int c = 0; c < 3; ++c) {
          for (int r = 0; r < 3; ++r) acc[4 * c + r] += w * g[r] * p[c];
        }
        for (int r = 0; r < 3; ++r) acc[12 + r] += w * g[r];
      }
    }
    for (int e = 0; e < kTransformSize; ++e) {
      T v = acc[e];
      for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
      acc[e] = v;
    }
    if (lane == 0) {
      if (j == J) {
        for (int c = 0; c < 3; ++c) grad_transl[b * 3 + c] = acc[c];
      } else {
        for (int e = 0; e < kTransformSize; ++e) grad_transforms[(b * J + j) * kTransformSize + e] = acc[e];
      }
    }
  }
}

template <typename T>
__global__ void kinematics_backward_kernel(SMPLModelView<T> model, SMPLBodies<T> bodies, const T* global_rotations,
                                           const T* rest, const T* grad_transforms, const T* grad_joints,
                                           int64_t joint_rows, T* grad_rotations, T* grad_joint_template,
                                           T* grad_betas, T* grad_transl) {
  const int J = model.num_joints, NB = model.num_betas;
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < bodies.count;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    T scratch_M[kMaxJoints * 9], scratch_q[kMaxJoints * 3];
    const T* grad_posed_joints = grad_joints + b * joint_rows * 3;
    T* grad_rest = grad_joint_template + b * J * 3;
    smpl::forward_kinematics_backward(bodies.rotations + b * J * 9, rest + b * J * 3, model.parents, J,
                                      global_rotations + b * J * 9, grad_transforms + b * J * kTransformSize,
                                      grad_posed_joints, grad_rotations + b * J * 9, grad_rest, scratch_M, scratch_q);
    T* gb = grad_betas + b * NB;
    for (int l = 0; l < NB; ++l) gb[l] = T(0);
    smpl::rest_joints_backward(model.joint_shapedirs, grad_rest, NB, J, gb);
    for (int c = 0; c < 3; ++c) {
      T sum = grad_transl[b * 3 + c];
      for (int j = 0; j < J; ++j) sum += grad_posed_joints[3 * j + c];
      grad_transl[b * 3 + c] = sum;
    }
  }
}

// Bodies per thread block of the per-body kernels: small, since each thread holds a whole tree.
constexpr int kBodyThreads = 64;

inline unsigned int body_blocks(int64_t count) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>((count + kBodyThreads - 1) / kBodyThreads,
                                                                           kMaxBlocks)));
}

}  // namespace

template <typename T>
cudaError_t launch_smpl_prepare(const SMPLModelView<T>& model, const SMPLBodies<T>& bodies, T* coefficients,
                                T* transforms, T* joints, int64_t joint_rows, T* global_rotations, T* rest,
                                cudaStream_t stream) {
  if (bodies.count == 0) return cudaSuccess;
  if (coefficients != nullptr) {
    const int64_t K = model.num_betas + 9 * (model.num_joints - 1);
    const int64_t groups = (bodies.count + kSMPLGroup - 1) / kSMPLGroup;
    const cudaError_t status = cudaMemsetAsync(coefficients, 0, groups * kSMPLGroup * K * sizeof(T), stream);
    if (status != cudaSuccess) return status;
  }
  prepare_kernel<T><<<body_blocks(bodies.count), kBodyThreads, 0, stream>>>(model, bodies, coefficients, transforms,
                                                                            joints, joint_rows, global_rotations, rest);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_smpl_blend_skin(const SMPLModelView<T>& model, const SMPLBodies<T>& bodies,
                                   const T* coefficients, const T* transforms, T* vertices, T* posed,
                                   cudaStream_t stream) {
  // No vertices (a model restricted to none: joints only) is no work, not an empty grid.
  if (bodies.count == 0 || model.num_vertices == 0) return cudaSuccess;
  const int64_t groups = (bodies.count + kSMPLGroup - 1) / kSMPLGroup;
  const unsigned int panels = static_cast<unsigned int>((3 * static_cast<int64_t>(model.num_vertices) + kPanelColumns - 1) /
                                                        kPanelColumns);
  const unsigned int groups_y = static_cast<unsigned int>(std::min<int64_t>(groups, 65535));
  const unsigned int groups_z = static_cast<unsigned int>((groups + groups_y - 1) / groups_y);
  const dim3 grid(panels, groups_y, groups_z);
  // Fewer register rows for tiny batches: a single body needs no 16-row tile.
  if (bodies.count == 1) {
    blend_skin_kernel<T, 1><<<grid, kBlendThreads, 0, stream>>>(model, bodies, coefficients, transforms, vertices,
                                                                posed, groups);
  } else if (bodies.count <= 4) {
    blend_skin_kernel<T, 4><<<grid, kBlendThreads, 0, stream>>>(model, bodies, coefficients, transforms, vertices,
                                                                posed, groups);
  } else {
    blend_skin_kernel<T, kSMPLGroup><<<grid, kBlendThreads, 0, stream>>>(model, bodies, coefficients, transforms,
                                                                         vertices, posed, groups);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_smpl_regress(const T* in, int64_t in_rows, const int32_t* vertex_ids, const int32_t* rows,
                                const T* weights, int64_t entries, int64_t num_rows, T* out, int64_t out_stride,
                                int64_t count, cudaStream_t stream) {
  if (count == 0 || num_rows == 0) return cudaSuccess;
  regress_kernel<T><<<blocks_for(count * num_rows), kThreadsPerBlock, 0, stream>>>(
      in, in_rows, vertex_ids, rows, weights, entries, num_rows, out, out_stride, count);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_smpl_regress_transposed(const T* in, int64_t in_rows, const int32_t* vertex_ids,
                                           const int32_t* rows, const T* weights, int64_t entries,
                                           int64_t num_vertices, T* out, int64_t count, cudaStream_t stream) {
  if (count == 0 || num_vertices == 0) return cudaSuccess;
  regress_transposed_kernel<T><<<blocks_for(count * num_vertices), kThreadsPerBlock, 0, stream>>>(
      in, in_rows, vertex_ids, rows, weights, entries, num_vertices, out, count);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_smpl_skin_backward(const SMPLModelView<T>& model, const SMPLGradients<T>& grads,
                                      const T* transforms, int64_t count, T* grad_posed, cudaStream_t stream) {
  if (count == 0 || model.num_vertices == 0) return cudaSuccess;
  skin_backward_kernel<T><<<blocks_for(count * model.num_vertices), kThreadsPerBlock, 0, stream>>>(
      model, grads, transforms, count, grad_posed);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_smpl_transform_backward(const SMPLModelView<T>& model, const SMPLGradients<T>& grads,
                                           int64_t count, T* grad_transforms, T* grad_transl, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const int64_t warps = count * (model.num_joints + 1);
  const unsigned int blocks =
      static_cast<unsigned int>(std::min<int64_t>((warps + kWarpsPerBlock - 1) / kWarpsPerBlock, kMaxBlocks));
  transform_backward_kernel<T><<<blocks, kWarpsPerBlock * kWarp, 0, stream>>>(model, grads, count, grad_transforms,
                                                                              grad_transl);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_smpl_kinematics_backward(const SMPLModelView<T>& model, const SMPLBodies<T>& bodies,
                                            const T* global_rotations, const T* rest, const T* grad_transforms,
                                            const T* grad_joints, int64_t joint_rows, T* grad_rotations,
                                            T* grad_joint_template, T* grad_betas, T* grad_transl,
                                            cudaStream_t stream) {
  if (bodies.count == 0) return cudaSuccess;
  kinematics_backward_kernel<T><<<body_blocks(bodies.count), kBodyThreads, 0, stream>>>(
      model, bodies, global_rotations, rest, grad_transforms, grad_joints, joint_rows, grad_rotations,
      grad_joint_template, grad_betas, grad_transl);
  return cudaGetLastError();
}

#define MESHREC_INSTANTIATE_SMPL(T)                                                                                  \
  template cudaError_t launch_smpl_prepare<T>(const SMPLModelView<T>&, const SMPLBodies<T>&, T*, T*, T*, int64_t,    \
                                              T*, T*, cudaStream_t);                                                 \
  template cudaError_t launch_smpl_blend_skin<T>(const SMPLModelView<T>&, const SMPLBodies<T>&, const T*, const T*,  \
                                                 T*, T*, cudaStream_t);                                              \
  template cudaError_t launch_smpl_regress<T>(const T*, int64_t, const int32_t*, const int32_t*, const T*, int64_t,  \
                                              int64_t, T*, int64_t, int64_t, cudaStream_t);                          \
  template cudaError_t launch_smpl_regress_transposed<T>(const T*, int64_t, const int32_t*, const int32_t*,          \
                                                         const T*, int64_t, int64_t, T*, int64_t, cudaStream_t);     \
  template cudaError_t launch_smpl_skin_backward<T>(const SMPLModelView<T>&, const SMPLGradients<T>&, const T*,      \
                                                    int64_t, T*, cudaStream_t);                                      \
  template cudaError_t launch_smpl_transform_backward<T>(const SMPLModelView<T>&, const SMPLGradients<T>&, int64_t,  \
                                                         T*, T*, cudaStream_t);                                      \
  template cudaError_t launch_smpl_kinematics_backward<T>(const SMPLModelView<T>&, const SMPLBodies<T>&, const T*,   \
                                                          const T*, const T*, const T*, int64_t, T*, T*, T*, T*,     \
                                                          cudaStream_t);

MESHREC_INSTANTIATE_SMPL(float)
MESHREC_INSTANTIATE_SMPL(double)
#undef MESHREC_INSTANTIATE_SMPL

}  // namespace cuda
}  // namespace meshrec
