// Launchers of the SMPL CUDA kernels: device pointers, sizes and a stream; no torch types, so the
// .cu file compiles with nvcc alone and the torch binding needs no CUDA syntax.
//
// Forward, per chunk of bodies (the binding loops over chunks so the workspace stays bounded):
//   launch_smpl_prepare      one thread per body: coefficients, kinematics, transforms, posed joints
//   launch_smpl_blend_skin   one block per (panel of 64 vertices, group of 16 bodies): the blend GEMM
//                            tile in registers, then skinning from shared memory (no V x 3 or V x 16
//                            intermediate in global memory)
//   launch_smpl_regress      one thread per (body, regressed joint)
// Backward: launch_smpl_prepare (recompute, keeping rotations and rest joints), then
//   launch_smpl_skin_backward      one thread per (body, vertex): grad of the posed template
//   launch_smpl_transform_backward one warp per (body, joint): transform gradients, reduced over the
//                                  joint's vertices in a fixed order (deterministic, no atomics)
//   launch_smpl_kinematics_backward one thread per body: the tree walked backwards
// and the blend-shape GEMMs, which the binding runs through ATen (cuBLAS).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "lbs.h"

namespace meshrec {
namespace cuda {

// Bodies per group of the blend kernel; coefficients are stored group by group, k-major within
// a group: coefficients[(group * K + k) * kSMPLGroup + body % kSMPLGroup].
constexpr int kSMPLGroup = 16;

template <typename T>
struct SMPLModelView {
  const T* blend_panels;     // (panels, K, 192)
  const T* joint_shapedirs;  // (NB, 3J)
  const int32_t* skin_joints;
  const T* skin_weights;     // (V, skin_width)
  int num_betas;
  int num_joints;
  int num_vertices;
  int skin_width;
  int parents[smpl::kMaxJoints];
};

// The inputs of a chunk of `count` bodies, each pointer at the chunk's first body.
template <typename T>
struct SMPLBodies {
  const T* betas;            // (count, NB)
  const T* rotations;        // (count, J, 9)
  const T* joint_template;   // (1 or count, J, 3)
  int64_t joint_template_stride;  // 0 or 3J
  const T* vertex_template;  // (1 or count, V, 3)
  int64_t vertex_template_stride;  // 0 or 3V
  const T* transl;           // (count, 3) or nullptr
  int64_t count;
};

// coefficients: grouped layout above, ceil(count / 16) * 16 * K values (zeroed by the launcher);
// transforms: (count, J, 16); joints: (count, joint_rows, 3), the first J rows written (posed
// joints + transl); coefficients, joints, global_rotations (count, J, 9) and rest (count, J, 3) are
// written when not null.
template <typename T>
cudaError_t launch_smpl_prepare(const SMPLModelView<T>& model, const SMPLBodies<T>& bodies, T* coefficients,
                                T* transforms, T* joints, int64_t joint_rows, T* global_rotations, T* rest,
                                cudaStream_t stream);

// vertices (count, V, 3); posed (count, V, 3) or nullptr.
template <typename T>
cudaError_t launch_smpl_blend_skin(const SMPLModelView<T>& model, const SMPLBodies<T>& bodies,
                                   const T* coefficients, const T* transforms, T* vertices, T* posed,
                                   cudaStream_t stream);

// out[b, r] = sum over the regressor entries of row r of weight * in[b, vertex]; in has
// in_rows rows of 3 values per body, out has out_stride values per body, rows from out_offset.
template <typename T>
cudaError_t launch_smpl_regress(const T* in, int64_t in_rows, const int32_t* vertex_ids, const int32_t* rows,
                                const T* weights, int64_t entries, int64_t num_rows, T* out, int64_t out_stride,
                                int64_t count, cudaStream_t stream);

// The transposed regressor: out[b, v] = sum over the entries of vertex v of weight * in[b, row].
template <typename T>
cudaError_t launch_smpl_regress_transposed(const T* in, int64_t in_rows, const int32_t* vertex_ids,
                                           const int32_t* rows, const T* weights, int64_t entries,
                                           int64_t num_vertices, T* out, int64_t count, cudaStream_t stream);

template <typename T>
struct SMPLGradients {
  const T* grad_vertices;    // (count, V, 3)
  const T* grad_joints;      // (count, J + R, 3)
  int64_t joint_rows;        // J + R
  const T* posed;            // (count, V, 3) saved posed template
  const int32_t* regressor_vertices;  // regressor entries sorted by vertex
  const int32_t* regressor_rows;
  const T* regressor_weights;
  int64_t regressor_entries;
};

// grad_posed (count, V, 3) = blended rotation^T * effective vertex gradient.
template <typename T>
cudaError_t launch_smpl_skin_backward(const SMPLModelView<T>& model, const SMPLGradients<T>& grads,
                                      const T* transforms, int64_t count, T* grad_posed, cudaStream_t stream);

// grad_transforms (count, J, 16) and the vertex part of grad_transl (count, 3).
template <typename T>
cudaError_t launch_smpl_transform_backward(const SMPLModelView<T>& model, const SMPLGradients<T>& grads,
                                           int64_t count, T* grad_transforms, T* grad_transl, cudaStream_t stream);

// grad_rotations (count, J, 9), grad_joint_template (count, J, 3), grad_betas (count, NB) (the rest
// joints' part), and grad_transl += the posed joints' gradients.
template <typename T>
cudaError_t launch_smpl_kinematics_backward(const SMPLModelView<T>& model, const SMPLBodies<T>& bodies,
                                            const T* global_rotations, const T* rest, const T* grad_transforms,
                                            const T* grad_joints, int64_t joint_rows, T* grad_rotations,
                                            T* grad_joint_template, T* grad_betas, T* grad_transl,
                                            cudaStream_t stream);

}  // namespace cuda
}  // namespace meshrec
