// Host tests of the SMPL maths shared by the CPU and CUDA kernels (csrc/smpl/lbs.h): forward
// kinematics against direct composition, and every backward against central finite differences.
#include <cmath>
#include <random>
#include <vector>

#include "rotation/rodrigues.h"
#include "smpl/lbs.h"
#include "test_harness.h"

using namespace meshrec::smpl;

namespace {

constexpr int kJoints = 6;
const int kParents[kJoints] = {-1, 0, 1, 0, 3, 3};  // a root with two branches, one forking

std::mt19937_64 rng(7);
double normal() { return std::normal_distribution<double>(0.0, 1.0)(rng); }

void random_rotations(double* R, int count) {
  for (int j = 0; j < count; ++j) {
    const double w[3] = {normal(), normal(), normal()};
    meshrec::rotation::rodrigues_forward(w, R + 9 * j);
  }
}

void matmul3(const double* a, const double* b, double* out) {
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) out[3 * r + c] = a[3 * r] * b[c] + a[3 * r + 1] * b[3 + c] + a[3 * r + 2] * b[6 + c];
}

// Loss = <grad_A, transforms> + <grad_q, posed> for the finite differences of the tree.
double tree_loss(const double* R, const double* rest, const double* gA, const double* gq) {
  double M[kJoints * 9], q[kJoints * 3], A[kJoints * kTransformSize];
  forward_kinematics(R, rest, kParents, kJoints, M, q);
  double loss = 0;
  for (int j = 0; j < kJoints; ++j) {
    joint_transform(M + 9 * j, q + 3 * j, rest + 3 * j, A + kTransformSize * j);
    for (int e = 0; e < kTransformSize; ++e) loss += gA[kTransformSize * j + e] * A[kTransformSize * j + e];
    for (int c = 0; c < 3; ++c) loss += gq[3 * j + c] * q[3 * j + c];
  }
  return loss;
}

void test_forward_kinematics_composes_along_the_tree() {
  double R[kJoints * 9], rest[kJoints * 3], M[kJoints * 9], q[kJoints * 3];
  random_rotations(R, kJoints);
  for (double& x : rest) x = normal();
  forward_kinematics(R, rest, kParents, kJoints, M, q);
  // Joint 2: M = R0 R1 R2, q = J0 + R0 (J1 - J0) + R0 R1 (J2 - J1)
  double R01[9], R012[9];
  matmul3(R, R + 9, R01);
  matmul3(R01, R + 18, R012);
  for (int e = 0; e < 9; ++e) EXPECT_NEAR(M[18 + e], R012[e], 1e-14);
  for (int r = 0; r < 3; ++r) {
    double expected = rest[r];
    for (int c = 0; c < 3; ++c) expected += R[3 * r + c] * (rest[3 + c] - rest[c]) + R01[3 * r + c] * (rest[6 + c] - rest[3 + c]);
    EXPECT_NEAR(q[6 + r], expected, 1e-14);
  }
  // A transform maps the joint's rest position to its posed position.
  double A[kTransformSize], zero[3] = {0, 0, 0}, out[3];
  joint_transform(M + 18, q + 6, rest + 6, A);
  apply_transform(A, rest + 6, zero, out);
  for (int r = 0; r < 3; ++r) EXPECT_NEAR(out[r], q[6 + r], 1e-14);
}

void test_forward_kinematics_backward_matches_finite_differences() {
  double R[kJoints * 9], rest[kJoints * 3], gA[kJoints * kTransformSize], gq[kJoints * 3];
  random_rotations(R, kJoints);
  for (double& x : rest) x = normal();
  for (double& x : gA) x = normal();
  for (double& x : gq) x = normal();
  double M[kJoints * 9], q[kJoints * 3], gR[kJoints * 9], grest[kJoints * 3], sM[kJoints * 9], sq[kJoints * 3];
  forward_kinematics(R, rest, kParents, kJoints, M, q);
  forward_kinematics_backward(R, rest, kParents, kJoints, M, gA, gq, gR, grest, sM, sq);
  const double h = 1e-6;
  for (int i = 0; i < kJoints * 9; ++i) {
    double plus[kJoints * 9], minus[kJoints * 9];
    for (int k = 0; k < kJoints * 9; ++k) plus[k] = minus[k] = R[k];
    plus[i] += h;
    minus[i] -= h;
    EXPECT_NEAR(gR[i], (tree_loss(plus, rest, gA, gq) - tree_loss(minus, rest, gA, gq)) / (2 * h), 1e-7);
  }
  for (int i = 0; i < kJoints * 3; ++i) {
    double plus[kJoints * 3], minus[kJoints * 3];
    for (int k = 0; k < kJoints * 3; ++k) plus[k] = minus[k] = rest[k];
    plus[i] += h;
    minus[i] -= h;
    EXPECT_NEAR(grest[i], (tree_loss(R, plus, gA, gq) - tree_loss(R, minus, gA, gq)) / (2 * h), 1e-7);
  }
  // Without posed-joint gradients (nullptr) the q part is absent.
  double gR2[kJoints * 9], grest2[kJoints * 3], zeros[kJoints * 3] = {};
  forward_kinematics_backward(R, rest, kParents, kJoints, M, gA, static_cast<const double*>(nullptr), gR2, grest2, sM, sq);
  double gR3[kJoints * 9], grest3[kJoints * 3];
  forward_kinematics_backward(R, rest, kParents, kJoints, M, gA, zeros, gR3, grest3, sM, sq);
  for (int i = 0; i < kJoints * 9; ++i) EXPECT_NEAR(gR2[i], gR3[i], 0);
}

void test_skinning_backward_matches_finite_differences() {
  double transforms[3 * kTransformSize];
  for (double& x : transforms) x = normal();
  const int32_t joints[3] = {2, 0, 1};
  const double weights[3] = {0.5, 0.3, 0.2};
  double m[kTransformSize];
  blend_transforms(transforms, joints, weights, 3, m);
  for (int e = 0; e < kTransformSize; ++e) {
    EXPECT_NEAR(m[e], 0.5 * transforms[32 + e] + 0.3 * transforms[e] + 0.2 * transforms[16 + e], 1e-15);
  }
  const double v[3] = {normal(), normal(), normal()}, g[3] = {normal(), normal(), normal()}, zero[3] = {0, 0, 0};
  double grad_posed[3], outer[kTransformSize];
  skin_vertex_backward(m, g, v, grad_posed, outer);
  const double h = 1e-6;
  for (int c = 0; c < 3; ++c) {
    double plus[3] = {v[0], v[1], v[2]}, minus[3] = {v[0], v[1], v[2]}, a[3], b[3];
    plus[c] += h;
    minus[c] -= h;
    apply_transform(m, plus, zero, a);
    apply_transform(m, minus, zero, b);
    EXPECT_NEAR(grad_posed[c], (g[0] * (a[0] - b[0]) + g[1] * (a[1] - b[1]) + g[2] * (a[2] - b[2])) / (2 * h), 1e-8);
  }
  for (int e = 0; e < kTransformSize; ++e) {
    if (e % 4 == 3) {
      EXPECT_NEAR(outer[e], 0, 0);  // padding
      continue;
    }
    double plus[kTransformSize], minus[kTransformSize], a[3], b[3];
    for (int k = 0; k < kTransformSize; ++k) plus[k] = minus[k] = m[k];
    plus[e] += h;
    minus[e] -= h;
    apply_transform(plus, v, zero, a);
    apply_transform(minus, v, zero, b);
    EXPECT_NEAR(outer[e], (g[0] * (a[0] - b[0]) + g[1] * (a[1] - b[1]) + g[2] * (a[2] - b[2])) / (2 * h), 1e-8);
  }
}

void test_rest_joints_and_pose_feature() {
  const int nb = 4;
  double jt[kJoints * 3], js[nb * kJoints * 3], betas[nb], rest[kJoints * 3], grad_rest[kJoints * 3];
  for (double& x : jt) x = normal();
  for (double& x : js) x = normal();
  for (double& x : betas) x = normal();
  for (double& x : grad_rest) x = normal();
  rest_joints(jt, js, betas, nb, kJoints, rest);
  double grad_betas[nb] = {0, 0, 0, 0};
  rest_joints_backward(js, grad_rest, nb, kJoints, grad_betas);
  for (int l = 0; l < nb; ++l) {
    double dot = 0;
    for (int i = 0; i < kJoints * 3; ++i) dot += js[l * kJoints * 3 + i] * grad_rest[i];
    EXPECT_NEAR(grad_betas[l], dot, 1e-13);
  }
  double R[kJoints * 9], feature[(kJoints - 1) * 9];
  random_rotations(R, kJoints);
  pose_feature(R, kJoints, feature);
  EXPECT_NEAR(feature[0], R[9] - 1, 0);
  EXPECT_NEAR(feature[1], R[10], 0);
  EXPECT_NEAR(feature[8], R[17] - 1, 0);
}

}  // namespace

int main() {
  test_forward_kinematics_composes_along_the_tree();
  test_forward_kinematics_backward_matches_finite_differences();
  test_skinning_backward_matches_finite_differences();
  test_rest_joints_and_pose_feature();
  return TEST_RESULT();
}
