// CUDA kernels of the nearest-point op: per-scene grid build (bounds, counting sort of the
// points) and one thread per query. See nearest.h.
#include "../common/cuda_launch.h"
#include "grid_build.cuh"
#include "metrics_cuda.h"
#include "nearest.h"

namespace meshrec {
namespace cuda {
namespace {

template <typename T>
__global__ void point_bounds_kernel(const T* __restrict__ points, int64_t scene_size, int64_t capacity,
                                    metrics::PointGridParams* __restrict__ params) {
  const T* scene = points + 3 * scene_size * blockIdx.x;
  double lower[3] = {HUGE_VAL, HUGE_VAL, HUGE_VAL}, upper[3] = {-HUGE_VAL, -HUGE_VAL, -HUGE_VAL};
  for (int64_t i = threadIdx.x; i < scene_size; i += blockDim.x)
    for (int a = 0; a < 3; ++a) {
      const double value = static_cast<double>(scene[3 * i + a]);  // NaN compares false: ignored
      lower[a] = value < lower[a] ? value : lower[a];
      upper[a] = value > upper[a] ? value : upper[a];
    }
  for (int a = 0; a < 3; ++a) {
    lower[a] = block_reduce(lower[a], true);
    upper[a] = block_reduce(upper[a], false);
  }
  if (threadIdx.x == 0) {
    metrics::PointGridParams g;
    metrics::point_grid_configure(g, lower, upper, scene_size, capacity);
    params[blockIdx.x] = g;
  }
}

template <typename T>
__global__ void point_count_kernel(const T* __restrict__ points, int64_t scenes, int64_t scene_size, int64_t capacity,
                                   const metrics::PointGridParams* __restrict__ params,
                                   int32_t* __restrict__ point_cell, int32_t* __restrict__ cell_count) {
  const int64_t total = scenes * scene_size;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t s = i / scene_size;
    const double p[3] = {static_cast<double>(points[3 * i]), static_cast<double>(points[3 * i + 1]),
                         static_cast<double>(points[3 * i + 2])};
    const int64_t cell = metrics::point_grid_cell(params[s], p);
    point_cell[i] = static_cast<int32_t>(cell);
    atomicAdd(cell_count + (capacity + 1) * s + cell, 1);
  }
}

template <typename T>
__global__ void point_fill_kernel(const T* __restrict__ points, int64_t scenes, int64_t scene_size, int64_t capacity,
                                  const int32_t* __restrict__ point_cell, int32_t* __restrict__ cell_count,
                                  const int32_t* __restrict__ cell_start, T* __restrict__ sorted_points,
                                  int32_t* __restrict__ sorted_index) {
  const int64_t total = scenes * scene_size;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t s = i / scene_size;
    const int64_t row = (capacity + 1) * s + point_cell[i];
    const int32_t slot = atomicSub(cell_count + row, 1) - 1;
    const int64_t position = scene_size * s + cell_start[row] + slot;
    for (int a = 0; a < 3; ++a) sorted_points[3 * position + a] = points[3 * i + a];
    sorted_index[position] = static_cast<int32_t>(i - scene_size * s);
  }
}

// One thread per block of every scene (blocks beyond a scene's grid are left untouched).
template <typename T>
__global__ void block_summary_kernel(int64_t scenes, int64_t scene_size, int64_t capacity,
                                     const metrics::PointGridParams* __restrict__ params,
                                     const int32_t* __restrict__ cell_start, const T* __restrict__ sorted_points,
                                     int32_t* __restrict__ block_count, T* __restrict__ block_bounds) {
  const int64_t total = scenes * capacity;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t s = i / capacity, b = i % capacity;
    const metrics::PointGridParams& g = params[s];
    if (b >= g.blocks[0] * g.blocks[1] * g.blocks[2]) continue;
    block_count[i] = metrics::summarise_block(g, b, cell_start + (capacity + 1) * s, sorted_points + 3 * scene_size * s,
                                              block_bounds + 6 * i);
  }
}

template <typename T>
__global__ void nearest_query_kernel(const T* __restrict__ queries, int64_t batch, int64_t count, int64_t scenes,
                                     int64_t scene_size, int64_t capacity,
                                     const metrics::PointGridParams* __restrict__ params,
                                     const int32_t* __restrict__ cell_start, const int32_t* __restrict__ block_count,
                                     const T* __restrict__ block_bounds, const T* __restrict__ sorted_points,
                                     const int32_t* __restrict__ sorted_index,
                                     T* __restrict__ distance,
                                     int64_t* __restrict__ index) {
  const int64_t total = batch * count;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t s = scenes == 1 ? 0 : i / count;
    const double squared =
        metrics::nearest_query(queries + 3 * i, params[s], cell_start + (capacity + 1) * s, block_count + capacity * s,
                               block_bounds + 6 * capacity * s, sorted_points + 3 * scene_size * s,
                               sorted_index + scene_size * s, index + i);
    distance[i] = static_cast<T>(sqrt(squared));
  }
}

}  // namespace

template <typename T>
cudaError_t launch_nearest_points(const T* queries, int64_t batch, int64_t count, const T* points, int64_t scenes,
                                  int64_t scene_size, const NearestWorkspace<T>& ws, T* distance, int64_t* index,
                                  cudaStream_t stream) {
  if (batch == 0 || count == 0) return cudaSuccess;
  const int64_t rows = ws.capacity + 1;
  point_bounds_kernel<T><<<static_cast<unsigned int>(scenes), kReduceThreads, 0, stream>>>(points, scene_size,
                                                                                             ws.capacity, ws.params);
  cudaError_t status = cudaMemsetAsync(ws.cell_count, 0, sizeof(int32_t) * scenes * rows, stream);
  if (status != cudaSuccess) return status;
  if (scene_size > 0) {
    point_count_kernel<T><<<blocks_for(scenes * scene_size), kThreadsPerBlock, 0, stream>>>(
        points, scenes, scene_size, ws.capacity, ws.params, ws.point_cell, ws.cell_count);
  }
  exclusive_scan_segments<kScanThreads><<<static_cast<unsigned int>(scenes), kScanThreads, 0, stream>>>(ws.cell_count, ws.cell_start,
                                                                                          rows);
  if (scene_size > 0) {
    point_fill_kernel<T><<<blocks_for(scenes * scene_size), kThreadsPerBlock, 0, stream>>>(
        points, scenes, scene_size, ws.capacity, ws.point_cell, ws.cell_count, ws.cell_start, ws.sorted_points,
        ws.sorted_index);
  }
  block_summary_kernel<T><<<blocks_for(scenes * ws.capacity), kThreadsPerBlock, 0, stream>>>(
      scenes, scene_size, ws.capacity, ws.params, ws.cell_start, ws.sorted_points, ws.block_count, ws.block_bounds);
  nearest_query_kernel<T><<<blocks_for(batch * count), kThreadsPerBlock, 0, stream>>>(
      queries, batch, count, scenes, scene_size, ws.capacity, ws.params, ws.cell_start, ws.block_count,
      ws.block_bounds, ws.sorted_points, ws.sorted_index, distance, index);
  return cudaGetLastError();
}

template cudaError_t launch_nearest_points<float>(const float*, int64_t, int64_t, const float*, int64_t, int64_t,
                                                  const NearestWorkspace<float>&, float*, int64_t*, cudaStream_t);
template cudaError_t launch_nearest_points<double>(const double*, int64_t, int64_t, const double*, int64_t, int64_t,
                                                   const NearestWorkspace<double>&, double*, int64_t*, cudaStream_t);

}  // namespace cuda
}  // namespace meshrec
