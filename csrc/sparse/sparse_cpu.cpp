// CPU kernels of the sparse family except the convolution (conv_cpu.cpp): unique voxels,
// kernel maps, map inversion, point-to-voxel pooling and trilinear devoxelisation.
//
// Every kernel is deterministic: hash-table insertions run serially (lookups in parallel), and
// reductions over a variable number of rows (pooling, devoxelisation backward) gather each
// output's terms through a stable counting sort, so no thread ever adds into shared memory.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <string_view>
#include <tuple>
#include <vector>

#include "coords.h"
#include "sparse_binding.h"

namespace meshrec {
namespace {

using sparse::kEmptyKey;

constexpr int64_t kRowsPerTask = 2048;

// The hash table of coords.h (linear probing, power-of-two capacity, key and value side by side)
// with serial insertion.
class HostHashTable {
 public:
  explicit HostHashTable(int64_t capacity) : entries_(2 * capacity, kEmptyKey), capacity_(uint64_t(capacity)) {}

  // Inserts key -> value unless the key is present; returns the slot and whether it was new.
  // Fails (slot -1) when the table is full.
  std::pair<int64_t, bool> insert(int64_t key, int64_t value) {
    const uint64_t mask = capacity_ - 1;
    uint64_t slot = sparse::hash_slot(key, mask);
    for (uint64_t probe = 0; probe < capacity_; ++probe) {
      if (entries_[2 * slot] == key) return {int64_t(slot), false};
      if (entries_[2 * slot] == kEmptyKey) {
        if (size_ + 1 >= int64_t(capacity_)) return {-1, false};  // keep one free slot: lookups must stop
        entries_[2 * slot] = key;
        entries_[2 * slot + 1] = value;
        ++size_;
        return {int64_t(slot), true};
      }
      slot = (slot + 1) & mask;
    }
    return {-1, false};
  }

  int32_t find(int64_t key) const { return int32_t(sparse::table_find(entries_.data(), capacity_, key)); }
  // Starts loading the line a lookup of `key` will read first, so independent lookups overlap.
  void prefetch(int64_t key) const { __builtin_prefetch(entries_.data() + 2 * sparse::hash_slot(key, capacity_ - 1)); }
  int64_t value_at(int64_t slot) const { return entries_[2 * slot + 1]; }

 private:
  std::vector<int64_t> entries_;
  uint64_t capacity_;
  int64_t size_ = 0;
};

[[noreturn]] void fail_out_of_range(const char* name, const int32_t* row, int64_t index) {
  TORCH_CHECK(false, "meshrec: ", name, " row ", index, " = (", row[0], ", ", row[1], ", ", row[2], ", ", row[3],
              ") is out of range: batch indices must lie in [0, ", sparse::kBatchMax,
              "] and x, y, z in [", sparse::kCoordMin, ", ", sparse::kCoordMax,
              "]; use a coarser voxel size or shift the scene");
}

// Packed keys of coordinate rows (each divided by `stride` first when given); rows out of the
// packable range raise.
std::vector<int64_t> packed_keys(const int32_t* coords, int64_t n, const int64_t* stride, bool truncate,
                                 const char* name) {
  std::vector<int64_t> keys(n);
  at::parallel_for(0, n, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int32_t* c = coords + 4 * i;
      if (!sparse::batch_in_range(c[0]) || !sparse::coord_in_range(c[1]) || !sparse::coord_in_range(c[2]) ||
          !sparse::coord_in_range(c[3])) {
        keys[i] = kEmptyKey;
        continue;
      }
      int64_t xyz[3] = {c[1], c[2], c[3]};
      if (stride != nullptr) {
        for (int a = 0; a < 3; ++a) xyz[a] = sparse::divide_coord(xyz[a], stride[a], truncate) * stride[a];
      }
      // Coarsening keeps a coordinate in range except for truncation/flooring below kCoordMin.
      keys[i] = (sparse::coord_in_range(xyz[0]) && sparse::coord_in_range(xyz[1]) && sparse::coord_in_range(xyz[2]))
                    ? sparse::pack_key(c[0], xyz[0], xyz[1], xyz[2])
                    : kEmptyKey;
    }
  });
  for (int64_t i = 0; i < n; ++i) {
    if (keys[i] == kEmptyKey) fail_out_of_range(name, coords + 4 * i, i);
  }
  return keys;
}

// ---- unique voxels -------------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor> unique_coords_cpu(const at::Tensor& coords, at::IntArrayRef stride, bool truncate,
                                                     int64_t hash_capacity) {
  check_coords(coords, "coords");
  check_stride(stride);
  const at::Tensor c = coords.contiguous();
  const int64_t n = c.size(0);
  const int64_t capacity = resolve_hash_capacity(hash_capacity, n);
  const std::vector<int64_t> keys = packed_keys(c.const_data_ptr<int32_t>(), n, stride.data(), truncate, "coords");

  // Serial insertion numbers the voxels in order of first occurrence.
  HostHashTable table(capacity);
  std::vector<int32_t> first_id(n);
  std::vector<int64_t> unique_keys;
  for (int64_t i = 0; i < n; ++i) {
    const auto [slot, inserted] = table.insert(keys[i], int32_t(unique_keys.size()));
    TORCH_CHECK(slot >= 0, "meshrec: the hash table (", capacity, " slots) filled up after ", unique_keys.size(),
                " unique voxels of ", n, " rows; pass a larger hash_capacity (about twice the number of unique ",
                "voxels), or 0 for automatic");
    if (inserted) unique_keys.push_back(keys[i]);
    first_id[i] = int32_t(table.value_at(slot));
  }
  // Renumber in key order, i.e. lexicographically by (batch, x, y, z).
  const int64_t u = int64_t(unique_keys.size());
  std::vector<int32_t> order(u);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return unique_keys[a] < unique_keys[b]; });
  std::vector<int64_t> rank(u);
  for (int64_t r = 0; r < u; ++r) rank[order[r]] = r;

  at::Tensor unique = at::empty({u, 4}, c.options());
  at::Tensor inverse = at::empty({n}, c.options().dtype(at::kLong));
  int32_t* unique_ptr = unique.mutable_data_ptr<int32_t>();
  int64_t* inverse_ptr = inverse.mutable_data_ptr<int64_t>();
  at::parallel_for(0, u, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) sparse::unpack_key(unique_keys[order[r]], unique_ptr + 4 * r);
  });
  at::parallel_for(0, n, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) inverse_ptr[i] = rank[first_id[i]];
  });
  return {unique, inverse};
}

// ---- kernel maps ---------------------------------------------------------------------------

// Whether offsets[K - 1 - k] == -offsets[k] for every k (true of every centred odd kernel).
bool offsets_symmetric(const int32_t* offsets, int64_t k_count) {
  for (int64_t k = 0; k < k_count; ++k) {
    for (int a = 0; a < 3; ++a) {
      if (offsets[3 * k + a] != -offsets[3 * (k_count - 1 - k) + a]) return false;
    }
  }
  return true;
}

at::Tensor kernel_map_cpu(const at::Tensor& in_coords, const at::Tensor& out_coords, const at::Tensor& offsets,
                          int64_t hash_capacity) {
  check_coords(in_coords, "in_coords");
  check_coords(out_coords, "out_coords");
  TORCH_CHECK(offsets.scalar_type() == at::kInt && offsets.dim() == 2 && offsets.size(1) == 3,
              "meshrec: offsets must be int32 of shape (K, 3), got ", offsets.scalar_type(), " ", offsets.sizes());
  check_same_device(in_coords, "in_coords", out_coords, "out_coords");
  check_same_device(in_coords, "in_coords", offsets, "offsets");
  const at::Tensor in = in_coords.contiguous();
  const at::Tensor out = out_coords.contiguous();
  const at::Tensor off = offsets.contiguous();
  const int64_t n_in = in.size(0), n_out = out.size(0), k_count = off.size(0);
  const int64_t capacity = resolve_hash_capacity_for_rows(hash_capacity, n_in, "in_coords");
  const int32_t* in_ptr = in.const_data_ptr<int32_t>();
  const int32_t* out_ptr = out.const_data_ptr<int32_t>();
  const int32_t* off_ptr = off.const_data_ptr<int32_t>();

  const std::vector<int64_t> keys = packed_keys(in_ptr, n_in, nullptr, false, "in_coords");
  HostHashTable table(capacity);
  for (int64_t i = 0; i < n_in; ++i) {
    const auto [slot, inserted] = table.insert(keys[i], int32_t(i));
    if (!inserted) {
      const int32_t* c = in_ptr + 4 * i;
      TORCH_CHECK(false, "meshrec: in_coords row ", i, " = (", c[0], ", ", c[1], ", ", c[2], ", ", c[3],
                  ") repeats row ", table.value_at(slot), "; the coordinates of a sparse tensor must be unique ",
                  "(meshrec.ops.unique_coords merges duplicates)");
    }
  }

  at::Tensor map = at::empty({n_out, k_count}, in.options());
  int32_t* map_ptr = map.mutable_data_ptr<int32_t>();
  const bool same_coords = in.is_same(out) || (n_in == n_out && in.const_data_ptr() == out.const_data_ptr());
  if (same_coords && k_count > 1 && offsets_symmetric(off_ptr, k_count)) {
    // Submanifold map: out row r sees in row i at offset k exactly when i sees r at offset
    // K-1-k, so half the offsets are queried and the other half written by symmetry; each cell
    // is written once (for fixed k, r -> i is injective), so the threads never collide.
    std::fill(map_ptr, map_ptr + n_out * k_count, -1);
    const int64_t half = k_count / 2;
    at::parallel_for(0, n_out, kRowsPerTask, [&](int64_t begin, int64_t end) {
      std::vector<int64_t> keys(half);
      for (int64_t r = begin; r < end; ++r) {
        const int32_t* c = out_ptr + 4 * r;
        for (int64_t k = 0; k < half; ++k) {
          keys[k] = sparse::offset_key(c, off_ptr[3 * k], off_ptr[3 * k + 1], off_ptr[3 * k + 2]);
          table.prefetch(keys[k]);
        }
        for (int64_t k = 0; k < half; ++k) {
          const int32_t i = table.find(keys[k]);
          if (i >= 0) {
            map_ptr[r * k_count + k] = i;
            map_ptr[int64_t(i) * k_count + (k_count - 1 - k)] = int32_t(r);
          }
        }
        if (k_count % 2 == 1) map_ptr[r * k_count + half] = int32_t(r);  // the centre offset is zero
      }
    });
  } else {
    at::parallel_for(0, n_out, kRowsPerTask, [&](int64_t begin, int64_t end) {
      std::vector<int64_t> keys(k_count);
      for (int64_t r = begin; r < end; ++r) {
        const int32_t* c = out_ptr + 4 * r;
        for (int64_t k = 0; k < k_count; ++k) {
          keys[k] = sparse::offset_key(c, off_ptr[3 * k], off_ptr[3 * k + 1], off_ptr[3 * k + 2]);
          table.prefetch(keys[k]);
        }
        for (int64_t k = 0; k < k_count; ++k) map_ptr[r * k_count + k] = table.find(keys[k]);
      }
    });
  }
  return map;
}

at::Tensor invert_map_cpu(const at::Tensor& neighbors, int64_t num_inputs) {
  check_index_table(neighbors, "neighbors", "(N_out, K)");
  TORCH_CHECK(num_inputs >= 0, "meshrec: num_inputs must be >= 0, got ", num_inputs);
  const at::Tensor map = neighbors.contiguous();
  const int64_t n_out = map.size(0), k_count = map.size(1);
  at::Tensor inverse = at::full({num_inputs, k_count}, -1, map.options());
  const int32_t* map_ptr = map.const_data_ptr<int32_t>();
  int32_t* inv_ptr = inverse.mutable_data_ptr<int32_t>();
  // For a fixed offset each input row has at most one output row (kernel maps are injective
  // per offset), so every cell is written once.
  at::parallel_for(0, n_out, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t k = 0; k < k_count; ++k) {
        const int32_t i = map_ptr[r * k_count + k];
        if (i < 0) continue;
        TORCH_CHECK(i < num_inputs, "meshrec: neighbors holds row ", i, " but num_inputs is ", num_inputs);
        inv_ptr[int64_t(i) * k_count + k] = int32_t(r);
      }
    }
  });
  return inverse;
}

// ---- grouping rows by target (stable counting sort) ------------------------------------------

// Rows 0..n-1 grouped by target[i] in [0, groups) (entries of -1 are dropped), each group in
// increasing row order: members of group g are order[start[g] .. start[g + 1]).
struct Groups {
  std::vector<int64_t> start;
  std::vector<int64_t> order;
};

template <typename Index>
Groups group_rows(const Index* target, int64_t n, int64_t groups, const char* name) {
  Groups g;
  g.start.assign(groups + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = target[i];
    TORCH_CHECK(t >= -1 && t < groups, "meshrec: ", name, " holds ", t, " at position ", i, "; valid values are -1 ",
                "(none) and 0 .. ", groups - 1);
    if (t >= 0) ++g.start[t + 1];
  }
  std::partial_sum(g.start.begin(), g.start.end(), g.start.begin());
  g.order.resize(g.start[groups]);
  std::vector<int64_t> fill(g.start.begin(), g.start.end() - 1);
  for (int64_t i = 0; i < n; ++i) {
    if (target[i] >= 0) g.order[fill[target[i]]++] = i;
  }
  return g;
}

// ---- point -> voxel pooling ----------------------------------------------------------------

at::Tensor voxel_pool_cpu(const at::Tensor& features, const at::Tensor& point_to_voxel, int64_t num_voxels,
                          c10::string_view reduction) {
  check_pool_inputs(features, point_to_voxel, num_voxels, reduction);
  const at::Tensor f = features.contiguous();
  const at::Tensor index = point_to_voxel.contiguous();
  const int64_t channels = f.size(1);
  const Groups groups = group_rows(index.const_data_ptr<int64_t>(), f.size(0), num_voxels, "point_to_voxel");
  const bool mean = reduction == "mean";
  at::Tensor out = at::empty({num_voxels, channels}, f.options());
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "meshrec::sparse_voxel_pool", [&] {
    const scalar_t* f_ptr = f.const_data_ptr<scalar_t>();
    scalar_t* out_ptr = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, num_voxels, kRowsPerTask / 8, [&](int64_t begin, int64_t end) {
      for (int64_t v = begin; v < end; ++v) {
        scalar_t* o = out_ptr + v * channels;
        std::fill(o, o + channels, scalar_t(0));
        const int64_t first = groups.start[v], last = groups.start[v + 1];
        if (first == last) continue;  // a voxel without points stays zero
        if (!mean) {
          std::copy(f_ptr + groups.order[first] * channels, f_ptr + (groups.order[first] + 1) * channels, o);
          continue;
        }
        for (int64_t e = first; e < last; ++e) {
          const scalar_t* row = f_ptr + groups.order[e] * channels;
          for (int64_t ch = 0; ch < channels; ++ch) o[ch] += row[ch];
        }
        const scalar_t count = scalar_t(last - first);
        for (int64_t ch = 0; ch < channels; ++ch) o[ch] /= count;
      }
    });
  });
  return out;
}

at::Tensor voxel_pool_backward_cpu(const at::Tensor& grad_output, const at::Tensor& point_to_voxel,
                                   c10::string_view reduction) {
  check_features(grad_output, "grad_output");
  TORCH_CHECK(point_to_voxel.scalar_type() == at::kLong && point_to_voxel.dim() == 1,
              "meshrec: point_to_voxel must be int64 of shape (N,), got ", point_to_voxel.sizes());
  check_reduction(reduction);
  const at::Tensor g = grad_output.contiguous();
  const at::Tensor index = point_to_voxel.contiguous();
  const int64_t n = index.size(0), channels = g.size(1), num_voxels = g.size(0);
  const Groups groups = group_rows(index.const_data_ptr<int64_t>(), n, num_voxels, "point_to_voxel");
  const int64_t* index_ptr = index.const_data_ptr<int64_t>();
  const bool mean = reduction == "mean";
  at::Tensor grad = at::empty({n, channels}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "meshrec::sparse_voxel_pool_backward", [&] {
    const scalar_t* g_ptr = g.const_data_ptr<scalar_t>();
    scalar_t* out_ptr = grad.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, kRowsPerTask, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        scalar_t* o = out_ptr + i * channels;
        const int64_t v = index_ptr[i];
        const bool contributes = v >= 0 && (mean || groups.order[groups.start[v]] == i);
        if (!contributes) {
          std::fill(o, o + channels, scalar_t(0));
          continue;
        }
        const scalar_t scale = mean ? scalar_t(1) / scalar_t(groups.start[v + 1] - groups.start[v]) : scalar_t(1);
        const scalar_t* row = g_ptr + v * channels;
        for (int64_t ch = 0; ch < channels; ++ch) o[ch] = mean ? row[ch] * scale : row[ch];
      }
    });
  });
  return grad;
}

// ---- trilinear devoxelisation: out[n] = sum_j weights[n, j] * features[indices[n, j]] -------

at::Tensor devoxelize_cpu(const at::Tensor& features, const at::Tensor& indices, const at::Tensor& weights) {
  check_devoxelize_inputs(features, indices, weights);
  const at::Tensor f = features.contiguous();
  const at::Tensor idx = indices.contiguous();
  const at::Tensor w = weights.contiguous();
  const int64_t n = idx.size(0), taps = idx.size(1), channels = f.size(1), num_voxels = f.size(0);
  at::Tensor out = at::empty({n, channels}, f.options());
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "meshrec::sparse_devoxelize", [&] {
    const scalar_t* f_ptr = f.const_data_ptr<scalar_t>();
    const scalar_t* w_ptr = w.const_data_ptr<scalar_t>();
    const int32_t* idx_ptr = idx.const_data_ptr<int32_t>();
    scalar_t* out_ptr = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, kRowsPerTask / 4, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        scalar_t* o = out_ptr + i * channels;
        std::fill(o, o + channels, scalar_t(0));
        for (int64_t j = 0; j < taps; ++j) {
          const int32_t v = idx_ptr[i * taps + j];
          if (v < 0) continue;
          TORCH_CHECK(v < num_voxels, "meshrec: indices holds ", v, " but features has ", num_voxels, " rows");
          const scalar_t weight = w_ptr[i * taps + j];
          const scalar_t* row = f_ptr + int64_t(v) * channels;
          for (int64_t ch = 0; ch < channels; ++ch) o[ch] += weight * row[ch];
        }
      }
    });
  });
  return out;
}

// Gradient with respect to the voxel features: each voxel sums weight * grad_output over its
// (point, tap) entries in increasing flat order.
at::Tensor devoxelize_backward_cpu(const at::Tensor& grad_output, const at::Tensor& indices, const at::Tensor& weights,
                                   int64_t num_voxels) {
  check_devoxelize_backward_inputs(grad_output, indices, weights, num_voxels);
  const at::Tensor g = grad_output.contiguous();
  const at::Tensor idx = indices.contiguous();
  const at::Tensor w = weights.contiguous();
  const int64_t n = idx.size(0), taps = idx.size(1), channels = g.size(1);
  const Groups groups = group_rows(idx.const_data_ptr<int32_t>(), n * taps, num_voxels, "indices");
  at::Tensor grad_features = at::empty({num_voxels, channels}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "meshrec::sparse_devoxelize_backward", [&] {
    const scalar_t* g_ptr = g.const_data_ptr<scalar_t>();
    const scalar_t* w_ptr = w.const_data_ptr<scalar_t>();
    scalar_t* out_ptr = grad_features.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, num_voxels, kRowsPerTask / 8, [&](int64_t begin, int64_t end) {
      for (int64_t v = begin; v < end; ++v) {
        scalar_t* o = out_ptr + v * channels;
        std::fill(o, o + channels, scalar_t(0));
        for (int64_t e = groups.start[v]; e < groups.start[v + 1]; ++e) {
          const int64_t flat = groups.order[e];
          const scalar_t weight = w_ptr[flat];
          const scalar_t* row = g_ptr + (flat / taps) * channels;
          for (int64_t ch = 0; ch < channels; ++ch) o[ch] += weight * row[ch];
        }
      }
    });
  });
  return grad_features;
}

}  // namespace

TORCH_LIBRARY_IMPL(meshrec, CPU, m) {
  m.impl("sparse_unique_coords", &unique_coords_cpu);
  m.impl("sparse_kernel_map", &kernel_map_cpu);
  m.impl("sparse_invert_map", &invert_map_cpu);
  m.impl("sparse_voxel_pool", &voxel_pool_cpu);
  m.impl("sparse_voxel_pool_backward", &voxel_pool_backward_cpu);
  m.impl("sparse_devoxelize", &devoxelize_cpu);
  m.impl("sparse_devoxelize_backward", &devoxelize_backward_cpu);
}

}  // namespace meshrec
