// Argument checks and output shapes shared by the CPU and CUDA bindings of the sparse family.
// Messages name the argument and the expected layout: they reach users through meshrec.ops.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <string_view>

#include "../common/checks.h"
#include "coords.h"

namespace meshrec {

inline void check_coords(const at::Tensor& coords, const char* name) {
  TORCH_CHECK(coords.scalar_type() == at::kInt, "meshrec: ", name,
              " must be int32 voxel coordinates (batch, x, y, z), got ", coords.scalar_type(),
              "; quantise float positions first (meshrec.scene.voxelize)");
  TORCH_CHECK(coords.dim() == 2 && coords.size(1) == 4, "meshrec: ", name,
              " must have shape (N, 4) with columns (batch, x, y, z), got ", coords.sizes());
}

inline void check_index_table(const at::Tensor& table, const char* name, const char* layout) {
  TORCH_CHECK(table.scalar_type() == at::kInt, "meshrec: ", name, " must be int32, got ", table.scalar_type());
  TORCH_CHECK(table.dim() == 2, "meshrec: ", name, " must have shape ", layout, ", got ", table.sizes());
}

inline void check_same_device(const at::Tensor& a, const char* name_a, const at::Tensor& b, const char* name_b) {
  TORCH_CHECK(a.device() == b.device(), "meshrec: ", name_a, " (", a.device(), ") and ", name_b, " (", b.device(),
              ") must be on the same device");
}

inline void check_features(const at::Tensor& features, const char* name) {
  check_floating(features, name);
  TORCH_CHECK(features.dim() == 2, "meshrec: ", name, " must have shape (N, C), got ", features.sizes());
}

inline void check_stride(at::IntArrayRef stride) {
  TORCH_CHECK(stride.size() == 3 && stride[0] >= 1 && stride[1] >= 1 && stride[2] >= 1,
              "meshrec: stride must be three positive integers, got ", stride);
}

// The number of slots of a hash table for `keys` keys: `requested` rounded up to a power of two,
// or twice the keys when requested is 0 (automatic).
inline int64_t resolve_hash_capacity(int64_t requested, int64_t keys) {
  TORCH_CHECK(requested >= 0 && requested <= sparse::kMaxHashCapacity,
              "meshrec: hash_capacity must be 0 (automatic) or a slot count in [1, 2^30], got ", requested);
  if (requested == 0) {
    const int64_t automatic = sparse::next_power_of_two(std::max<int64_t>(2 * keys, 64));
    TORCH_CHECK(automatic <= sparse::kMaxHashCapacity, "meshrec: ", keys,
                " coordinates need a hash table larger than 2^30 slots; split the input");
    return automatic;
  }
  return sparse::next_power_of_two(requested);
}

// For tables whose key count is known in advance (one key per input row).
inline int64_t resolve_hash_capacity_for_rows(int64_t requested, int64_t rows, const char* name) {
  const int64_t capacity = resolve_hash_capacity(requested, rows);
  TORCH_CHECK(capacity > rows, "meshrec: hash_capacity ", requested, " (", capacity,
              " slots after rounding up to a power of two) cannot hold the ", rows, " rows of ", name,
              "; it needs more slots than rows (2x is a good choice), or 0 for automatic");
  return capacity;
}

inline void check_reduction(std::string_view reduction) {
  TORCH_CHECK(reduction == "mean" || reduction == "first",
              "meshrec: reduction must be 'mean' or 'first', got '", reduction, "'");
}

// features (N_in, C_in), weight (K, C_in, C_out), neighbors (R, K), reverse (N_in, K).
inline void check_conv_inputs(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& neighbors,
                              const at::Tensor& reverse_neighbors) {
  check_features(features, "features");
  check_same_dtype_device(features, "features", weight, "weight");
  TORCH_CHECK(weight.dim() == 3 && weight.size(1) == features.size(1),
              "meshrec: weight must have shape (K, C_in, C_out) with C_in = ", features.size(1),
              " (the channels of features), got ", weight.sizes());
  check_index_table(neighbors, "neighbors", "(N_out, K)");
  check_index_table(reverse_neighbors, "reverse_neighbors", "(N_in, K)");
  check_same_device(features, "features", neighbors, "neighbors");
  check_same_device(features, "features", reverse_neighbors, "reverse_neighbors");
  TORCH_CHECK(neighbors.size(1) == weight.size(0) && reverse_neighbors.size(1) == weight.size(0),
              "meshrec: neighbors ", neighbors.sizes(), " and reverse_neighbors ", reverse_neighbors.sizes(),
              " must have one column per kernel offset of weight (K = ", weight.size(0), ")");
  TORCH_CHECK(reverse_neighbors.size(0) == features.size(0), "meshrec: reverse_neighbors must have one row per row of ",
              "features (", features.size(0), "), got ", reverse_neighbors.sizes());
}

inline void check_pool_inputs(const at::Tensor& features, const at::Tensor& point_to_voxel, int64_t num_voxels,
                              std::string_view reduction) {
  check_features(features, "features");
  TORCH_CHECK(point_to_voxel.scalar_type() == at::kLong && point_to_voxel.dim() == 1 &&
                  point_to_voxel.size(0) == features.size(0),
              "meshrec: point_to_voxel must be int64 of shape (N,) with N = ", features.size(0),
              " (the rows of features), got ", point_to_voxel.scalar_type(), " ", point_to_voxel.sizes());
  check_same_device(features, "features", point_to_voxel, "point_to_voxel");
  TORCH_CHECK(num_voxels >= 0, "meshrec: num_voxels must be >= 0, got ", num_voxels);
  check_reduction(reduction);
}

inline void check_devoxelize_inputs(const at::Tensor& features, const at::Tensor& indices, const at::Tensor& weights) {
  check_features(features, "features");
  check_index_table(indices, "indices", "(N, J)");
  check_same_dtype_device(weights, "weights", features, "features");
  TORCH_CHECK(weights.sizes() == indices.sizes(), "meshrec: weights ", weights.sizes(),
              " must have the shape of indices ", indices.sizes());
  check_same_device(features, "features", indices, "indices");
}

inline void check_devoxelize_backward_inputs(const at::Tensor& grad_output, const at::Tensor& indices,
                                             const at::Tensor& weights, int64_t num_voxels) {
  check_features(grad_output, "grad_output");
  check_index_table(indices, "indices", "(N, J)");
  check_same_dtype_device(weights, "weights", grad_output, "grad_output");
  TORCH_CHECK(weights.sizes() == indices.sizes() && grad_output.size(0) == indices.size(0),
              "meshrec: weights ", weights.sizes(), " must have the shape of indices ", indices.sizes(),
              " and grad_output ", grad_output.sizes(), " one row per row of indices");
  check_same_device(grad_output, "grad_output", indices, "indices");
  TORCH_CHECK(num_voxels >= 0, "meshrec: num_voxels must be >= 0, got ", num_voxels);
}

// features (N_in, C_in), grad_output (N_out, C_out), neighbors (N_out, K), reverse (N_in, K).
inline void check_conv_weight_grad_inputs(const at::Tensor& features, const at::Tensor& grad_output,
                                          const at::Tensor& neighbors, const at::Tensor& reverse_neighbors) {
  check_features(features, "features");
  check_features(grad_output, "grad_output");
  check_same_dtype_device(grad_output, "grad_output", features, "features");
  check_index_table(neighbors, "neighbors", "(N_out, K)");
  check_same_device(features, "features", neighbors, "neighbors");
  TORCH_CHECK(grad_output.size(0) == neighbors.size(0), "meshrec: grad_output ", grad_output.sizes(),
              " must have one row per row of neighbors ", neighbors.sizes());
  check_index_table(reverse_neighbors, "reverse_neighbors", "(N_in, K)");
  TORCH_CHECK(reverse_neighbors.size(0) == features.size(0) && reverse_neighbors.size(1) == neighbors.size(1),
              "meshrec: reverse_neighbors must have shape (N_in, K) = (", features.size(0), ", ", neighbors.size(1),
              "), got ", reverse_neighbors.sizes());
}

}  // namespace meshrec
