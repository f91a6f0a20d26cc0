// CUDA SMPL kernels against the host maths of csrc/smpl/lbs.h on a small random model (two and a
// half panels of vertices, a branching tree, a sparse regressor). Exits 77 (ctest: skipped)
// without a GPU.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include "rotation/rodrigues.h"
#include "smpl/lbs.h"
#include "smpl/smpl_cuda.h"
#include "test_harness.h"

using namespace meshrec;
using smpl::kTransformSize;

namespace {

constexpr int kJoints = 6, kBetas = 3, kVertices = 150, kWidth = 3, kRegressed = 4;
const int kParents[kJoints] = {-1, 0, 1, 0, 3, 3};
constexpr int kK = kBetas + 9 * (kJoints - 1);
constexpr int kPanels = (3 * kVertices + smpl::kPanelColumns - 1) / smpl::kPanelColumns;

template <typename T>
struct Device {
  T* ptr = nullptr;
  explicit Device(const std::vector<T>& host) {
    cudaMalloc(&ptr, sizeof(T) * std::max<size_t>(1, host.size()));
    cudaMemcpy(ptr, host.data(), sizeof(T) * host.size(), cudaMemcpyHostToDevice);
  }
  explicit Device(size_t count) { cudaMalloc(&ptr, sizeof(T) * std::max<size_t>(1, count)); }
  ~Device() { cudaFree(ptr); }
  std::vector<T> get(size_t count) const {
    std::vector<T> host(count);
    cudaMemcpy(host.data(), ptr, sizeof(T) * count, cudaMemcpyDeviceToHost);
    return host;
  }
};

template <typename T>
void check(int64_t count, double tolerance) {
  std::mt19937_64 rng(count + 3);
  std::normal_distribution<double> normal(0.0, 1.0);
  auto fill = [&](std::vector<T>& v, double scale) { for (auto& x : v) x = T(scale * normal(rng)); };
  std::vector<T> panels(kPanels * kK * smpl::kPanelColumns), joint_shapedirs(kBetas * 3 * kJoints);
  std::vector<T> skin_weights(kVertices * kWidth), vertex_template(3 * kVertices), joint_template(3 * kJoints);
  std::vector<int32_t> skin_joints(kVertices * kWidth);
  fill(panels, 0.05);
  for (int p = 0; p < kPanels; ++p)  // zero padding past the last vertex, as prepare_smpl_arrays packs it
    for (int k = 0; k < kK; ++k)
      for (int c = 0; c < smpl::kPanelColumns; ++c)
        if (p * smpl::kPanelColumns + c >= 3 * kVertices) panels[(p * kK + k) * smpl::kPanelColumns + c] = 0;
  fill(joint_shapedirs, 0.1);
  fill(vertex_template, 1.0);
  fill(joint_template, 1.0);
  for (int v = 0; v < kVertices; ++v) {
    for (int s = 0; s < kWidth; ++s) {
      skin_joints[v * kWidth + s] = (v + 2 * s) % kJoints;
      skin_weights[v * kWidth + s] = T(s == kWidth - 1 && v % 2 ? 0 : 1.0 / kWidth);  // some padding slots
    }
  }
  // regressor entries sorted by vertex: vertices 3, 3, 70, 149 -> rows 1, 0, 3, 2
  const std::vector<int32_t> reg_vertices = {3, 3, 70, 149}, reg_rows = {1, 0, 3, 2};
  const std::vector<T> reg_weights = {T(0.25), T(1), T(0.75), T(1)};

  std::vector<T> betas(count * kBetas), rotations(count * kJoints * 9), transl(count * 3);
  fill(betas, 2.0);
  fill(transl, 1.0);
  for (int64_t i = 0; i < count * kJoints; ++i) {
    const T w[3] = {T(normal(rng)), T(normal(rng)), T(normal(rng))};
    rotation::rodrigues_forward(w, &rotations[9 * i]);
  }

  // ---- host reference
  const int rows = kJoints + kRegressed;
  std::vector<T> vertices(count * kVertices * 3), joints(count * rows * 3), posed(count * kVertices * 3);
  std::vector<T> all_transforms(count * kJoints * kTransformSize), all_M(count * kJoints * 9), all_rest(count * kJoints * 3);
  for (int64_t b = 0; b < count; ++b) {
    T x[kK], q[kJoints * 3];
    T* transforms = &all_transforms[b * kJoints * kTransformSize];
    smpl::prepare_body(&betas[b * kBetas], &rotations[b * kJoints * 9], joint_template.data(), joint_shapedirs.data(),
                       kParents, kBetas, kJoints, x, transforms, q, &all_M[b * kJoints * 9], &all_rest[b * kJoints * 3]);
    for (int j = 0; j < kJoints; ++j)
      for (int c = 0; c < 3; ++c) joints[(b * rows + j) * 3 + c] = q[3 * j + c] + transl[3 * b + c];
    for (int v = 0; v < kVertices; ++v) {
      T p[3];
      for (int c = 0; c < 3; ++c) {
        const int column = 3 * v + c, panel = column / smpl::kPanelColumns, offset = column % smpl::kPanelColumns;
        T sum = vertex_template[column];
        for (int k = 0; k < kK; ++k) sum += x[k] * panels[(panel * kK + k) * smpl::kPanelColumns + offset];
        p[c] = posed[(b * kVertices + v) * 3 + c] = sum;
      }
      T m[kTransformSize];
      smpl::blend_transforms(transforms, &skin_joints[v * kWidth], &skin_weights[v * kWidth], kWidth, m);
      smpl::apply_transform(m, p, &transl[3 * b], &vertices[(b * kVertices + v) * 3]);
    }
    for (int r = 0; r < kRegressed; ++r)
      for (int c = 0; c < 3; ++c) joints[(b * rows + kJoints + r) * 3 + c] = 0;
    for (size_t e = 0; e < reg_vertices.size(); ++e)
      for (int c = 0; c < 3; ++c)
        joints[(b * rows + kJoints + reg_rows[e]) * 3 + c] += reg_weights[e] * vertices[(b * kVertices + reg_vertices[e]) * 3 + c];
  }

  // ---- device forward
  Device<T> d_panels(panels), d_js(joint_shapedirs), d_sw(skin_weights), d_vt(vertex_template), d_jt(joint_template);
  Device<int32_t> d_sj(skin_joints), d_rv(reg_vertices), d_rr(reg_rows);
  Device<T> d_rw(reg_weights), d_betas(betas), d_rot(rotations), d_transl(transl);
  cuda::SMPLModelView<T> model;
  model.blend_panels = d_panels.ptr;
  model.joint_shapedirs = d_js.ptr;
  model.skin_joints = d_sj.ptr;
  model.skin_weights = d_sw.ptr;
  model.num_betas = kBetas;
  model.num_joints = kJoints;
  model.num_vertices = kVertices;
  model.skin_width = kWidth;
  for (int j = 0; j < smpl::kMaxJoints; ++j) model.parents[j] = j < kJoints ? kParents[j] : -1;
  cuda::SMPLBodies<T> bodies{d_betas.ptr, d_rot.ptr, d_jt.ptr, 0, d_vt.ptr, 0, d_transl.ptr, count};
  const int64_t grouped = (count + cuda::kSMPLGroup - 1) / cuda::kSMPLGroup * cuda::kSMPLGroup;
  Device<T> d_coefficients(grouped * kK), d_transforms(count * kJoints * kTransformSize);
  Device<T> d_vertices(count * kVertices * 3), d_joints(count * rows * 3), d_posed(count * kVertices * 3);
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  EXPECT_TRUE(cuda::launch_smpl_prepare<T>(model, bodies, d_coefficients.ptr, d_transforms.ptr, d_joints.ptr, rows,
                                           nullptr, nullptr, stream) == cudaSuccess);
  EXPECT_TRUE(cuda::launch_smpl_blend_skin<T>(model, bodies, d_coefficients.ptr, d_transforms.ptr, d_vertices.ptr,
                                              d_posed.ptr, stream) == cudaSuccess);
  EXPECT_TRUE(cuda::launch_smpl_regress<T>(d_vertices.ptr, kVertices, d_rv.ptr, d_rr.ptr, d_rw.ptr, 4, kRegressed,
                                           d_joints.ptr + 3 * kJoints, rows * 3, count, stream) == cudaSuccess);
  EXPECT_TRUE(cudaStreamSynchronize(stream) == cudaSuccess);
  const auto got_vertices = d_vertices.get(vertices.size()), got_joints = d_joints.get(joints.size());
  const auto got_posed = d_posed.get(posed.size());
  for (size_t i = 0; i < vertices.size(); ++i) EXPECT_NEAR(got_vertices[i], vertices[i], tolerance);
  for (size_t i = 0; i < posed.size(); ++i) EXPECT_NEAR(got_posed[i], posed[i], tolerance);
  for (size_t i = 0; i < joints.size(); ++i) EXPECT_NEAR(got_joints[i], joints[i], tolerance);

  // ---- backward (without the blend-shape GEMMs, which the binding leaves to cuBLAS)
  std::vector<T> grad_vertices(vertices.size()), grad_joints(joints.size());
  fill(grad_vertices, 1.0);
  fill(grad_joints, 1.0);
  std::vector<T> grad_posed(posed.size()), grad_rotations(count * kJoints * 9), grad_rest(count * kJoints * 3);
  std::vector<T> grad_betas(count * kBetas), grad_transl(count * 3);
  for (int64_t b = 0; b < count; ++b) {
    T gA[kJoints * kTransformSize] = {}, gt[3] = {0, 0, 0};
    for (int v = 0; v < kVertices; ++v) {
      T g[3] = {grad_vertices[(b * kVertices + v) * 3], grad_vertices[(b * kVertices + v) * 3 + 1],
                grad_vertices[(b * kVertices + v) * 3 + 2]};
      for (size_t e = 0; e < reg_vertices.size(); ++e)
        if (reg_vertices[e] == v)
          for (int c = 0; c < 3; ++c) g[c] += reg_weights[e] * grad_joints[(b * rows + kJoints + reg_rows[e]) * 3 + c];
      for (int c = 0; c < 3; ++c) gt[c] += g[c];
      T m[kTransformSize], outer[kTransformSize];
      smpl::blend_transforms(&all_transforms[b * kJoints * kTransformSize], &skin_joints[v * kWidth],
                             &skin_weights[v * kWidth], kWidth, m);
      smpl::skin_vertex_backward(m, g, &posed[(b * kVertices + v) * 3], &grad_posed[(b * kVertices + v) * 3], outer);
      for (int s = 0; s < kWidth; ++s)
        for (int e = 0; e < kTransformSize; ++e) gA[skin_joints[v * kWidth + s] * kTransformSize + e] += skin_weights[v * kWidth + s] * outer[e];
    }
    T sM[kJoints * 9], sq[kJoints * 3];
    smpl::forward_kinematics_backward(&rotations[b * kJoints * 9], &all_rest[b * kJoints * 3], kParents, kJoints,
                                      &all_M[b * kJoints * 9], gA, &grad_joints[b * rows * 3],
                                      &grad_rotations[b * kJoints * 9], &grad_rest[b * kJoints * 3], sM, sq);
    smpl::rest_joints_backward(joint_shapedirs.data(), &grad_rest[b * kJoints * 3], kBetas, kJoints, &grad_betas[b * kBetas]);
    for (int c = 0; c < 3; ++c) {
      for (int j = 0; j < kJoints; ++j) gt[c] += grad_joints[(b * rows + j) * 3 + c];
      grad_transl[b * 3 + c] = gt[c];
    }
  }
  Device<T> d_gv(grad_vertices), d_gj(grad_joints), d_gposed(posed.size()), d_gtransforms(count * kJoints * kTransformSize);
  Device<T> d_M(count * kJoints * 9), d_rest(count * kJoints * 3), d_gR(grad_rotations.size()), d_grest(grad_rest.size());
  Device<T> d_gb(grad_betas.size()), d_gt(grad_transl.size());
  cuda::SMPLGradients<T> grads{d_gv.ptr, d_gj.ptr, rows, d_posed.ptr, d_rv.ptr, d_rr.ptr, d_rw.ptr, 4};
  EXPECT_TRUE(cuda::launch_smpl_prepare<T>(model, bodies, nullptr, d_transforms.ptr, nullptr, 0, d_M.ptr, d_rest.ptr,
                                           stream) == cudaSuccess);
  EXPECT_TRUE(cuda::launch_smpl_skin_backward<T>(model, grads, d_transforms.ptr, count, d_gposed.ptr, stream) == cudaSuccess);
  EXPECT_TRUE(cuda::launch_smpl_transform_backward<T>(model, grads, count, d_gtransforms.ptr, d_gt.ptr, stream) == cudaSuccess);
  EXPECT_TRUE(cuda::launch_smpl_kinematics_backward<T>(model, bodies, d_M.ptr, d_rest.ptr, d_gtransforms.ptr, d_gj.ptr,
                                                       rows, d_gR.ptr, d_grest.ptr, d_gb.ptr, d_gt.ptr,
                                                       stream) == cudaSuccess);
  EXPECT_TRUE(cudaStreamSynchronize(stream) == cudaSuccess);
  const double loose = tolerance * 100;
  const auto got_gposed = d_gposed.get(grad_posed.size()), got_gR = d_gR.get(grad_rotations.size());
  const auto got_grest = d_grest.get(grad_rest.size()), got_gb = d_gb.get(grad_betas.size()), got_gt = d_gt.get(grad_transl.size());
  for (size_t i = 0; i < grad_posed.size(); ++i) EXPECT_NEAR(got_gposed[i], grad_posed[i], loose);
  for (size_t i = 0; i < grad_rotations.size(); ++i) EXPECT_NEAR(got_gR[i], grad_rotations[i], loose);
  for (size_t i = 0; i < grad_rest.size(); ++i) EXPECT_NEAR(got_grest[i], grad_rest[i], loose);
  for (size_t i = 0; i < grad_betas.size(); ++i) EXPECT_NEAR(got_gb[i], grad_betas[i], loose);
  for (size_t i = 0; i < grad_transl.size(); ++i) EXPECT_NEAR(got_gt[i], grad_transl[i], loose);
  cudaStreamDestroy(stream);
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  for (int64_t count : {int64_t(0), int64_t(1), int64_t(3), int64_t(37)}) {
    check<double>(count, 1e-11);
    check<float>(count, 2e-4);
  }
  return TEST_RESULT();
}
