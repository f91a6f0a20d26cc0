// Every schema of the meshrec op namespace, declared once. Kernels register per backend in
// their own files (TORCH_LIBRARY_IMPL); autograd and fake kernels are registered from Python,
// one module per op family (meshrec/ops/_registrations/<family>.py): set_python_module before
// each family's schemas names that module, so the dispatcher can import it on demand.
#include <torch/library.h>
#include <torch/version.h>

#include <string>

#include "sparse/conv_cpu.h"

#ifndef MESHREC_VERSION
#define MESHREC_VERSION "unknown"
#endif
#ifndef MESHREC_CUDA_ARCHS
#define MESHREC_CUDA_ARCHS ""
#endif

namespace meshrec {
namespace {

// JSON describing how this binary was built; read by meshrec.info().
std::string build_info() {
  std::string json = "{";
  json += "\"meshrec_version\": \"" MESHREC_VERSION "\", ";
  json += "\"torch_version\": \"" TORCH_VERSION "\", ";
#if defined(MESHREC_WITH_CUDA)
  json += "\"cuda\": true, \"cuda_archs\": \"" MESHREC_CUDA_ARCHS "\", ";
#else
  json += "\"cuda\": false, \"cuda_archs\": \"\", ";
#endif
#if defined(_OPENMP)
  json += "\"openmp\": true, ";
#else
  json += "\"openmp\": false, ";
#endif
#if defined(__clang__)
  json += "\"compiler\": \"clang " __clang_version__ "\"";
#elif defined(__GNUC__)
  json += "\"compiler\": \"gcc " __VERSION__ "\"";
#else
  json += "\"compiler\": \"unknown\"";
#endif
  json += "}";
  return json;
}

}  // namespace

TORCH_LIBRARY(meshrec, m) {
  m.def("_build_info() -> str", &build_info);

  // ---- rotation: axis-angle (..., 3) -> rotation matrices (..., 3, 3)
  m.set_python_module("meshrec.ops._registrations.rotation");
  m.def("rodrigues(Tensor axis_angle) -> Tensor");
  m.def("rodrigues_backward(Tensor grad_rotation, Tensor axis_angle) -> Tensor");

  // ---- metrics: Procrustes alignment, scene SDF sampling, inside-mesh and nearest-point queries
  m.set_python_module("meshrec.ops._registrations.metrics");
  m.def(
      "procrustes(Tensor source, Tensor target, Tensor? weights, bool scaling) -> "
      "(Tensor aligned, Tensor scale, Tensor rotation, Tensor translation, Tensor residual)");
  m.def(
      "procrustes_backward(Tensor? grad_aligned, Tensor? grad_scale, Tensor? grad_rotation, Tensor? grad_translation, "
      "Tensor? grad_residual, Tensor source, Tensor target, Tensor? weights, bool scaling) -> "
      "(Tensor grad_source, Tensor grad_target, Tensor grad_weights)");
  m.def("sample_sdf(Tensor points, Tensor sdf, float[] grid_min, float[] grid_max) -> Tensor");
  m.def(
      "sample_sdf_backward(Tensor grad_values, Tensor points, Tensor sdf, float[] grid_min, float[] grid_max) -> "
      "Tensor");
  m.def("winding_number(Tensor points, Tensor vertices, Tensor faces) -> Tensor");
  m.def("nearest_points(Tensor queries, Tensor points) -> (Tensor distance, Tensor index)");
  // ---- smpl: SMPL-family linear blend skinning and sparse joint regressors
  // smpl_lbs: vertices (B, V, 3) and joints (B, J + R, 3): the J posed kinematic joints, then the
  // R rows of a sparse regressor (entries sorted by vertex) applied to the vertices; transl is
  // added to both. blend_panels packs [shapedirs ; posedirs] for the forward GEMM (csrc/smpl/lbs.h);
  // the backward uses shapedirs and posedirs as they are. posed_template
  // is (B, V, 3) with save_posed (kept for the backward), else empty.
  m.set_python_module("meshrec.ops._registrations.smpl");
  m.def(
      "smpl_lbs(Tensor betas, Tensor rotations, Tensor? transl, Tensor vertex_template, Tensor joint_template, "
      "Tensor shapedirs, Tensor posedirs, Tensor blend_panels, Tensor joint_shapedirs, int[] parents, "
      "Tensor skin_joints, Tensor skin_weights, Tensor regressor_vertices, Tensor regressor_rows, Tensor regressor_weights, "
      "int num_regressed, bool save_posed) -> (Tensor vertices, Tensor joints, Tensor posed_template)");
  m.def(
      "smpl_lbs_backward(Tensor grad_vertices, Tensor grad_joints, Tensor betas, Tensor rotations, "
      "Tensor joint_template, Tensor shapedirs, Tensor posedirs, Tensor joint_shapedirs, int[] parents, "
      "Tensor skin_joints, Tensor skin_weights, Tensor regressor_vertices, Tensor regressor_rows, "
      "Tensor regressor_weights, Tensor posed_template) -> (Tensor grad_betas, Tensor grad_rotations, "
      "Tensor grad_transl, Tensor grad_vertex_template, Tensor grad_joint_template)");
  // joint_regression: (B, V, 3) vertices -> (B, R, 3) joints through a sparse (R, V) regressor
  // given as entries (vertex id, row, weight) sorted by vertex.
  m.def("joint_regression(Tensor vertices, Tensor vertex_ids, Tensor rows, Tensor weights, int num_joints) -> Tensor");
  m.def(
      "joint_regression_backward(Tensor grad_joints, Tensor vertex_ids, Tensor rows, Tensor weights, "
      "int num_vertices) -> Tensor");
  // ---- sparse: voxel coordinates (N, 4) int32 as (batch, x, y, z); see meshrec/ops/sparse.py
  m.set_python_module("meshrec.ops._registrations.sparse");
  m.def("_sparse_cpu_kernels() -> str", &sparse_cpu_kernels);
  // Unique rows of coords divided by stride (floor, or truncation toward zero), sorted by
  // (batch, x, y, z), and the row of each input in the result. Data-dependent output size.
  m.def("sparse_unique_coords(Tensor coords, int[3] stride, bool truncate, int hash_capacity) -> (Tensor, Tensor)");
  // (N_out, K) int32: the row of in_coords at out_coords[r] + offsets[k], or -1.
  m.def("sparse_kernel_map(Tensor in_coords, Tensor out_coords, Tensor offsets, int hash_capacity) -> Tensor");
  // (num_inputs, K) int32: the output row that reads input row i at offset k, or -1.
  m.def("sparse_invert_map(Tensor neighbors, SymInt num_inputs) -> Tensor");
  // out[r] = sum_k features[neighbors[r, k]] @ weight[k]; reverse_neighbors serves the backward.
  m.def("sparse_conv(Tensor features, Tensor weight, Tensor neighbors, Tensor reverse_neighbors) -> Tensor");
  m.def(
      "sparse_conv_weight_grad(Tensor features, Tensor grad_output, Tensor neighbors, Tensor reverse_neighbors) -> "
      "Tensor");
  // Per-voxel mean (or first row) of point features; points with index -1 are dropped.
  m.def("sparse_voxel_pool(Tensor features, Tensor point_to_voxel, SymInt num_voxels, str reduction) -> Tensor");
  m.def("sparse_voxel_pool_backward(Tensor grad_output, Tensor point_to_voxel, str reduction) -> Tensor");
  // out[n] = sum_j weights[n, j] * features[indices[n, j]] (entries -1 skipped).
  m.def("sparse_devoxelize(Tensor features, Tensor indices, Tensor weights) -> Tensor");
  m.def(
      "sparse_devoxelize_backward(Tensor grad_output, Tensor indices, Tensor weights, SymInt num_voxels) -> Tensor");
}

}  // namespace meshrec
