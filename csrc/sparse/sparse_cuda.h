// Launchers of the sparse-family CUDA kernels. Plain pointers and a stream: no torch types, so
// sparse.cu compiles with nvcc alone; sparse_cuda.cpp orchestrates them with ATen (sorting,
// prefix sums, cuBLAS matrix products). All tensors are contiguous device memory.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace meshrec {
namespace cuda {

// Bits of the status word the hash-table kernels raise.
constexpr int kStatusDuplicate = 1;
constexpr int kStatusFull = 2;

// keys[i] = packed (batch, x, y, z) of coords row i, each of x, y, z first divided by
// stride[a] (floor, or toward zero with truncate) and multiplied back; kEmptyKey (-1) for rows
// outside the packable range. stride == {1, 1, 1} leaves the coordinates as they are.
cudaError_t launch_pack_keys(const int32_t* coords, int64_t n, int64_t stride_x, int64_t stride_y, int64_t stride_z,
                             bool truncate, int64_t* keys, cudaStream_t stream);

// The hash table is `capacity` (a power of two) slots of two int64 words, key and value, all -1
// when free (see coords.h).

// Inserts keys[i] -> i. Sets kStatusDuplicate in *status when a key repeats (unless
// allow_duplicates) and kStatusFull when a key finds no slot.
cudaError_t launch_table_insert(const int64_t* keys, int64_t n, int64_t* table, int64_t capacity,
                                bool allow_duplicates, int32_t* status, cudaStream_t stream);

// table value of sorted_keys[r] = r, for r < count (all keys present).
cudaError_t launch_table_assign_ranks(const int64_t* sorted_keys, int64_t count, int64_t* table, int64_t capacity,
                                      cudaStream_t stream);

// out[i] = table value of keys[i], or -1.
cudaError_t launch_table_lookup(const int64_t* keys, int64_t n, const int64_t* table, int64_t capacity, int64_t* out,
                                cudaStream_t stream);

// coords[r] = unpacked keys[r].
cudaError_t launch_unpack_keys(const int64_t* keys, int64_t count, int32_t* coords, cudaStream_t stream);

// map[r, k] = table value of out_coords[r] + offsets[k] (same batch), or -1.
cudaError_t launch_kernel_map_query(const int32_t* out_coords, int64_t n_out, const int32_t* offsets,
                                    int64_t kernel_volume, const int64_t* table, int64_t capacity, int32_t* map,
                                    cudaStream_t stream);

// inverse[map[r, k], k] = r for map entries >= 0 (inverse pre-filled with -1).
cudaError_t launch_invert_map(const int32_t* map, int64_t n_out, int64_t kernel_volume, int32_t* inverse,
                              cudaStream_t stream);

// dst[rows[i]] += src[i] over `channels` columns; rows must be distinct within one call, so no
// atomics are needed and the result is deterministic.
template <typename T>
cudaError_t launch_scatter_add_rows(const T* src, const int64_t* rows, int64_t count, int64_t channels, T* dst,
                                    cudaStream_t stream);

enum class SegmentMode { kSum = 0, kMean = 1, kFirst = 2 };

// out[s] = reduction over entries e in [starts[s], starts[s + 1]) of scale(e) * src[order[e] / taps]
// with scale(e) = scales[order[e]] (or 1 when scales is null): the sum, the mean, or only the
// first entry. Empty segments give zero. One thread per output element sums in entry order.
template <typename T>
cudaError_t launch_segment_reduce(const T* src, const int64_t* order, const int64_t* starts, int64_t segments,
                                  int64_t channels, int64_t taps, const T* scales, SegmentMode mode, T* out,
                                  cudaStream_t stream);

// Gradient of the per-voxel mean (or first) for each point: out[i] = grad[index[i]] / count
// (mean) or grad[index[i]] when i is the first point of its voxel (first), else 0. starts and
// order are the grouping of the points by voxel (as for launch_segment_reduce).
template <typename T>
cudaError_t launch_pool_backward(const T* grad, const int64_t* index, const int64_t* starts, const int64_t* order,
                                 int64_t n, int64_t channels, bool mean, T* out, cudaStream_t stream);

// out[n] = sum_j weights[n, j] * features[indices[n, j]] (entries -1 skipped).
template <typename T>
cudaError_t launch_devoxelize(const T* features, const int32_t* indices, const T* weights, int64_t n, int64_t taps,
                              int64_t channels, T* out, cudaStream_t stream);

}  // namespace cuda
}  // namespace meshrec
