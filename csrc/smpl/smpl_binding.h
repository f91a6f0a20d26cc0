// Argument checks and output shapes shared by the CPU and CUDA bindings of the SMPL ops.
//
// Besides sizes, dtypes and devices, the checks read the index arrays (skinning joints, regressor
// vertex ids and rows): they reach the kernels from Python through public NamedTuples that anyone
// can build, and an index out of range would read or write outside an array. On the CPU this is
// one pass over V K + 2 nnz int32 values (SMPL: ~0.1 MB, well under 1% of a one-body forward);
// on a GPU it costs one reduction and one synchronisation per call, as the sparse ops' checks do.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/any.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/lt.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <vector>

#include "../common/checks.h"
#include "lbs.h"

namespace meshrec {

struct SMPLSizes {
  int64_t batch = 0, num_betas = 0, num_joints = 0, num_vertices = 0, skin_width = 0, num_regressed = 0;
  bool batched_vertex_template = false, batched_joint_template = false;
};

inline void check_float_like(const at::Tensor& t, const char* name, const at::Tensor& like, const char* like_name) {
  check_floating(t, name);
  check_same_dtype_device(t, name, like, like_name);
}

inline void check_index_like(const at::Tensor& t, const char* name, const at::Tensor& like, const char* like_name) {
  TORCH_CHECK(t.scalar_type() == at::kInt, "meshrec: ", name, " must be int32, got ", t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), "meshrec: ", name, " (", t.device(), ") and ", like_name, " (",
              like.device(), ") must be on the same device");
}

inline void check_shape(const at::Tensor& t, std::initializer_list<int64_t> shape, const char* name,
                        const char* layout) {
  bool ok = t.dim() == static_cast<int64_t>(shape.size());
  int64_t i = 0;
  for (int64_t size : shape) {
    if (ok && size >= 0 && t.size(i) != size) ok = false;
    ++i;
  }
  TORCH_CHECK(ok, "meshrec: ", name, " must have shape ", layout, ", got ", t.sizes());
}

inline void check_parents(at::IntArrayRef parents) {
  TORCH_CHECK(!parents.empty() && parents.size() <= static_cast<size_t>(smpl::kMaxJoints),
              "meshrec: parents must list 1 to ", smpl::kMaxJoints, " joints, got ", parents.size());
  for (size_t j = 0; j < parents.size(); ++j) {
    TORCH_CHECK(parents[j] >= -1 && parents[j] < static_cast<int64_t>(j),
                "meshrec: parents[", j, "] = ", parents[j], ": every joint's parent must come before it (-1: root)");
  }
}

// Raises IndexError unless every value of the int32 array `index` lies in [0, limit) (and, with
// `ascending`, never decreases). `name` and `what` name the array and what its values count.
inline void check_index_values(const at::Tensor& index, int64_t limit, const char* name, const char* what,
                               bool ascending = false) {
  const int64_t n = index.numel();
  if (n == 0) return;
  if (index.is_cpu()) {
    const at::Tensor flat = index.contiguous();
    const int32_t* p = flat.const_data_ptr<int32_t>();
    for (int64_t i = 0; i < n; ++i) {
      // One well-predicted branch per value; the message is built only for a bad one.
      if (p[i] < 0 || p[i] >= limit) {
        TORCH_CHECK_INDEX(false, "meshrec: ", name, " holds ", p[i], " at flat position ", i, ", out of range: ",
                          what, " must lie in [0, ", limit, ")");
      }
      if (ascending && i > 0 && p[i] < p[i - 1]) {
        TORCH_CHECK_INDEX(false, "meshrec: ", name, " must be ascending (sorted by vertex, as SparseRegressor ",
                          "builds them), but position ", i, " holds ", p[i], " after ", p[i - 1]);
      }
    }
    return;
  }
  // Other devices: one reduction, one copy back (a synchronisation).
  const at::Tensor flat = index.reshape({-1});
  const auto bounds = at::aminmax(flat);
  std::vector<at::Tensor> parts = {std::get<0>(bounds).to(at::kLong).reshape({1}),
                                   std::get<1>(bounds).to(at::kLong).reshape({1})};
  if (ascending && n > 1) {
    parts.push_back(at::lt(flat.narrow(0, 1, n - 1), flat.narrow(0, 0, n - 1)).any().to(at::kLong).reshape({1}));
  }
  const at::Tensor host = at::cat(parts).to(at::kCPU);
  const int64_t* h = host.const_data_ptr<int64_t>();
  TORCH_CHECK_INDEX(h[0] >= 0 && h[1] < limit, "meshrec: ", name, " holds values in [", h[0], ", ", h[1],
                    "], out of range: ", what, " must lie in [0, ", limit, ")");
  TORCH_CHECK_INDEX(!(ascending && n > 1 && h[2] != 0), "meshrec: ", name,
                    " must be ascending (sorted by vertex, as SparseRegressor builds them)");
}

// A sparse regressor (R, V) as one list of entries sorted by vertex: vertex ids, row ids (int32)
// and weights. Both directions use it: rows gather their entries, vertices find theirs by range.
// Every id is checked against V (num_vertices) and R (num_rows).
inline void check_regressor(const at::Tensor& vertex_ids, const at::Tensor& rows, const at::Tensor& weights,
                            const at::Tensor& like, const char* like_name, int64_t num_vertices, int64_t num_rows) {
  check_index_like(vertex_ids, "regressor vertex ids", like, like_name);
  check_index_like(rows, "regressor rows", like, like_name);
  check_float_like(weights, "regressor weights", like, like_name);
  TORCH_CHECK(vertex_ids.dim() == 1 && rows.sizes() == vertex_ids.sizes() && weights.sizes() == vertex_ids.sizes(),
              "meshrec: regressor vertex ids, rows and weights must have the same shape (nnz,), got ",
              vertex_ids.sizes(), ", ", rows.sizes(), ", ", weights.sizes());
  check_index_values(vertex_ids, num_vertices, "regressor vertex ids", "vertex ids (the mesh's vertices)",
                     /*ascending=*/true);
  check_index_values(rows, num_rows, "regressor rows", "rows (the regressed joints)");
}

inline SMPLSizes check_smpl_model(const at::Tensor& betas, const at::Tensor& rotations, const at::Tensor& joint_template,
                                  const at::Tensor& shapedirs, const at::Tensor& posedirs,
                                  const at::Tensor& joint_shapedirs, at::IntArrayRef parents,
                                  const at::Tensor& skin_joints, const at::Tensor& skin_weights) {
  SMPLSizes s;
  check_floating(betas, "betas");
  TORCH_CHECK(betas.dim() == 2, "meshrec: betas must have shape (B, NB), got ", betas.sizes());
  s.batch = betas.size(0);
  s.num_betas = betas.size(1);
  check_parents(parents);
  s.num_joints = static_cast<int64_t>(parents.size());
  check_float_like(rotations, "rotations", betas, "betas");
  check_shape(rotations, {s.batch, s.num_joints, 3, 3}, "rotations", "(B, J, 3, 3) with B of betas, J of parents");
  check_float_like(skin_weights, "skin_weights", betas, "betas");
  check_index_like(skin_joints, "skin_joints", betas, "betas");
  TORCH_CHECK(skin_weights.dim() == 2 && skin_joints.sizes() == skin_weights.sizes(),
              "meshrec: skin_joints and skin_weights must both have shape (V, K), got ", skin_joints.sizes(), " and ",
              skin_weights.sizes());
  s.num_vertices = skin_weights.size(0);
  s.skin_width = skin_weights.size(1);
  check_index_values(skin_joints, s.num_joints, "skin_joints", "skinning joints (the model's joints)");
  check_float_like(shapedirs, "shapedirs", betas, "betas");
  check_shape(shapedirs, {s.num_betas, 3 * s.num_vertices}, "shapedirs", "(NB, 3V) with NB of betas");
  check_float_like(posedirs, "posedirs", betas, "betas");
  check_shape(posedirs, {9 * (s.num_joints - 1), 3 * s.num_vertices}, "posedirs", "(9 (J - 1), 3V)");
  check_float_like(joint_shapedirs, "joint_shapedirs", betas, "betas");
  check_shape(joint_shapedirs, {s.num_betas, 3 * s.num_joints}, "joint_shapedirs", "(NB, 3J)");
  check_float_like(joint_template, "joint_template", betas, "betas");
  TORCH_CHECK(joint_template.dim() == 3 && (joint_template.size(0) == 1 || joint_template.size(0) == s.batch) &&
                  joint_template.size(1) == s.num_joints && joint_template.size(2) == 3,
              "meshrec: joint_template must have shape (1, J, 3) or (B, J, 3), got ", joint_template.sizes());
  s.batched_joint_template = joint_template.size(0) != 1;
  return s;
}

inline SMPLSizes check_smpl_forward(const at::Tensor& betas, const at::Tensor& rotations,
                                    const c10::optional<at::Tensor>& transl, const at::Tensor& vertex_template,
                                    const at::Tensor& joint_template, const at::Tensor& shapedirs,
                                    const at::Tensor& posedirs, const at::Tensor& blend_panels,
                                    const at::Tensor& joint_shapedirs, at::IntArrayRef parents,
                                    const at::Tensor& skin_joints, const at::Tensor& skin_weights,
                                    const at::Tensor& regressor_vertices,
                                    const at::Tensor& regressor_rows, const at::Tensor& regressor_weights,
                                    int64_t num_regressed) {
  SMPLSizes s = check_smpl_model(betas, rotations, joint_template, shapedirs, posedirs, joint_shapedirs, parents,
                                 skin_joints, skin_weights);
  if (transl.has_value()) {
    check_float_like(*transl, "transl", betas, "betas");
    check_shape(*transl, {s.batch, 3}, "transl", "(B, 3)");
  }
  check_float_like(vertex_template, "vertex_template", betas, "betas");
  TORCH_CHECK(vertex_template.dim() == 3 && (vertex_template.size(0) == 1 || vertex_template.size(0) == s.batch) &&
                  vertex_template.size(1) == s.num_vertices && vertex_template.size(2) == 3,
              "meshrec: vertex_template must have shape (1, V, 3) or (B, V, 3), got ", vertex_template.sizes());
  s.batched_vertex_template = vertex_template.size(0) != 1;
  check_float_like(blend_panels, "blend_panels", betas, "betas");
  const int64_t panels = (3 * s.num_vertices + smpl::kPanelColumns - 1) / smpl::kPanelColumns;
  check_shape(blend_panels, {panels, s.num_betas + 9 * (s.num_joints - 1), smpl::kPanelColumns}, "blend_panels",
              "(ceil(3V / 192), NB + 9 (J - 1), 192): [shapedirs ; posedirs] packed by prepare_smpl_arrays");
  TORCH_CHECK(num_regressed >= 0, "meshrec: num_regressed must be >= 0, got ", num_regressed);
  s.num_regressed = num_regressed;
  check_regressor(regressor_vertices, regressor_rows, regressor_weights, betas, "betas", s.num_vertices,
                  num_regressed);
  return s;
}

inline SMPLSizes check_smpl_backward(const at::Tensor& grad_vertices, const at::Tensor& grad_joints,
                                     const at::Tensor& betas, const at::Tensor& rotations,
                                     const at::Tensor& joint_template, const at::Tensor& shapedirs,
                                     const at::Tensor& posedirs, const at::Tensor& joint_shapedirs,
                                     at::IntArrayRef parents, const at::Tensor& skin_joints,
                                     const at::Tensor& skin_weights, const at::Tensor& regressor_vertices,
                                     const at::Tensor& regressor_rows, const at::Tensor& regressor_weights,
                                     const at::Tensor& posed_template) {
  SMPLSizes s = check_smpl_model(betas, rotations, joint_template, shapedirs, posedirs, joint_shapedirs, parents,
                                 skin_joints, skin_weights);
  check_float_like(grad_vertices, "grad_vertices", betas, "betas");
  // Empty: the vertices were not used, their gradient is zero (no (B, V, 3) zeros to allocate).
  if (grad_vertices.numel() != 0 || s.batch * s.num_vertices == 0) {
    check_shape(grad_vertices, {s.batch, s.num_vertices, 3}, "grad_vertices", "(B, V, 3), or empty for zeros");
  }
  check_float_like(posed_template, "posed_template", betas, "betas");
  check_shape(posed_template, {s.batch, s.num_vertices, 3}, "posed_template",
              "(B, V, 3) (the posed template saved by smpl_lbs with save_posed=True)");
  check_float_like(grad_joints, "grad_joints", betas, "betas");
  TORCH_CHECK(grad_joints.dim() == 3 && grad_joints.size(0) == s.batch && grad_joints.size(1) >= s.num_joints &&
                  grad_joints.size(2) == 3,
              "meshrec: grad_joints must have shape (B, J + R, 3), got ", grad_joints.sizes());
  s.num_regressed = grad_joints.size(1) - s.num_joints;
  check_regressor(regressor_vertices, regressor_rows, regressor_weights, betas, "betas", s.num_vertices,
                  s.num_regressed);
  return s;
}

inline void check_joint_regression(const at::Tensor& vertices, const at::Tensor& vertex_ids, const at::Tensor& rows,
                                   const at::Tensor& weights, int64_t num_joints) {
  check_floating(vertices, "vertices");
  TORCH_CHECK(vertices.dim() == 3 && vertices.size(2) == 3, "meshrec: vertices must have shape (B, V, 3), got ",
              vertices.sizes());
  TORCH_CHECK(num_joints >= 0, "meshrec: num_joints must be >= 0, got ", num_joints);
  check_regressor(vertex_ids, rows, weights, vertices, "vertices", vertices.size(1), num_joints);
}

inline void check_joint_regression_backward(const at::Tensor& grad_joints, const at::Tensor& vertex_ids,
                                            const at::Tensor& rows, const at::Tensor& weights, int64_t num_vertices) {
  check_floating(grad_joints, "grad_joints");
  TORCH_CHECK(grad_joints.dim() == 3 && grad_joints.size(2) == 3,
              "meshrec: grad_joints must have shape (B, R, 3), got ", grad_joints.sizes());
  TORCH_CHECK(num_vertices >= 0, "meshrec: num_vertices must be >= 0, got ", num_vertices);
  check_regressor(vertex_ids, rows, weights, grad_joints, "grad_joints", num_vertices, grad_joints.size(1));
}

}  // namespace meshrec
