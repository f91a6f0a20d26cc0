// Winding numbers of points with respect to closed triangle meshes, exactly, by counting signed
// crossings of a vertical ray. Shared by the CPU and CUDA kernels; no torch.
//
// For a closed, consistently oriented mesh the winding number of a point p is the number of
// times the ray p + t (0, 0, 1), t > 0, leaves the enclosed volume minus the number of times it
// enters it: each triangle whose xy projection contains p and which lies above p contributes
// the sign of its projected area (+1 where its normal points up). Unions of overlapping closed
// parts give 2 (or more) inside the overlaps; "inside" is winding >= 0.5.
//
// Exactness: xy coordinates are snapped to an integer lattice of 2^29 steps across the body's
// bounding box (about 4 nm for a 2 m body), so every 2D orientation test is an exact int64
// determinant. Ties (the ray through an edge or a vertex) are resolved by simulation of
// simplicity: p is displaced by (eps, eps^2), and every undirected edge is evaluated in one
// canonical direction (from its smaller vertex index), so the two triangles sharing an edge
// always see it from opposite sides and the ray is counted exactly once. Only points within
// rounding of the surface itself (where "inside" is not defined) can go either way.
//
// Acceleration: a uniform 2D grid over the projected bounding box. Each triangle is stored once,
// in the cell of its projected bounding-box corner; the cell size is at least twice the mean
// triangle extent, and triangles larger than a cell go to a short list every query checks. A
// query point reads its cell and the three cells below / left of it. Storage is exactly one
// slot per triangle, so the GPU build needs no host synchronisation to size its arrays.
#pragma once

#include <cstdint>

#include "../common/hostdevice.h"

namespace meshrec {
namespace metrics {

constexpr double kWindingLatticeSteps = 536870912.0;  // 2^29: int64 orientation tests cannot overflow

struct WindingGridParams {
  double origin[2];        // xy minimum of the vertices
  double upper[2];         // xy maximum
  double z_min, z_max;
  double inverse_quantum;  // lattice steps per unit length
  int64_t cell;            // cell size in lattice steps
  int64_t cells[2];        // grid size along x and y
  int64_t valid;           // 0: the projection has no area (every winding number is 0)
  int64_t nonfinite;       // 1: a vertex is NaN or infinite (every winding number is NaN, not 0)
};

// Grid cells available per body for `faces` triangles.
MESHREC_HOST_DEVICE inline int64_t winding_grid_capacity(int64_t faces) { return 2 * faces + 16; }

MESHREC_HOST_DEVICE inline int64_t winding_quantize(double value, double origin, double inverse_quantum) {
  return static_cast<int64_t>(floor((value - origin) * inverse_quantum + 0.5));
}

// Fills origin/upper/z range/inverse_quantum/valid from the vertex bounding box.
MESHREC_HOST_DEVICE inline void winding_set_bounds(WindingGridParams& g, const double* lower, const double* upper) {
  g.origin[0] = lower[0];
  g.origin[1] = lower[1];
  g.upper[0] = upper[0];
  g.upper[1] = upper[1];
  g.z_min = lower[2];
  g.z_max = upper[2];
  const double extent = fmax(upper[0] - lower[0], upper[1] - lower[1]);
  g.valid = extent > 0.0 && extent < 1e300;  // false on NaN
  g.nonfinite = 0;  // set by the grid builders, which see every vertex
  g.inverse_quantum = g.valid ? kWindingLatticeSteps / extent : 0.0;
  g.cell = 1;
  g.cells[0] = g.cells[1] = 1;
}

// Chooses the cell size from the mean triangle extent (in lattice steps), within `capacity`.
MESHREC_HOST_DEVICE inline void winding_set_cells(WindingGridParams& g, double mean_extent, int64_t capacity) {
  if (!g.valid) return;
  const int64_t span_x = winding_quantize(g.upper[0], g.origin[0], g.inverse_quantum);
  const int64_t span_y = winding_quantize(g.upper[1], g.origin[1], g.inverse_quantum);
  int64_t cell = static_cast<int64_t>(ceil(2.0 * mean_extent));
  if (cell < 1) cell = 1;
  for (;;) {
    const int64_t nx = span_x / cell + 1, ny = span_y / cell + 1;
    if (nx * ny <= capacity) {
      g.cell = cell;
      g.cells[0] = nx;
      g.cells[1] = ny;
      return;
    }
    cell = cell + cell / 2 + 1;
  }
}

// Projected bounding box of face (i0, i1, i2) in lattice steps, and whether it has area.
MESHREC_HOST_DEVICE inline bool winding_face_box(const int64_t* lattice, const int64_t* face, int64_t* box) {
  const int64_t* a = lattice + 2 * face[0];
  const int64_t* b = lattice + 2 * face[1];
  const int64_t* c = lattice + 2 * face[2];
  box[0] = a[0] < b[0] ? (a[0] < c[0] ? a[0] : c[0]) : (b[0] < c[0] ? b[0] : c[0]);
  box[1] = a[1] < b[1] ? (a[1] < c[1] ? a[1] : c[1]) : (b[1] < c[1] ? b[1] : c[1]);
  box[2] = a[0] > b[0] ? (a[0] > c[0] ? a[0] : c[0]) : (b[0] > c[0] ? b[0] : c[0]);
  box[3] = a[1] > b[1] ? (a[1] > c[1] ? a[1] : c[1]) : (b[1] > c[1] ? b[1] : c[1]);
  const int64_t area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
  return area != 0;
}

// Grid cell of a face that fits in one cell (its box corner), or -1 for the list of large faces.
MESHREC_HOST_DEVICE inline int64_t winding_face_cell(const WindingGridParams& g, const int64_t* box) {
  if (box[2] - box[0] > g.cell || box[3] - box[1] > g.cell) return -1;
  return (box[0] / g.cell) * g.cells[1] + box[1] / g.cell;
}

MESHREC_HOST_DEVICE inline int64_t orient2d(const int64_t* a, const int64_t* b, int64_t px, int64_t py) {
  return (b[0] - a[0]) * (py - a[1]) - (b[1] - a[1]) * (px - a[0]);
}

// Side (+1 left, -1 right) of the displaced point p + (eps, eps^2) relative to the directed edge
// u -> v, evaluated along the canonical direction so that both users of an edge agree.
MESHREC_HOST_DEVICE inline int edge_side(int64_t index_u, const int64_t* u, int64_t index_v, const int64_t* v, int64_t px,
                                         int64_t py) {
  const bool reversed = index_u > index_v;
  const int64_t* a = reversed ? v : u;
  const int64_t* b = reversed ? u : v;
  const int64_t e = orient2d(a, b, px, py);
  int side;
  if (e != 0) {
    side = e > 0 ? 1 : -1;
  } else {
    // d e / d px = -(b.y - a.y), d e / d py = b.x - a.x
    const int64_t dy = b[1] - a[1], dx = b[0] - a[0];
    side = dy != 0 ? (dy < 0 ? 1 : -1) : (dx > 0 ? 1 : (dx < 0 ? -1 : 0));
  }
  return reversed ? -side : side;
}

// Signed crossing of the upward ray from p (lattice px, py; height pz) with one face.
template <typename T>
MESHREC_HOST_DEVICE inline int face_crossing(const int64_t* face, const int64_t* lattice, const T* vertices, int64_t px,
                                             int64_t py, double pz) {
  const int64_t i0 = face[0], i1 = face[1], i2 = face[2];
  const int64_t* a = lattice + 2 * i0;
  const int64_t* b = lattice + 2 * i1;
  const int64_t* c = lattice + 2 * i2;
  const int64_t area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
  if (area == 0) return 0;
  const int orientation = area > 0 ? 1 : -1;
  if (edge_side(i0, a, i1, b, px, py) != orientation) return 0;
  if (edge_side(i1, b, i2, c, px, py) != orientation) return 0;
  if (edge_side(i2, c, i0, a, px, py) != orientation) return 0;
  // Height of the face above p: barycentric weights are the exact edge functions over the area.
  const double weighted_height = static_cast<double>(orient2d(b, c, px, py)) * static_cast<double>(vertices[3 * i0 + 2]) +
                                 static_cast<double>(orient2d(c, a, px, py)) * static_cast<double>(vertices[3 * i1 + 2]) +
                                 static_cast<double>(orient2d(a, b, px, py)) * static_cast<double>(vertices[3 * i2 + 2]);
  const double above = (weighted_height - pz * static_cast<double>(area)) * orientation;
  return above > 0.0 ? orientation : 0;
}

// Winding number of one point. `lattice` holds the snapped xy of every vertex (V x 2), the
// grid lists face indices per cell (CSR: cell_start has cells + 1 entries).
template <typename T>
MESHREC_HOST_DEVICE inline int winding_query(const T* point, const WindingGridParams& g, const int64_t* lattice,
                                             const T* vertices, const int64_t* faces, const int32_t* cell_start,
                                             const int32_t* cell_faces, const int32_t* large_faces,
                                             int32_t large_count) {
  if (!g.valid) return 0;
  const double x = point[0], y = point[1], z = point[2];
  // Outside the bounding box (or NaN, which fails every comparison) the winding number is 0.
  if (!(x >= g.origin[0] && x <= g.upper[0] && y >= g.origin[1] && y <= g.upper[1] && z >= g.z_min && z <= g.z_max))
    return 0;
  const int64_t px = winding_quantize(x, g.origin[0], g.inverse_quantum);
  const int64_t py = winding_quantize(y, g.origin[1], g.inverse_quantum);
  int64_t cx = px / g.cell, cy = py / g.cell;
  if (cx > g.cells[0] - 1) cx = g.cells[0] - 1;
  if (cy > g.cells[1] - 1) cy = g.cells[1] - 1;
  int total = 0;
  for (int64_t ix = cx > 0 ? cx - 1 : 0; ix <= cx; ++ix)
    for (int64_t iy = cy > 0 ? cy - 1 : 0; iy <= cy; ++iy) {
      const int64_t cell = ix * g.cells[1] + iy;
      for (int32_t k = cell_start[cell]; k < cell_start[cell + 1]; ++k)
        total += face_crossing(faces + 3 * static_cast<int64_t>(cell_faces[k]), lattice, vertices, px, py, z);
    }
  for (int32_t k = 0; k < large_count; ++k)
    total += face_crossing(faces + 3 * static_cast<int64_t>(large_faces[k]), lattice, vertices, px, py, z);
  return total;
}

}  // namespace metrics
}  // namespace meshrec
