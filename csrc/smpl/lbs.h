// SMPL-family linear blend skinning: the per-body and per-vertex maths shared by the CPU and
// CUDA kernels (inline, host + device, no torch).
//
// Per body, with betas b (NB), joint rotations R_j (J, row-major 3x3, root first):
//   coefficients   x = [b ; vec(R_1 - I) ; ... ; vec(R_{J-1} - I)]         (NB + 9(J-1))
//   posed template v_p = T + [S ; P]^T x                                    (V x 3, a GEMM)
//   rest joints    J_r = J_T + J_S b   (J_T, J_S: the joint regressor applied to T and S once
//                                       per model, so joints cost O(J NB), not O(V))
//   kinematics     M_j = M_p R_j,  q_j = q_p + M_p (J_r,j - J_r,p)   along the tree, p = parent
//   transforms     A_j = [M_j | q_j - M_j J_r,j]  (rest position -> posed position)
//   skinning       v_i = sum_k w_ik A_k [v_p,i ; 1] + t   over the few joints k with w_ik != 0
//
// A joint transform is stored as kTransformSize = 16 values: the columns of the 3x4 matrix
// [M | a], each padded to 4 (M00 M10 M20 0 | M01 M11 M21 0 | M02 M12 M22 0 | a0 a1 a2 0). Blending
// is then a 16-wide multiply-add, and applying it is three column multiply-adds.
#pragma once

#include <cstdint>

#include "../common/hostdevice.h"

namespace meshrec {
namespace smpl {

constexpr int kTransformSize = 16;
// The blend matrices [S ; P] (K = NB + 9(J-1) rows, 3V columns) are packed once per model into
// panels of this many columns, each panel's K rows contiguous, the last panel zero-padded:
// layout (ceil(3V / 192), K, 192). A panel is read as one sequential stream, and 192 = 64 vertices
// is a multiple of every register tile's width (3 vectors of 4, 8 or 16 lanes).
constexpr int kPanelColumns = 192;
// Kinematic trees are at most this deep in joint count (SMPL 24, SMPL-H 52, SMPL-X 55); the
// per-body state lives in fixed arrays of this size (registers / local memory on the GPU).
constexpr int kMaxJoints = 64;

// Rest joints J_r = J_T + sum_l b_l J_S[l].  joint_shapedirs: (NB, 3J) row-major.
template <typename T>
MESHREC_HOST_DEVICE inline void rest_joints(const T* joint_template, const T* joint_shapedirs, const T* betas,
                                            int num_betas, int num_joints, T* rest) {
  const int n = 3 * num_joints;
  for (int i = 0; i < n; ++i) rest[i] = joint_template[i];
  for (int l = 0; l < num_betas; ++l) {
    const T b = betas[l];
    const T* row = joint_shapedirs + static_cast<int64_t>(l) * n;
    for (int i = 0; i < n; ++i) rest[i] += b * row[i];
  }
}

// Pose feature vec(R_j - I) for j >= 1: 9 (J - 1) values, joint-major then row-major (smplx's order).
template <typename T>
MESHREC_HOST_DEVICE inline void pose_feature(const T* rotations, int num_joints, T* feature) {
  for (int j = 1; j < num_joints; ++j) {
    for (int e = 0; e < 9; ++e) {
      feature[9 * (j - 1) + e] = rotations[9 * j + e] - (e % 4 == 0 ? T(1) : T(0));
    }
  }
}

// Forward kinematics of one body. parents[j] < j (the root has -1). Outputs the global rotations
// (J x 9, row-major) and the posed joints (J x 3).
template <typename T>
MESHREC_HOST_DEVICE inline void forward_kinematics(const T* rotations, const T* rest, const int* parents,
                                                   int num_joints, T* global_rotations, T* posed) {
  for (int j = 0; j < num_joints; ++j) {
    const int p = parents[j];
    const T* R = rotations + 9 * j;
    T* M = global_rotations + 9 * j;
    if (p < 0) {
      for (int e = 0; e < 9; ++e) M[e] = R[e];
      for (int c = 0; c < 3; ++c) posed[3 * j + c] = rest[3 * j + c];
      continue;
    }
    const T* Mp = global_rotations + 9 * p;
    for (int r = 0; r < 3; ++r) {
      for (int c = 0; c < 3; ++c) {
        M[3 * r + c] = Mp[3 * r] * R[c] + Mp[3 * r + 1] * R[3 + c] + Mp[3 * r + 2] * R[6 + c];
      }
    }
    const T d0 = rest[3 * j] - rest[3 * p], d1 = rest[3 * j + 1] - rest[3 * p + 1],
            d2 = rest[3 * j + 2] - rest[3 * p + 2];
    for (int r = 0; r < 3; ++r) {
      posed[3 * j + r] = Mp[3 * r] * d0 + Mp[3 * r + 1] * d1 + Mp[3 * r + 2] * d2 + posed[3 * p + r];
    }
  }
}

// Skinning transform of one joint: [M | q - M J_r] in the padded column layout.
template <typename T>
MESHREC_HOST_DEVICE inline void joint_transform(const T* M, const T* posed, const T* rest, T* transform) {
  for (int c = 0; c < 3; ++c) {
    for (int r = 0; r < 3; ++r) transform[4 * c + r] = M[3 * r + c];
    transform[4 * c + 3] = T(0);
  }
  for (int r = 0; r < 3; ++r) {
    transform[12 + r] = posed[r] - (M[3 * r] * rest[0] + M[3 * r + 1] * rest[1] + M[3 * r + 2] * rest[2]);
  }
  transform[15] = T(0);
}

// m = sum_s weights[s] transforms[joints[s]] over one vertex's non-zero skinning weights.
template <typename T>
MESHREC_HOST_DEVICE inline void blend_transforms(const T* transforms, const int32_t* joints, const T* weights,
                                                 int count, T* m) {
  for (int e = 0; e < kTransformSize; ++e) m[e] = T(0);
  for (int s = 0; s < count; ++s) {
    const T w = weights[s];
    const T* A = transforms + static_cast<int64_t>(joints[s]) * kTransformSize;
    for (int e = 0; e < kTransformSize; ++e) m[e] += w * A[e];
  }
}

// out = m [v ; 1] + t
template <typename T>
MESHREC_HOST_DEVICE inline void apply_transform(const T* m, const T* v, const T* t, T* out) {
  for (int r = 0; r < 3; ++r) out[r] = m[r] * v[0] + m[4 + r] * v[1] + m[8 + r] * v[2] + m[12 + r] + t[r];
}

// Vector-Jacobian product of one vertex's skinning, v = m [v_p ; 1]:
//   grad_posed = M_blend^T grad_vertex, and the outer product grad_vertex [v_p ; 1]^T in the
//   transform layout, which each joint k accumulates with weight w_ik.
template <typename T>
MESHREC_HOST_DEVICE inline void skin_vertex_backward(const T* m, const T* grad_vertex, const T* posed_vertex,
                                                     T* grad_posed, T* outer) {
  for (int c = 0; c < 3; ++c) {
    grad_posed[c] = m[4 * c] * grad_vertex[0] + m[4 * c + 1] * grad_vertex[1] + m[4 * c + 2] * grad_vertex[2];
    for (int r = 0; r < 3; ++r) outer[4 * c + r] = grad_vertex[r] * posed_vertex[c];
    outer[4 * c + 3] = T(0);
  }
  for (int r = 0; r < 3; ++r) outer[12 + r] = grad_vertex[r];
  outer[15] = T(0);
}

// Backward of forward_kinematics + joint_transform for one body.
//   grad_transforms: J x 16 (gradient of each A_j; padding entries are ignored)
//   grad_posed: J x 3 gradient of the posed joints q_j, or nullptr
// Writes grad_rotations (J x 9) and grad_rest (J x 3); scratch_M (J x 9) and scratch_q (J x 3)
// hold the gradients of the global rotations and posed joints while walking the tree backwards.
template <typename T>
MESHREC_HOST_DEVICE inline void forward_kinematics_backward(const T* rotations, const T* rest, const int* parents,
                                                            int num_joints, const T* global_rotations,
                                                            const T* grad_transforms, const T* grad_posed,
                                                            T* grad_rotations, T* grad_rest, T* scratch_M,
                                                            T* scratch_q) {
  // A_j = [M_j | q_j - M_j J_r,j]: split the transform gradient into M, q and J_r parts.
  for (int j = 0; j < num_joints; ++j) {
    const T* gA = grad_transforms + kTransformSize * j;
    const T* M = global_rotations + 9 * j;
    const T* Jr = rest + 3 * j;
    T* gM = scratch_M + 9 * j;
    T* gq = scratch_q + 3 * j;
    for (int r = 0; r < 3; ++r) {
      const T ga = gA[12 + r];
      for (int c = 0; c < 3; ++c) gM[3 * r + c] = gA[4 * c + r] - ga * Jr[c];
      gq[r] = ga + (grad_posed != nullptr ? grad_posed[3 * j + r] : T(0));
    }
    for (int c = 0; c < 3; ++c) {
      grad_rest[3 * j + c] = -(M[c] * gA[12] + M[3 + c] * gA[13] + M[6 + c] * gA[14]);
    }
  }
  // Children before parents (parents[j] < j), so each parent's gradients are complete when reached.
  for (int j = num_joints - 1; j >= 0; --j) {
    const int p = parents[j];
    const T* gM = scratch_M + 9 * j;
    const T* gq = scratch_q + 3 * j;
    T* gR = grad_rotations + 9 * j;
    if (p < 0) {
      for (int e = 0; e < 9; ++e) gR[e] = gM[e];
      for (int c = 0; c < 3; ++c) grad_rest[3 * j + c] += gq[c];
      continue;
    }
    const T* R = rotations + 9 * j;
    const T* Mp = global_rotations + 9 * p;
    T* gMp = scratch_M + 9 * p;
    // M_j = M_p R_j
    for (int a = 0; a < 3; ++a) {
      for (int b = 0; b < 3; ++b) {
        gR[3 * a + b] = Mp[a] * gM[b] + Mp[3 + a] * gM[3 + b] + Mp[6 + a] * gM[6 + b];
      }
    }
    for (int r = 0; r < 3; ++r) {
      for (int a = 0; a < 3; ++a) {
        gMp[3 * r + a] += gM[3 * r] * R[3 * a] + gM[3 * r + 1] * R[3 * a + 1] + gM[3 * r + 2] * R[3 * a + 2];
      }
    }
    // q_j = q_p + M_p (J_r,j - J_r,p)
    const T d[3] = {rest[3 * j] - rest[3 * p], rest[3 * j + 1] - rest[3 * p + 1], rest[3 * j + 2] - rest[3 * p + 2]};
    T* gqp = scratch_q + 3 * p;
    for (int r = 0; r < 3; ++r) {
      gqp[r] += gq[r];
      for (int c = 0; c < 3; ++c) gMp[3 * r + c] += gq[r] * d[c];
    }
    for (int c = 0; c < 3; ++c) {
      const T back = Mp[c] * gq[0] + Mp[3 + c] * gq[1] + Mp[6 + c] * gq[2];
      grad_rest[3 * j + c] += back;
      grad_rest[3 * p + c] -= back;
    }
  }
}

// grad_betas[l] += sum_i J_S[l][i] grad_rest[i]   (the rest joints' share of the betas gradient)
template <typename T>
MESHREC_HOST_DEVICE inline void rest_joints_backward(const T* joint_shapedirs, const T* grad_rest, int num_betas,
                                                     int num_joints, T* grad_betas) {
  const int n = 3 * num_joints;
  for (int l = 0; l < num_betas; ++l) {
    const T* row = joint_shapedirs + static_cast<int64_t>(l) * n;
    T sum = T(0);
    for (int i = 0; i < n; ++i) sum += row[i] * grad_rest[i];
    grad_betas[l] += sum;
  }
}

// Everything the blend and skinning stages need from one body, computed from its inputs.
// Writes the coefficient vector x (NB + 9(J-1)), the transforms (J x 16) and the posed joints
// (J x 3, before translation); global_rotations/rest (J x 9 / J x 3) are left for a backward pass.
template <typename T>
MESHREC_HOST_DEVICE inline void prepare_body(const T* betas, const T* rotations, const T* joint_template,
                                             const T* joint_shapedirs, const int* parents, int num_betas,
                                             int num_joints, T* coefficients, T* transforms, T* posed,
                                             T* global_rotations, T* rest) {
  rest_joints(joint_template, joint_shapedirs, betas, num_betas, num_joints, rest);
  forward_kinematics(rotations, rest, parents, num_joints, global_rotations, posed);
  for (int j = 0; j < num_joints; ++j) {
    joint_transform(global_rotations + 9 * j, posed + 3 * j, rest + 3 * j, transforms + kTransformSize * j);
  }
  if (coefficients != nullptr) {
    for (int l = 0; l < num_betas; ++l) coefficients[l] = betas[l];
    pose_feature(rotations, num_joints, coefficients + num_betas);
  }
}

}  // namespace smpl
}  // namespace meshrec
