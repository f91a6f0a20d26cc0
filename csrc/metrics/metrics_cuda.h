// Launchers of the metrics CUDA kernels. Plain pointers and a stream: no torch types, so the .cu
// files compile with nvcc alone and the torch binding needs no CUDA syntax. Every array is
// contiguous on the device; nothing here synchronises with the host.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "nearest.h"
#include "sdf.h"
#include "winding.h"

namespace meshrec {
namespace cuda {

// ---- procrustes: batch point sets of count points; weights may be null; residual: batch x count
// distances |aligned - target|.
template <typename T>
cudaError_t launch_procrustes(const T* source, const T* target, const T* weights, int64_t batch, int64_t count,
                              bool scaling, T* aligned, T* scale, T* rotation, T* translation, T* residual,
                              cudaStream_t stream);

// Incoming gradients may be null (zero).
template <typename T>
cudaError_t launch_procrustes_backward(const T* grad_aligned, const T* grad_scale, const T* grad_rotation,
                                       const T* grad_translation, const T* grad_residual, const T* source,
                                       const T* target, const T* weights, int64_t batch, int64_t count, bool scaling,
                                       T* grad_source, T* grad_target, T* grad_weights, cudaStream_t stream);

// ---- sample_sdf: count points; sdf is grid.dims[0] x dims[1] x dims[2].
template <typename T>
cudaError_t launch_sample_sdf(const T* points, int64_t count, const T* sdf, metrics::SdfGrid grid, T* values,
                              cudaStream_t stream);

template <typename T>
cudaError_t launch_sample_sdf_backward(const T* grad_values, const T* points, int64_t count, const T* sdf,
                                       metrics::SdfGrid grid, T* grad_points, cudaStream_t stream);

// ---- grids: scratch memory carved from one device buffer of workspace_bytes().

inline size_t align_bytes(size_t bytes) { return (bytes + 255) / 256 * 256; }

struct WindingWorkspace {
  metrics::WindingGridParams* params;  // bodies
  int64_t* lattice;                    // bodies x V x 2
  int32_t* cell_count;                 // bodies x (capacity + 1)
  int32_t* cell_start;                 // bodies x (capacity + 1)
  int32_t* cell_faces;                 // bodies x F
  int32_t* large_faces;                // bodies x F
  int32_t* large_count;                // bodies
  int64_t capacity;                    // cells per body

  // Bytes needed (base == nullptr) or pointers carved from base.
  static size_t layout(void* base, int64_t bodies, int64_t vertices, int64_t faces, WindingWorkspace* out) {
    const int64_t capacity = metrics::winding_grid_capacity(faces);
    const size_t sizes[7] = {
        align_bytes(sizeof(metrics::WindingGridParams) * bodies), align_bytes(sizeof(int64_t) * bodies * vertices * 2),
        align_bytes(sizeof(int32_t) * bodies * (capacity + 1)),  align_bytes(sizeof(int32_t) * bodies * (capacity + 1)),
        align_bytes(sizeof(int32_t) * bodies * faces),           align_bytes(sizeof(int32_t) * bodies * faces),
        align_bytes(sizeof(int32_t) * bodies)};
    char* cursor = static_cast<char*>(base);
    size_t total = 0;
    void* pointers[7];
    for (int k = 0; k < 7; ++k) {
      pointers[k] = cursor ? cursor + total : nullptr;
      total += sizes[k];
    }
    if (out) {
      out->params = static_cast<metrics::WindingGridParams*>(pointers[0]);
      out->lattice = static_cast<int64_t*>(pointers[1]);
      out->cell_count = static_cast<int32_t*>(pointers[2]);
      out->cell_start = static_cast<int32_t*>(pointers[3]);
      out->cell_faces = static_cast<int32_t*>(pointers[4]);
      out->large_faces = static_cast<int32_t*>(pointers[5]);
      out->large_count = static_cast<int32_t*>(pointers[6]);
      out->capacity = capacity;
    }
    return total;
  }
};

// points: point_sets (1 or bodies) x count x 3; vertices: bodies x vertex_count x 3; faces:
// face_count x 3 with valid indices; winding: bodies x count.
template <typename T>
cudaError_t launch_winding_number(const T* points, int64_t point_sets, int64_t count, const T* vertices, int64_t bodies,
                                  int64_t vertex_count, const int64_t* faces, int64_t face_count,
                                  const WindingWorkspace& workspace, T* winding, cudaStream_t stream);

template <typename T>
struct NearestWorkspace {
  metrics::PointGridParams* params;  // scenes
  int32_t* cell_count;               // scenes x (capacity + 1)
  int32_t* cell_start;               // scenes x (capacity + 1)
  int32_t* block_count;              // scenes x capacity
  T* block_bounds;                   // scenes x capacity x 6
  int32_t* point_cell;               // scenes x P
  T* sorted_points;                  // scenes x P x 3
  int32_t* sorted_index;             // scenes x P
  int64_t capacity;

  static size_t layout(void* base, int64_t scenes, int64_t points, NearestWorkspace* out) {
    const int64_t capacity = metrics::point_grid_capacity(points);
    const size_t sizes[8] = {
        align_bytes(sizeof(metrics::PointGridParams) * scenes), align_bytes(sizeof(int32_t) * scenes * (capacity + 1)),
        align_bytes(sizeof(int32_t) * scenes * (capacity + 1)), align_bytes(sizeof(int32_t) * scenes * capacity),
        align_bytes(sizeof(T) * scenes * capacity * 6),         align_bytes(sizeof(int32_t) * scenes * points),
        align_bytes(sizeof(T) * scenes * points * 3),           align_bytes(sizeof(int32_t) * scenes * points)};
    char* cursor = static_cast<char*>(base);
    size_t total = 0;
    void* pointers[8];
    for (int k = 0; k < 8; ++k) {
      pointers[k] = cursor ? cursor + total : nullptr;
      total += sizes[k];
    }
    if (out) {
      out->params = static_cast<metrics::PointGridParams*>(pointers[0]);
      out->cell_count = static_cast<int32_t*>(pointers[1]);
      out->cell_start = static_cast<int32_t*>(pointers[2]);
      out->block_count = static_cast<int32_t*>(pointers[3]);
      out->block_bounds = static_cast<T*>(pointers[4]);
      out->point_cell = static_cast<int32_t*>(pointers[5]);
      out->sorted_points = static_cast<T*>(pointers[6]);
      out->sorted_index = static_cast<int32_t*>(pointers[7]);
      out->capacity = capacity;
    }
    return total;
  }
};

// queries: batch x count x 3; points: scenes (1 or batch) x scene_size x 3; outputs batch x count.
template <typename T>
cudaError_t launch_nearest_points(const T* queries, int64_t batch, int64_t count, const T* points, int64_t scenes,
                                  int64_t scene_size, const NearestWorkspace<T>& workspace, T* distance,
                                  int64_t* index, cudaStream_t stream);

}  // namespace cuda
}  // namespace meshrec
