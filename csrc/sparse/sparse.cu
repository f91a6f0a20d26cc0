// CUDA kernels of the sparse family: the hash table (insert with atomicCAS, lookups), kernel
// maps, and the row kernels around cuBLAS products. One thread per element, grid-stride loops.
// Only hash insertion uses atomics; every floating-point sum runs in a fixed order in one
// thread, so results are deterministic.
#include "../common/cuda_launch.h"
#include "coords.h"
#include "sparse_cuda.h"

namespace meshrec {
namespace cuda {
namespace {

using sparse::kEmptyKey;

#define MESHREC_GRID_STRIDE(index, count)                                                       \
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < (count); \
       index += static_cast<int64_t>(gridDim.x) * blockDim.x)

__global__ void pack_keys_kernel(const int32_t* __restrict__ coords, int64_t n, int64_t sx, int64_t sy, int64_t sz,
                                 bool truncate, int64_t* __restrict__ keys) {
  MESHREC_GRID_STRIDE(i, n) {
    const int32_t* c = coords + 4 * i;
    const int64_t stride[3] = {sx, sy, sz};
    int64_t xyz[3];
    bool valid = sparse::batch_in_range(c[0]);
    for (int a = 0; a < 3; ++a) {
      valid = valid && sparse::coord_in_range(c[a + 1]);
      xyz[a] = sparse::divide_coord(c[a + 1], stride[a], truncate) * stride[a];
      valid = valid && sparse::coord_in_range(xyz[a]);
    }
    keys[i] = valid ? sparse::pack_key(c[0], xyz[0], xyz[1], xyz[2]) : kEmptyKey;
  }
}

__global__ void table_insert_kernel(const int64_t* __restrict__ keys, int64_t n, int64_t* table, uint64_t capacity,
                                    bool allow_duplicates, int32_t* status) {
  auto* words = reinterpret_cast<unsigned long long*>(table);
  const unsigned long long empty = static_cast<unsigned long long>(kEmptyKey);
  MESHREC_GRID_STRIDE(i, n) {
    const int64_t key = keys[i];
    const uint64_t mask = capacity - 1;
    uint64_t slot = sparse::hash_slot(key, mask);
    bool placed = false;
    for (uint64_t probe = 0; probe < capacity; ++probe) {
      const unsigned long long previous = atomicCAS(words + 2 * slot, empty, static_cast<unsigned long long>(key));
      if (previous == empty) {
        table[2 * slot + 1] = i;
        placed = true;
        break;
      }
      if (previous == static_cast<unsigned long long>(key)) {
        if (!allow_duplicates) atomicOr(status, kStatusDuplicate);
        placed = true;
        break;
      }
      slot = (slot + 1) & mask;
    }
    if (!placed) atomicOr(status, kStatusFull);
  }
}

// The slot holding a key known to be in the table.
__device__ inline uint64_t find_slot(const int64_t* table, uint64_t capacity, int64_t key) {
  const uint64_t mask = capacity - 1;
  uint64_t slot = sparse::hash_slot(key, mask);
  for (uint64_t probe = 0; probe < capacity && table[2 * slot] != key; ++probe) slot = (slot + 1) & mask;
  return slot;
}

__global__ void assign_ranks_kernel(const int64_t* __restrict__ sorted_keys, int64_t count, int64_t* table,
                                    uint64_t capacity) {
  MESHREC_GRID_STRIDE(r, count) { table[2 * find_slot(table, capacity, sorted_keys[r]) + 1] = r; }
}

__global__ void lookup_kernel(const int64_t* __restrict__ keys, int64_t n, const int64_t* __restrict__ table,
                              uint64_t capacity, int64_t* __restrict__ out) {
  MESHREC_GRID_STRIDE(i, n) { out[i] = sparse::table_find(table, capacity, keys[i]); }
}

__global__ void unpack_keys_kernel(const int64_t* __restrict__ keys, int64_t count, int32_t* __restrict__ coords) {
  MESHREC_GRID_STRIDE(r, count) { sparse::unpack_key(keys[r], coords + 4 * r); }
}

__global__ void kernel_map_query_kernel(const int32_t* __restrict__ out_coords, int64_t n_out,
                                        const int32_t* __restrict__ offsets, int64_t kernel_volume,
                                        const int64_t* __restrict__ table, uint64_t capacity,
                                        int32_t* __restrict__ map) {
  MESHREC_GRID_STRIDE(e, n_out * kernel_volume) {
    const int64_t r = e / kernel_volume, k = e % kernel_volume;
    const int32_t* o = offsets + 3 * k;
    const int64_t key = sparse::offset_key(out_coords + 4 * r, o[0], o[1], o[2]);
    map[e] = static_cast<int32_t>(sparse::table_find(table, capacity, key));
  }
}

__global__ void invert_map_kernel(const int32_t* __restrict__ map, int64_t n_out, int64_t kernel_volume,
                                  int32_t* __restrict__ inverse) {
  MESHREC_GRID_STRIDE(e, n_out * kernel_volume) {
    const int32_t i = map[e];
    if (i >= 0) inverse[static_cast<int64_t>(i) * kernel_volume + e % kernel_volume] = static_cast<int32_t>(e / kernel_volume);
  }
}

template <typename T>
__global__ void scatter_add_rows_kernel(const T* __restrict__ src, const int64_t* __restrict__ rows, int64_t count,
                                        int64_t channels, T* __restrict__ dst) {
  MESHREC_GRID_STRIDE(e, count * channels) {
    const int64_t i = e / channels, ch = e % channels;
    dst[rows[i] * channels + ch] += src[e];
  }
}

template <typename T>
__global__ void segment_reduce_kernel(const T* __restrict__ src, const int64_t* __restrict__ order,
                                      const int64_t* __restrict__ starts, int64_t segments, int64_t channels,
                                      int64_t taps, const T* __restrict__ scales, SegmentMode mode,
                                      T* __restrict__ out) {
  MESHREC_GRID_STRIDE(e, segments * channels) {
    const int64_t s = e / channels, ch = e % channels;
    const int64_t begin = starts[s], end = mode == SegmentMode::kFirst ? min(starts[s + 1], begin + 1) : starts[s + 1];
    T total = T(0);
    for (int64_t j = begin; j < end; ++j) {
      const int64_t entry = order[j];
      const T scale = scales != nullptr ? scales[entry] : T(1);
      total += scale * src[(entry / taps) * channels + ch];
    }
    if (mode == SegmentMode::kMean && end > begin) total /= T(end - begin);
    out[e] = total;
  }
}

template <typename T>
__global__ void pool_backward_kernel(const T* __restrict__ grad, const int64_t* __restrict__ index,
                                     const int64_t* __restrict__ starts, const int64_t* __restrict__ order, int64_t n,
                                     int64_t channels, bool mean, T* __restrict__ out) {
  MESHREC_GRID_STRIDE(e, n * channels) {
    const int64_t i = e / channels, ch = e % channels;
    const int64_t v = index[i];
    T value = T(0);
    if (v >= 0) {
      const int64_t count = starts[v + 1] - starts[v];
      if (mean) value = grad[v * channels + ch] / T(count);
      else if (order[starts[v]] == i) value = grad[v * channels + ch];
    }
    out[e] = value;
  }
}

template <typename T>
__global__ void devoxelize_kernel(const T* __restrict__ features, const int32_t* __restrict__ indices,
                                  const T* __restrict__ weights, int64_t n, int64_t taps, int64_t channels,
                                  T* __restrict__ out) {
  MESHREC_GRID_STRIDE(e, n * channels) {
    const int64_t i = e / channels, ch = e % channels;
    T total = T(0);
    for (int64_t j = 0; j < taps; ++j) {
      const int32_t v = indices[i * taps + j];
      if (v >= 0) total += weights[i * taps + j] * features[static_cast<int64_t>(v) * channels + ch];
    }
    out[e] = total;
  }
}

}  // namespace

cudaError_t launch_pack_keys(const int32_t* coords, int64_t n, int64_t stride_x, int64_t stride_y, int64_t stride_z,
                             bool truncate, int64_t* keys, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  pack_keys_kernel<<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(coords, n, stride_x, stride_y, stride_z, truncate,
                                                                   keys);
  return cudaGetLastError();
}

cudaError_t launch_table_insert(const int64_t* keys, int64_t n, int64_t* table, int64_t capacity,
                                bool allow_duplicates, int32_t* status, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  table_insert_kernel<<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(keys, n, table, static_cast<uint64_t>(capacity),
                                                                      allow_duplicates, status);
  return cudaGetLastError();
}

cudaError_t launch_table_assign_ranks(const int64_t* sorted_keys, int64_t count, int64_t* table, int64_t capacity,
                                      cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  assign_ranks_kernel<<<blocks_for(count), kThreadsPerBlock, 0, stream>>>(sorted_keys, count, table,
                                                                          static_cast<uint64_t>(capacity));
  return cudaGetLastError();
}

cudaError_t launch_table_lookup(const int64_t* keys, int64_t n, const int64_t* table, int64_t capacity, int64_t* out,
                                cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  lookup_kernel<<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(keys, n, table, static_cast<uint64_t>(capacity), out);
  return cudaGetLastError();
}

cudaError_t launch_unpack_keys(const int64_t* keys, int64_t count, int32_t* coords, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  unpack_keys_kernel<<<blocks_for(count), kThreadsPerBlock, 0, stream>>>(keys, count, coords);
  return cudaGetLastError();
}

cudaError_t launch_kernel_map_query(const int32_t* out_coords, int64_t n_out, const int32_t* offsets,
                                    int64_t kernel_volume, const int64_t* table, int64_t capacity, int32_t* map,
                                    cudaStream_t stream) {
  const int64_t count = n_out * kernel_volume;
  if (count == 0) return cudaSuccess;
  kernel_map_query_kernel<<<blocks_for(count), kThreadsPerBlock, 0, stream>>>(
      out_coords, n_out, offsets, kernel_volume, table, static_cast<uint64_t>(capacity), map);
  return cudaGetLastError();
}

cudaError_t launch_invert_map(const int32_t* map, int64_t n_out, int64_t kernel_volume, int32_t* inverse,
                              cudaStream_t stream) {
  const int64_t count = n_out * kernel_volume;
  if (count == 0) return cudaSuccess;
  invert_map_kernel<<<blocks_for(count), kThreadsPerBlock, 0, stream>>>(map, n_out, kernel_volume, inverse);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_scatter_add_rows(const T* src, const int64_t* rows, int64_t count, int64_t channels, T* dst,
                                    cudaStream_t stream) {
  if (count * channels == 0) return cudaSuccess;
  scatter_add_rows_kernel<T><<<blocks_for(count * channels), kThreadsPerBlock, 0, stream>>>(src, rows, count, channels,
                                                                                            dst);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_segment_reduce(const T* src, const int64_t* order, const int64_t* starts, int64_t segments,
                                  int64_t channels, int64_t taps, const T* scales, SegmentMode mode, T* out,
                                  cudaStream_t stream) {
  if (segments * channels == 0) return cudaSuccess;
  segment_reduce_kernel<T><<<blocks_for(segments * channels), kThreadsPerBlock, 0, stream>>>(
      src, order, starts, segments, channels, taps, scales, mode, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_pool_backward(const T* grad, const int64_t* index, const int64_t* starts, const int64_t* order,
                                 int64_t n, int64_t channels, bool mean, T* out, cudaStream_t stream) {
  if (n * channels == 0) return cudaSuccess;
  pool_backward_kernel<T><<<blocks_for(n * channels), kThreadsPerBlock, 0, stream>>>(grad, index, starts, order, n,
                                                                                    channels, mean, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_devoxelize(const T* features, const int32_t* indices, const T* weights, int64_t n, int64_t taps,
                              int64_t channels, T* out, cudaStream_t stream) {
  if (n * channels == 0) return cudaSuccess;
  devoxelize_kernel<T><<<blocks_for(n * channels), kThreadsPerBlock, 0, stream>>>(features, indices, weights, n, taps,
                                                                                 channels, out);
  return cudaGetLastError();
}

#define MESHREC_INSTANTIATE(T)                                                                                     \
  template cudaError_t launch_scatter_add_rows<T>(const T*, const int64_t*, int64_t, int64_t, T*, cudaStream_t);   \
  template cudaError_t launch_segment_reduce<T>(const T*, const int64_t*, const int64_t*, int64_t, int64_t,        \
                                                int64_t, const T*, SegmentMode, T*, cudaStream_t);                \
  template cudaError_t launch_pool_backward<T>(const T*, const int64_t*, const int64_t*, const int64_t*, int64_t,  \
                                               int64_t, bool, T*, cudaStream_t);                                  \
  template cudaError_t launch_devoxelize<T>(const T*, const int32_t*, const T*, int64_t, int64_t, int64_t, T*,     \
                                            cudaStream_t);
MESHREC_INSTANTIATE(float)
MESHREC_INSTANTIATE(double)
#undef MESHREC_INSTANTIATE

}  // namespace cuda
}  // namespace meshrec
