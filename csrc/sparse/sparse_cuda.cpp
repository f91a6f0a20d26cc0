// Torch binding of the sparse-family CUDA kernels: checks, allocation, the current stream, and
// the ATen steps between kernels (sorting, prefix sums, cuBLAS products). Sizes that depend on
// the data (unique voxels, pairs per offset) are read back to the host, as torch.unique does.
//
// Convolution follows torchsparse 1.4's GPU dataflow: per kernel offset, gather the input rows,
// multiply by the offset's weight with cuBLAS, and add the products into their output rows. An
// output row appears at most once per offset and offsets run one after another on the stream,
// so the adds need no atomics and the result is deterministic.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string_view>
#include <tuple>
#include <vector>

#include "../common/cuda_binding.h"
#include "coords.h"
#include "sparse_binding.h"
#include "sparse_cuda.h"

namespace meshrec {
namespace {

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream(); }

// Raises unless every entry of `index` lies in [-1, limit).
void check_index_range(const at::Tensor& index, int64_t limit, const char* name) {
  if (index.numel() == 0) return;
  const auto [low, high] = at::aminmax(index);
  const int64_t lowest = low.item<int64_t>(), highest = high.item<int64_t>();
  TORCH_CHECK(lowest >= -1 && highest < limit, "meshrec: ", name, " holds values in [", lowest, ", ", highest,
              "]; valid values are -1 (none) and 0 .. ", limit - 1);
}

// Packed keys of coords rows (divided by stride first), raising for rows out of range.
at::Tensor packed_keys(const at::Tensor& coords, at::IntArrayRef stride, bool truncate, const char* name) {
  at::Tensor keys = at::empty({coords.size(0)}, coords.options().dtype(at::kLong));
  check_launch(cuda::launch_pack_keys(coords.const_data_ptr<int32_t>(), coords.size(0), stride[0], stride[1], stride[2],
                                      truncate, keys.mutable_data_ptr<int64_t>(), current_stream()),
               "sparse pack_keys");
  const at::Tensor bad = keys.eq(sparse::kEmptyKey);
  if (bad.any().item<bool>()) {
    const int64_t row = at::nonzero(bad)[0][0].item<int64_t>();
    const at::Tensor values = coords[row].cpu();
    const int32_t* c = values.const_data_ptr<int32_t>();
    TORCH_CHECK(false, "meshrec: ", name, " row ", row, " = (", c[0], ", ", c[1], ", ", c[2], ", ", c[3],
                ") is out of range: batch indices must lie in [0, ", sparse::kBatchMax, "] and x, y, z in [",
                sparse::kCoordMin, ", ", sparse::kCoordMax, "]; use a coarser voxel size or shift the scene");
  }
  return keys;
}

struct DeviceTable {
  at::Tensor entries;  // (capacity, 2) int64: key (-1 when free), value
  int32_t status;      // cuda::kStatus* bits
};

DeviceTable build_table(const at::Tensor& keys, int64_t capacity, bool allow_duplicates) {
  DeviceTable table{at::full({capacity, 2}, sparse::kEmptyKey, keys.options()), 0};
  at::Tensor status = at::zeros({1}, keys.options().dtype(at::kInt));
  check_launch(cuda::launch_table_insert(keys.const_data_ptr<int64_t>(), keys.size(0),
                                         table.entries.mutable_data_ptr<int64_t>(), capacity, allow_duplicates,
                                         status.mutable_data_ptr<int32_t>(), current_stream()),
               "sparse table_insert");
  table.status = status.item<int32_t>();
  return table;
}

std::tuple<at::Tensor, at::Tensor> unique_coords_cuda(const at::Tensor& coords, at::IntArrayRef stride, bool truncate,
                                                      int64_t hash_capacity) {
  check_coords(coords, "coords");
  check_stride(stride);
  const c10::cuda::CUDAGuard guard(coords.device());
  const at::Tensor c = coords.contiguous();
  const int64_t n = c.size(0);
  const int64_t capacity = resolve_hash_capacity(hash_capacity, n);
  const at::Tensor keys = packed_keys(c, stride, truncate, "coords");
  DeviceTable table = build_table(keys, capacity, /*allow_duplicates=*/true);
  const at::Tensor stored = table.entries.select(1, 0);
  const at::Tensor sorted = std::get<0>(at::sort(stored.masked_select(stored.ne(sparse::kEmptyKey))));
  const int64_t count = sorted.size(0);
  TORCH_CHECK(!(table.status & cuda::kStatusFull) && count < capacity, "meshrec: the hash table (", capacity,
              " slots) filled up with the unique voxels of ", n,
              " rows; pass a larger hash_capacity (about twice the number of unique voxels), or 0 for automatic");
  const cudaStream_t stream = current_stream();
  check_launch(cuda::launch_table_assign_ranks(sorted.const_data_ptr<int64_t>(), count,
                                               table.entries.mutable_data_ptr<int64_t>(), capacity, stream),
               "sparse assign_ranks");
  at::Tensor inverse = at::empty({n}, c.options().dtype(at::kLong));
  check_launch(cuda::launch_table_lookup(keys.const_data_ptr<int64_t>(), n, table.entries.const_data_ptr<int64_t>(),
                                         capacity, inverse.mutable_data_ptr<int64_t>(), stream),
               "sparse table_lookup");
  at::Tensor unique = at::empty({count, 4}, c.options());
  check_launch(cuda::launch_unpack_keys(sorted.const_data_ptr<int64_t>(), count, unique.mutable_data_ptr<int32_t>(),
                                        stream),
               "sparse unpack_keys");
  return {unique, inverse};
}

at::Tensor kernel_map_cuda(const at::Tensor& in_coords, const at::Tensor& out_coords, const at::Tensor& offsets,
                           int64_t hash_capacity) {
  check_coords(in_coords, "in_coords");
  check_coords(out_coords, "out_coords");
  TORCH_CHECK(offsets.scalar_type() == at::kInt && offsets.dim() == 2 && offsets.size(1) == 3,
              "meshrec: offsets must be int32 of shape (K, 3), got ", offsets.scalar_type(), " ", offsets.sizes());
  check_same_device(in_coords, "in_coords", out_coords, "out_coords");
  check_same_device(in_coords, "in_coords", offsets, "offsets");
  const c10::cuda::CUDAGuard guard(in_coords.device());
  const at::Tensor in = in_coords.contiguous();
  const at::Tensor out = out_coords.contiguous();
  const at::Tensor off = offsets.contiguous();
  const int64_t capacity = resolve_hash_capacity_for_rows(hash_capacity, in.size(0), "in_coords");
  const int64_t unit[3] = {1, 1, 1};
  const at::Tensor keys = packed_keys(in, unit, false, "in_coords");
  const DeviceTable table = build_table(keys, capacity, /*allow_duplicates=*/false);
  TORCH_CHECK(!(table.status & cuda::kStatusDuplicate), "meshrec: in_coords has repeated rows; the coordinates of a ",
              "sparse tensor must be unique (meshrec.ops.unique_coords merges duplicates)");
  at::Tensor map = at::empty({out.size(0), off.size(0)}, in.options());
  check_launch(cuda::launch_kernel_map_query(out.const_data_ptr<int32_t>(), out.size(0), off.const_data_ptr<int32_t>(),
                                             off.size(0), table.entries.const_data_ptr<int64_t>(), capacity,
                                             map.mutable_data_ptr<int32_t>(), current_stream()),
               "sparse kernel_map_query");
  return map;
}

at::Tensor invert_map_cuda(const at::Tensor& neighbors, int64_t num_inputs) {
  check_index_table(neighbors, "neighbors", "(N_out, K)");
  TORCH_CHECK(num_inputs >= 0, "meshrec: num_inputs must be >= 0, got ", num_inputs);
  const c10::cuda::CUDAGuard guard(neighbors.device());
  const at::Tensor map = neighbors.contiguous();
  check_index_range(map, num_inputs, "neighbors");
  at::Tensor inverse = at::full({num_inputs, map.size(1)}, -1, map.options());
  check_launch(cuda::launch_invert_map(map.const_data_ptr<int32_t>(), map.size(0), map.size(1),
                                       inverse.mutable_data_ptr<int32_t>(), current_stream()),
               "sparse invert_map");
  return inverse;
}

// The (output row, input row) pairs of every offset of a neighbour table, grouped by offset.
struct OffsetPairs {
  at::Tensor out_rows;          // (M,) int64, offset by offset, increasing within an offset
  at::Tensor in_rows;           // (M,) int64
  std::vector<int64_t> starts;  // K + 1 host offsets into the pair lists
};

OffsetPairs pairs_by_offset(const at::Tensor& table) {
  const int64_t k_count = table.size(1);
  const at::Tensor present = table.ge(0);
  const at::Tensor pairs = at::nonzero(present.t());  // (M, 2): (k, r), sorted by k then r
  OffsetPairs result;
  result.out_rows = pairs.select(1, 1).contiguous();
  result.in_rows = table.reshape(-1).index_select(0, result.out_rows * k_count + pairs.select(1, 0)).to(at::kLong);
  const at::Tensor counts = present.sum(0).cpu();
  result.starts.assign(k_count + 1, 0);
  for (int64_t k = 0; k < k_count; ++k) result.starts[k + 1] = result.starts[k] + counts[k].item<int64_t>();
  return result;
}

at::Tensor sparse_conv_cuda(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& neighbors,
                            const at::Tensor& reverse_neighbors) {
  check_conv_inputs(features, weight, neighbors, reverse_neighbors);
  const c10::cuda::CUDAGuard guard(features.device());
  const at::Tensor f = features.contiguous();
  const at::Tensor w = weight.contiguous();
  const at::Tensor table = neighbors.contiguous();
  check_index_range(table, f.size(0), "neighbors");
  at::Tensor out = at::zeros({table.size(0), w.size(2)}, f.options());
  if (out.numel() == 0 || f.size(1) == 0) return out;
  const OffsetPairs pairs = pairs_by_offset(table);
  const cudaStream_t stream = current_stream();
  for (int64_t k = 0; k < w.size(0); ++k) {
    const int64_t begin = pairs.starts[k], end = pairs.starts[k + 1];
    if (begin == end) continue;
    const at::Tensor out_rows = pairs.out_rows.slice(0, begin, end);
    const at::Tensor products = at::mm(f.index_select(0, pairs.in_rows.slice(0, begin, end)), w[k]);
    AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "meshrec::sparse_conv", [&] {
      check_launch(cuda::launch_scatter_add_rows<scalar_t>(products.const_data_ptr<scalar_t>(),
                                                           out_rows.const_data_ptr<int64_t>(), end - begin,
                                                           out.size(1), out.mutable_data_ptr<scalar_t>(), stream),
                   "sparse scatter_add_rows");
    });
  }
  return out;
}

at::Tensor sparse_conv_weight_grad_cuda(const at::Tensor& features, const at::Tensor& grad_output,
                                        const at::Tensor& neighbors, const at::Tensor& reverse_neighbors) {
  check_conv_weight_grad_inputs(features, grad_output, neighbors, reverse_neighbors);
  const c10::cuda::CUDAGuard guard(features.device());
  const at::Tensor f = features.contiguous();
  const at::Tensor g = grad_output.contiguous();
  const at::Tensor table = neighbors.contiguous();
  check_index_range(table, f.size(0), "neighbors");
  at::Tensor grad_weight = at::zeros({table.size(1), f.size(1), g.size(1)}, f.options());
  if (grad_weight.numel() == 0 || table.size(0) == 0) return grad_weight;
  const OffsetPairs pairs = pairs_by_offset(table);
  for (int64_t k = 0; k < table.size(1); ++k) {
    const int64_t begin = pairs.starts[k], end = pairs.starts[k + 1];
    if (begin == end) continue;
    const at::Tensor gathered = f.index_select(0, pairs.in_rows.slice(0, begin, end));
    const at::Tensor grads = g.index_select(0, pairs.out_rows.slice(0, begin, end));
    at::Tensor slot = grad_weight.select(0, k);
    at::mm_out(slot, gathered.t(), grads);
  }
  return grad_weight;
}

// Entries grouped by target in [-1, groups) (-1 dropped), stably: the entries of group v are
// order[starts[v] .. starts[v + 1]).
struct DeviceGroups {
  at::Tensor starts;  // (groups + 1,) int64
  at::Tensor order;   // (entries,) int64
};

DeviceGroups group_entries(const at::Tensor& target, int64_t groups, const char* name) {
  check_index_range(target, groups, name);
  const at::Tensor shifted = target.to(at::kLong) + 1;
  const at::Tensor counts = at::bincount(shifted, {}, groups + 1);
  const at::Tensor starts = at::cat({at::zeros({1}, counts.options()), at::cumsum(counts, 0)});
  // Skipping the first count (the dropped entries) leaves the starts of groups 0 .. groups.
  return {starts.slice(0, 1).contiguous(), at::argsort(shifted, /*stable=*/true, 0, /*descending=*/false)};
}

at::Tensor voxel_pool_cuda(const at::Tensor& features, const at::Tensor& point_to_voxel, int64_t num_voxels,
                           c10::string_view reduction) {
  check_pool_inputs(features, point_to_voxel, num_voxels, reduction);
  const c10::cuda::CUDAGuard guard(features.device());
  const at::Tensor f = features.contiguous();
  const DeviceGroups groups = group_entries(point_to_voxel.contiguous(), num_voxels, "point_to_voxel");
  at::Tensor out = at::empty({num_voxels, f.size(1)}, f.options());
  const cuda::SegmentMode mode = reduction == "mean" ? cuda::SegmentMode::kMean : cuda::SegmentMode::kFirst;
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "meshrec::sparse_voxel_pool", [&] {
    check_launch(cuda::launch_segment_reduce<scalar_t>(f.const_data_ptr<scalar_t>(), groups.order.const_data_ptr<int64_t>(),
                                                       groups.starts.const_data_ptr<int64_t>(), num_voxels, f.size(1),
                                                       /*taps=*/1, nullptr, mode, out.mutable_data_ptr<scalar_t>(),
                                                       current_stream()),
                 "sparse segment_reduce");
  });
  return out;
}

at::Tensor voxel_pool_backward_cuda(const at::Tensor& grad_output, const at::Tensor& point_to_voxel,
                                    c10::string_view reduction) {
  check_features(grad_output, "grad_output");
  TORCH_CHECK(point_to_voxel.scalar_type() == at::kLong && point_to_voxel.dim() == 1,
              "meshrec: point_to_voxel must be int64 of shape (N,), got ", point_to_voxel.sizes());
  check_same_device(grad_output, "grad_output", point_to_voxel, "point_to_voxel");
  check_reduction(reduction);
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const at::Tensor g = grad_output.contiguous();
  const at::Tensor index = point_to_voxel.contiguous();
  const DeviceGroups groups = group_entries(index, g.size(0), "point_to_voxel");
  at::Tensor grad = at::empty({index.size(0), g.size(1)}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "meshrec::sparse_voxel_pool_backward", [&] {
    check_launch(cuda::launch_pool_backward<scalar_t>(g.const_data_ptr<scalar_t>(), index.const_data_ptr<int64_t>(),
                                                      groups.starts.const_data_ptr<int64_t>(),
                                                      groups.order.const_data_ptr<int64_t>(), index.size(0), g.size(1),
                                                      reduction == "mean", grad.mutable_data_ptr<scalar_t>(),
                                                      current_stream()),
                 "sparse pool_backward");
  });
  return grad;
}

at::Tensor devoxelize_cuda(const at::Tensor& features, const at::Tensor& indices, const at::Tensor& weights) {
  check_devoxelize_inputs(features, indices, weights);
  const c10::cuda::CUDAGuard guard(features.device());
  const at::Tensor f = features.contiguous();
  const at::Tensor idx = indices.contiguous();
  const at::Tensor w = weights.contiguous();
  check_index_range(idx, f.size(0), "indices");
  at::Tensor out = at::empty({idx.size(0), f.size(1)}, f.options());
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "meshrec::sparse_devoxelize", [&] {
    check_launch(cuda::launch_devoxelize<scalar_t>(f.const_data_ptr<scalar_t>(), idx.const_data_ptr<int32_t>(),
                                                   w.const_data_ptr<scalar_t>(), idx.size(0), idx.size(1), f.size(1),
                                                   out.mutable_data_ptr<scalar_t>(), current_stream()),
                 "sparse devoxelize");
  });
  return out;
}

at::Tensor devoxelize_backward_cuda(const at::Tensor& grad_output, const at::Tensor& indices, const at::Tensor& weights,
                                    int64_t num_voxels) {
  check_devoxelize_backward_inputs(grad_output, indices, weights, num_voxels);
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const at::Tensor g = grad_output.contiguous();
  const at::Tensor idx = indices.contiguous();
  const at::Tensor w = weights.contiguous();
  const DeviceGroups groups = group_entries(idx.reshape(-1), num_voxels, "indices");
  at::Tensor grad = at::empty({num_voxels, g.size(1)}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "meshrec::sparse_devoxelize_backward", [&] {
    check_launch(cuda::launch_segment_reduce<scalar_t>(g.const_data_ptr<scalar_t>(), groups.order.const_data_ptr<int64_t>(),
                                                       groups.starts.const_data_ptr<int64_t>(), num_voxels, g.size(1),
                                                       idx.size(1), w.const_data_ptr<scalar_t>(),
                                                       cuda::SegmentMode::kSum, grad.mutable_data_ptr<scalar_t>(),
                                                       current_stream()),
                 "sparse segment_reduce");
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(meshrec, CUDA, m) {
  m.impl("sparse_unique_coords", &unique_coords_cuda);
  m.impl("sparse_kernel_map", &kernel_map_cuda);
  m.impl("sparse_invert_map", &invert_map_cuda);
  m.impl("sparse_conv", &sparse_conv_cuda);
  m.impl("sparse_conv_weight_grad", &sparse_conv_weight_grad_cuda);
  m.impl("sparse_voxel_pool", &voxel_pool_cuda);
  m.impl("sparse_voxel_pool_backward", &voxel_pool_backward_cuda);
  m.impl("sparse_devoxelize", &devoxelize_cuda);
  m.impl("sparse_devoxelize_backward", &devoxelize_backward_cuda);
}

}  // namespace meshrec
