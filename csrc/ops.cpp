// Every schema of the meshrec op namespace, declared once. Kernels register per backend in
// their own files (TORCH_LIBRARY_IMPL); autograd and fake kernels are registered from Python,
// one module per op family (meshrec/ops/_registrations/<family>.py): set_python_module before
// each family's schemas names that module, so the dispatcher can import it on demand.
#include <torch/library.h>
#include <torch/version.h>

#include <string>

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
}

}  // namespace meshrec
