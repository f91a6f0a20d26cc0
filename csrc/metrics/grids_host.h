// Host (CPU) construction of the acceleration grids of winding.h and nearest.h: serial counting
// sorts, one body or one scene at a time. No torch, so the C++ tests use them too.
#pragma once

#include <cstdint>
#include <vector>

#include "nearest.h"
#include "winding.h"

namespace meshrec {
namespace metrics {

struct WindingGridHost {
  WindingGridParams params;
  std::vector<int64_t> lattice;     // V x 2
  std::vector<int32_t> cell_start;  // cells + 1
  std::vector<int32_t> cell_faces;
  std::vector<int32_t> large_faces;
};

// Faces must index valid vertices (checked by the caller).
template <typename T>
inline void build_winding_grid(const T* vertices, int64_t vertex_count, const int64_t* faces, int64_t face_count,
                               WindingGridHost& grid) {
  WindingGridParams& g = grid.params;
  double lower[3] = {HUGE_VAL, HUGE_VAL, HUGE_VAL}, upper[3] = {-HUGE_VAL, -HUGE_VAL, -HUGE_VAL};
  bool finite = true;
  for (int64_t v = 0; v < vertex_count; ++v)
    for (int a = 0; a < 3; ++a) {
      const double value = static_cast<double>(vertices[3 * v + a]);
      if (!(value - value == 0.0)) finite = false;  // NaN or infinite
      lower[a] = value < lower[a] ? value : lower[a];
      upper[a] = value > upper[a] ? value : upper[a];
    }
  winding_set_bounds(g, lower, upper);
  if (!finite || vertex_count == 0) g.valid = 0;
  g.nonfinite = !finite;
  grid.lattice.assign(2 * vertex_count, 0);
  grid.cell_faces.clear();
  grid.large_faces.clear();
  if (!g.valid) {
    grid.cell_start.assign(2, 0);
    return;
  }
  for (int64_t v = 0; v < vertex_count; ++v) {
    grid.lattice[2 * v] = winding_quantize(static_cast<double>(vertices[3 * v]), g.origin[0], g.inverse_quantum);
    grid.lattice[2 * v + 1] = winding_quantize(static_cast<double>(vertices[3 * v + 1]), g.origin[1], g.inverse_quantum);
  }
  double extent_sum = 0.0;
  int64_t with_area = 0;
  int64_t box[4];
  for (int64_t f = 0; f < face_count; ++f)
    if (winding_face_box(grid.lattice.data(), faces + 3 * f, box)) {
      extent_sum += static_cast<double>((box[2] - box[0]) > (box[3] - box[1]) ? box[2] - box[0] : box[3] - box[1]);
      ++with_area;
    }
  winding_set_cells(g, with_area ? extent_sum / static_cast<double>(with_area) : 1.0, winding_grid_capacity(face_count));
  const int64_t cells = g.cells[0] * g.cells[1];
  std::vector<int32_t> face_cell(face_count, -2);  // -2: no area, -1: large
  grid.cell_start.assign(cells + 1, 0);
  for (int64_t f = 0; f < face_count; ++f) {
    if (!winding_face_box(grid.lattice.data(), faces + 3 * f, box)) continue;
    const int64_t cell = winding_face_cell(g, box);
    face_cell[f] = static_cast<int32_t>(cell);
    if (cell < 0)
      grid.large_faces.push_back(static_cast<int32_t>(f));
    else
      ++grid.cell_start[cell + 1];
  }
  for (int64_t c = 0; c < cells; ++c) grid.cell_start[c + 1] += grid.cell_start[c];
  grid.cell_faces.assign(grid.cell_start[cells], 0);
  std::vector<int32_t> cursor(grid.cell_start.begin(), grid.cell_start.end() - 1);
  for (int64_t f = 0; f < face_count; ++f)
    if (face_cell[f] >= 0) grid.cell_faces[cursor[face_cell[f]]++] = static_cast<int32_t>(f);
}

template <typename T>
inline int winding_query(const T* point, const WindingGridHost& grid, const T* vertices, const int64_t* faces) {
  return winding_query(point, grid.params, grid.lattice.data(), vertices, faces, grid.cell_start.data(),
                       grid.cell_faces.data(), grid.large_faces.data(), static_cast<int32_t>(grid.large_faces.size()));
}

template <typename T>
struct PointGridHost {
  PointGridParams params;
  std::vector<int32_t> cell_start;   // cells + 1
  std::vector<int32_t> block_count;  // points per block
  std::vector<T> block_bounds;       // 6 per block: the box of its points
  std::vector<T> sorted_points;      // P x 3, grouped by cell
  std::vector<int32_t> sorted_index;
};

template <typename T>
inline void build_point_grid(const T* points, int64_t count, PointGridHost<T>& grid) {
  PointGridParams& g = grid.params;
  double lower[3] = {HUGE_VAL, HUGE_VAL, HUGE_VAL}, upper[3] = {-HUGE_VAL, -HUGE_VAL, -HUGE_VAL};
  for (int64_t i = 0; i < count; ++i)
    for (int a = 0; a < 3; ++a) {
      const double value = static_cast<double>(points[3 * i + a]);
      lower[a] = value < lower[a] ? value : lower[a];  // NaN compares false: ignored
      upper[a] = value > upper[a] ? value : upper[a];
    }
  point_grid_configure(g, lower, upper, count, point_grid_capacity(count));
  const int64_t cells = g.dims[0] * g.dims[1] * g.dims[2];
  std::vector<int32_t> point_cell(count);
  grid.cell_start.assign(cells + 1, 0);
  for (int64_t i = 0; i < count; ++i) {
    const double p[3] = {static_cast<double>(points[3 * i]), static_cast<double>(points[3 * i + 1]),
                         static_cast<double>(points[3 * i + 2])};
    point_cell[i] = static_cast<int32_t>(point_grid_cell(g, p));
    ++grid.cell_start[point_cell[i] + 1];
  }
  for (int64_t c = 0; c < cells; ++c) grid.cell_start[c + 1] += grid.cell_start[c];
  grid.sorted_points.resize(3 * count);
  grid.sorted_index.resize(count);
  std::vector<int32_t> cursor(grid.cell_start.begin(), grid.cell_start.end() - 1);
  for (int64_t i = 0; i < count; ++i) {
    const int32_t slot = cursor[point_cell[i]]++;
    for (int a = 0; a < 3; ++a) grid.sorted_points[3 * static_cast<int64_t>(slot) + a] = points[3 * i + a];
    grid.sorted_index[slot] = static_cast<int32_t>(i);
  }
  const int64_t blocks = g.blocks[0] * g.blocks[1] * g.blocks[2];
  grid.block_count.resize(blocks);
  grid.block_bounds.resize(6 * blocks);
  for (int64_t b = 0; b < blocks; ++b)
    grid.block_count[b] =
        summarise_block(g, b, grid.cell_start.data(), grid.sorted_points.data(), grid.block_bounds.data() + 6 * b);
}

template <typename T>
inline double nearest_query(const T* query, const PointGridHost<T>& grid, int64_t* index) {
  return nearest_query(query, grid.params, grid.cell_start.data(), grid.block_count.data(), grid.block_bounds.data(),
                       grid.sorted_points.data(),
                       grid.sorted_index.data(), index);
}

}  // namespace metrics
}  // namespace meshrec
