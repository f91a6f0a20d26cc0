// CUDA kernels of the winding-number op: per-body grid build (bounds, lattice, cell size,
// counting sort of the faces) and one thread per (body, point) query. See winding.h.
#include "../common/cuda_launch.h"
#include "grid_build.cuh"
#include "metrics_cuda.h"
#include "winding.h"

namespace meshrec {
namespace cuda {
namespace {

template <typename T>
__global__ void winding_bounds_kernel(const T* __restrict__ vertices, int64_t vertex_count,
                                      metrics::WindingGridParams* __restrict__ params) {
  const T* body = vertices + 3 * vertex_count * blockIdx.x;
  double lower[3] = {HUGE_VAL, HUGE_VAL, HUGE_VAL}, upper[3] = {-HUGE_VAL, -HUGE_VAL, -HUGE_VAL};
  double finite = 1.0;
  for (int64_t v = threadIdx.x; v < vertex_count; v += blockDim.x)
    for (int a = 0; a < 3; ++a) {
      const double value = static_cast<double>(body[3 * v + a]);
      if (!(value - value == 0.0)) finite = 0.0;  // NaN or infinite
      lower[a] = value < lower[a] ? value : lower[a];
      upper[a] = value > upper[a] ? value : upper[a];
    }
  for (int a = 0; a < 3; ++a) {
    lower[a] = block_reduce(lower[a], true);
    upper[a] = block_reduce(upper[a], false);
  }
  finite = block_reduce(finite, true);
  if (threadIdx.x == 0) {
    metrics::WindingGridParams g;
    metrics::winding_set_bounds(g, lower, upper);
    if (finite == 0.0 || vertex_count == 0) g.valid = 0;
    g.nonfinite = finite == 0.0;
    params[blockIdx.x] = g;
  }
}

template <typename T>
__global__ void winding_lattice_kernel(const T* __restrict__ vertices, int64_t bodies, int64_t vertex_count,
                                       const metrics::WindingGridParams* __restrict__ params,
                                       int64_t* __restrict__ lattice) {
  const int64_t total = bodies * vertex_count;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const metrics::WindingGridParams& g = params[i / vertex_count];
    lattice[2 * i] = g.valid ? metrics::winding_quantize(vertices[3 * i], g.origin[0], g.inverse_quantum) : 0;
    lattice[2 * i + 1] = g.valid ? metrics::winding_quantize(vertices[3 * i + 1], g.origin[1], g.inverse_quantum) : 0;
  }
}

__global__ void winding_cells_kernel(const int64_t* __restrict__ lattice, int64_t vertex_count,
                                     const int64_t* __restrict__ faces, int64_t face_count, int64_t capacity,
                                     metrics::WindingGridParams* __restrict__ params) {
  const int64_t* body = lattice + 2 * vertex_count * blockIdx.x;
  double extent = 0.0, with_area = 0.0;
  int64_t box[4];
  for (int64_t f = threadIdx.x; f < face_count; f += blockDim.x)
    if (metrics::winding_face_box(body, faces + 3 * f, box)) {
      extent += static_cast<double>((box[2] - box[0]) > (box[3] - box[1]) ? box[2] - box[0] : box[3] - box[1]);
      with_area += 1.0;
    }
  extent = block_sum(extent);
  with_area = block_sum(with_area);
  if (threadIdx.x == 0) metrics::winding_set_cells(params[blockIdx.x], with_area > 0.0 ? extent / with_area : 1.0, capacity);
}

__global__ void winding_count_kernel(const int64_t* __restrict__ lattice, int64_t bodies, int64_t vertex_count,
                                     const int64_t* __restrict__ faces, int64_t face_count, int64_t capacity,
                                     const metrics::WindingGridParams* __restrict__ params,
                                     int32_t* __restrict__ cell_count, int32_t* __restrict__ large_faces,
                                     int32_t* __restrict__ large_count) {
  const int64_t total = bodies * face_count;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / face_count, f = i % face_count;
    int64_t box[4];
    if (!metrics::winding_face_box(lattice + 2 * vertex_count * b, faces + 3 * f, box)) continue;
    const int64_t cell = metrics::winding_face_cell(params[b], box);
    if (cell < 0) {
      const int32_t slot = atomicAdd(large_count + b, 1);
      large_faces[face_count * b + slot] = static_cast<int32_t>(f);
    } else {
      atomicAdd(cell_count + (capacity + 1) * b + cell, 1);
    }
  }
}

__global__ void winding_fill_kernel(const int64_t* __restrict__ lattice, int64_t bodies, int64_t vertex_count,
                                    const int64_t* __restrict__ faces, int64_t face_count, int64_t capacity,
                                    const metrics::WindingGridParams* __restrict__ params,
                                    int32_t* __restrict__ cell_count, const int32_t* __restrict__ cell_start,
                                    int32_t* __restrict__ cell_faces) {
  const int64_t total = bodies * face_count;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / face_count, f = i % face_count;
    int64_t box[4];
    if (!metrics::winding_face_box(lattice + 2 * vertex_count * b, faces + 3 * f, box)) continue;
    const int64_t cell = metrics::winding_face_cell(params[b], box);
    if (cell < 0) continue;
    const int64_t row = (capacity + 1) * b + cell;
    const int32_t slot = atomicSub(cell_count + row, 1) - 1;
    cell_faces[face_count * b + cell_start[row] + slot] = static_cast<int32_t>(f);
  }
}

template <typename T>
__global__ void winding_query_kernel(const T* __restrict__ points, int64_t point_sets, int64_t count,
                                     const T* __restrict__ vertices, int64_t bodies, int64_t vertex_count,
                                     const int64_t* __restrict__ faces, int64_t face_count, int64_t capacity,
                                     const metrics::WindingGridParams* __restrict__ params,
                                     const int64_t* __restrict__ lattice, const int32_t* __restrict__ cell_start,
                                     const int32_t* __restrict__ cell_faces, const int32_t* __restrict__ large_faces,
                                     const int32_t* __restrict__ large_count, T* __restrict__ winding) {
  const int64_t total = bodies * count;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / count, k = i % count;
    const T* point = points + 3 * (count * (point_sets == 1 ? 0 : b) + k);
    if (!(point[0] == point[0] && point[1] == point[1] && point[2] == point[2])) {
      winding[i] = point[0] + point[1] + point[2];
      continue;
    }
    if (params[b].nonfinite) {  // a NaN or infinite vertex: no defined inside, never "outside" (0)
      winding[i] = static_cast<T>(NAN);
      continue;
    }
    winding[i] = static_cast<T>(metrics::winding_query(
        point, params[b], lattice + 2 * vertex_count * b, vertices + 3 * vertex_count * b, faces,
        cell_start + (capacity + 1) * b, cell_faces + face_count * b, large_faces + face_count * b, large_count[b]));
  }
}

}  // namespace

template <typename T>
cudaError_t launch_winding_number(const T* points, int64_t point_sets, int64_t count, const T* vertices, int64_t bodies,
                                  int64_t vertex_count, const int64_t* faces, int64_t face_count,
                                  const WindingWorkspace& ws, T* winding, cudaStream_t stream) {
  if (bodies == 0 || count == 0) return cudaSuccess;
  const int64_t rows = ws.capacity + 1;
  winding_bounds_kernel<T><<<static_cast<unsigned int>(bodies), kReduceThreads, 0, stream>>>(vertices, vertex_count,
                                                                                               ws.params);
  winding_lattice_kernel<T><<<blocks_for(bodies * vertex_count), kThreadsPerBlock, 0, stream>>>(
      vertices, bodies, vertex_count, ws.params, ws.lattice);
  winding_cells_kernel<<<static_cast<unsigned int>(bodies), kReduceThreads, 0, stream>>>(
      ws.lattice, vertex_count, faces, face_count, ws.capacity, ws.params);
  cudaError_t status = cudaMemsetAsync(ws.cell_count, 0, sizeof(int32_t) * bodies * rows, stream);
  if (status != cudaSuccess) return status;
  status = cudaMemsetAsync(ws.large_count, 0, sizeof(int32_t) * bodies, stream);
  if (status != cudaSuccess) return status;
  if (face_count > 0) {
    winding_count_kernel<<<blocks_for(bodies * face_count), kThreadsPerBlock, 0, stream>>>(
        ws.lattice, bodies, vertex_count, faces, face_count, ws.capacity, ws.params, ws.cell_count, ws.large_faces,
        ws.large_count);
  }
  exclusive_scan_segments<kScanThreads><<<static_cast<unsigned int>(bodies), kScanThreads, 0, stream>>>(ws.cell_count, ws.cell_start,
                                                                                          rows);
  if (face_count > 0) {
    winding_fill_kernel<<<blocks_for(bodies * face_count), kThreadsPerBlock, 0, stream>>>(
        ws.lattice, bodies, vertex_count, faces, face_count, ws.capacity, ws.params, ws.cell_count, ws.cell_start,
        ws.cell_faces);
  }
  winding_query_kernel<T><<<blocks_for(bodies * count), kThreadsPerBlock, 0, stream>>>(
      points, point_sets, count, vertices, bodies, vertex_count, faces, face_count, ws.capacity, ws.params, ws.lattice,
      ws.cell_start, ws.cell_faces, ws.large_faces, ws.large_count, winding);
  return cudaGetLastError();
}

template cudaError_t launch_winding_number<float>(const float*, int64_t, int64_t, const float*, int64_t, int64_t,
                                                  const int64_t*, int64_t, const WindingWorkspace&, float*,
                                                  cudaStream_t);
template cudaError_t launch_winding_number<double>(const double*, int64_t, int64_t, const double*, int64_t, int64_t,
                                                   const int64_t*, int64_t, const WindingWorkspace&, double*,
                                                   cudaStream_t);

}  // namespace cuda
}  // namespace meshrec
