// Nearest point of a point cloud (a scene) for query points (body vertices), with a uniform grid.
// Shared by the CPU and CUDA kernels; no torch.
//
// The scene's bounding box is cut into cubic cells (about four points per cell for a volume
// filled uniformly; scenes are surfaces, so occupied cells hold more). Points are sorted by cell
// (counting sort: exactly one slot per point, so the GPU build needs no host synchronisation).
// A query visits cells in rings of growing Chebyshev distance around its (clamped) cell and
// stops once a lower bound on the distance to every unvisited cell exceeds the best distance
// found: the result is exact, ties going to the smaller point index. Memory is linear in the
// number of points, so a million-point scene needs a few tens of MB.
#pragma once

#include <cstdint>

#include "../common/hostdevice.h"

namespace meshrec {
namespace metrics {

struct PointGridParams {
  double origin[3];
  double cell;          // edge length
  double inverse_cell;
  int64_t dims[3];
  int64_t valid;        // 0 for an empty scene
};

// Cells available per scene of `points` points.
MESHREC_HOST_DEVICE inline int64_t point_grid_capacity(int64_t points) { return points / 4 + 1; }

// Cell size and grid dimensions from the bounding box, within `capacity` cells.
MESHREC_HOST_DEVICE inline void point_grid_configure(PointGridParams& g, const double* lower, const double* upper,
                                                     int64_t count, int64_t capacity) {
  g.valid = count > 0;
  double extent[3], largest = 0.0;
  for (int a = 0; a < 3; ++a) {
    g.origin[a] = lower[a];
    extent[a] = upper[a] - lower[a];
    if (!(extent[a] >= 0.0) || extent[a] > 1e300) extent[a] = 0.0;  // NaN or empty: one layer
    largest = fmax(largest, extent[a]);
  }
  g.dims[0] = g.dims[1] = g.dims[2] = 1;
  if (!(largest > 0.0)) {
    g.cell = 1.0;
    g.inverse_cell = 1.0;
    return;
  }
  // Start from cubes filling the box with `capacity` cells, flat axes counted as one cell thick.
  double volume = 1.0;
  for (int a = 0; a < 3; ++a) volume *= fmax(extent[a], largest / static_cast<double>(capacity));
  double cell = cbrt(volume / static_cast<double>(capacity));
  for (;;) {
    int64_t total = 1;
    for (int a = 0; a < 3; ++a) {
      g.dims[a] = static_cast<int64_t>(floor(extent[a] / cell)) + 1;
      total *= g.dims[a];
    }
    if (total <= capacity) break;
    cell *= 1.125;
  }
  g.cell = cell;
  g.inverse_cell = 1.0 / cell;
}

// Cell index of a point (clamped into the grid).
MESHREC_HOST_DEVICE inline int64_t point_grid_axis(const PointGridParams& g, int a, double value) {
  const double u = floor((value - g.origin[a]) * g.inverse_cell);
  if (!(u > 0.0)) return 0;  // also NaN
  const double last = static_cast<double>(g.dims[a] - 1);
  return static_cast<int64_t>(u < last ? u : last);
}

MESHREC_HOST_DEVICE inline int64_t point_grid_cell(const PointGridParams& g, const double* p) {
  return (point_grid_axis(g, 0, p[0]) * g.dims[1] + point_grid_axis(g, 1, p[1])) * g.dims[2] +
         point_grid_axis(g, 2, p[2]);
}

// Distance from value to the interval [lo, hi].
MESHREC_HOST_DEVICE inline double interval_distance(double value, double lo, double hi) {
  return value < lo ? lo - value : (value > hi ? value - hi : 0.0);
}

// Squared distance from q to the nearest point and its index (into the unsorted cloud; -1 for an
// empty scene). Points are sorted by cell: cell c holds sorted[cell_start[c] .. cell_start[c+1]).
template <typename T>
MESHREC_HOST_DEVICE inline double nearest_query(const T* query, const PointGridParams& g, const int32_t* cell_start,
                                                const T* sorted_points, const int32_t* sorted_index, int64_t* best_index) {
  double best = HUGE_VAL;
  int64_t best_i = -1;
  *best_index = -1;
  if (!g.valid) return best;
  const double q[3] = {static_cast<double>(query[0]), static_cast<double>(query[1]), static_cast<double>(query[2])};
  if (!(q[0] == q[0] && q[1] == q[1] && q[2] == q[2])) return q[0] + q[1] + q[2];  // NaN query
  int64_t c[3];
  double outside[3];  // distance from q to the grid's slab along each axis
  int64_t rings = 0;
  for (int a = 0; a < 3; ++a) {
    c[a] = point_grid_axis(g, a, q[a]);
    outside[a] = interval_distance(q[a], g.origin[a], g.origin[a] + g.cell * static_cast<double>(g.dims[a]));
    const int64_t reach = c[a] > g.dims[a] - 1 - c[a] ? c[a] : g.dims[a] - 1 - c[a];
    if (reach > rings) rings = reach;
  }
  const int64_t ny = g.dims[1], nz = g.dims[2];
  for (int64_t k = 0; k <= rings; ++k) {
    if (k > 0) {
      // Every unvisited cell is at least k cells away along some axis a, on one side: bound the
      // distance to that slab (clipped to the grid along the other axes).
      double bound = HUGE_VAL;
      for (int a = 0; a < 3; ++a) {
        const double others = outside[(a + 1) % 3] * outside[(a + 1) % 3] + outside[(a + 2) % 3] * outside[(a + 2) % 3];
        if (c[a] - k >= 0) {
          const double gap = fmax(0.0, q[a] - (g.origin[a] + g.cell * static_cast<double>(c[a] - k + 1)));
          bound = fmin(bound, gap * gap + others);
        }
        if (c[a] + k <= g.dims[a] - 1) {
          const double gap = fmax(0.0, g.origin[a] + g.cell * static_cast<double>(c[a] + k) - q[a]);
          bound = fmin(bound, gap * gap + others);
        }
      }
      if (bound * (1.0 - 1e-9) > best) break;
    }
    for (int64_t ix = c[0] - k; ix <= c[0] + k; ++ix) {
      if (ix < 0 || ix >= g.dims[0]) continue;
      const double dx = interval_distance(q[0], g.origin[0] + g.cell * static_cast<double>(ix),
                                          g.origin[0] + g.cell * static_cast<double>(ix + 1));
      for (int64_t iy = c[1] - k; iy <= c[1] + k; ++iy) {
        if (iy < 0 || iy >= ny) continue;
        const double dy = interval_distance(q[1], g.origin[1] + g.cell * static_cast<double>(iy),
                                            g.origin[1] + g.cell * static_cast<double>(iy + 1));
        const double column = dx * dx + dy * dy;
        if (column > best) continue;
        const bool whole_run = ix == c[0] - k || ix == c[0] + k || iy == c[1] - k || iy == c[1] + k;
        // On the ring's side faces the z cells c-k .. c+k form one contiguous run; inside, only
        // the two end cells belong to ring k.
        for (int end = 0; end < (whole_run ? 1 : 2); ++end) {
          int64_t z0 = whole_run ? c[2] - k : (end == 0 ? c[2] - k : c[2] + k);
          int64_t z1 = whole_run ? c[2] + k : z0;
          if (z0 < 0) z0 = 0;
          if (z1 > nz - 1) z1 = nz - 1;
          if (z0 > z1) continue;
          const double dz = interval_distance(q[2], g.origin[2] + g.cell * static_cast<double>(z0),
                                              g.origin[2] + g.cell * static_cast<double>(z1 + 1));
          if (column + dz * dz > best) continue;
          const int64_t first = (ix * ny + iy) * nz;
          for (int32_t j = cell_start[first + z0]; j < cell_start[first + z1 + 1]; ++j) {
            const double ex = static_cast<double>(sorted_points[3 * static_cast<int64_t>(j)]) - q[0];
            const double ey = static_cast<double>(sorted_points[3 * static_cast<int64_t>(j) + 1]) - q[1];
            const double ez = static_cast<double>(sorted_points[3 * static_cast<int64_t>(j) + 2]) - q[2];
            const double d = ex * ex + ey * ey + ez * ez;
            const int64_t index = sorted_index[j];
            if (d < best || (d == best && index < best_i)) {
              best = d;
              best_i = index;
            }
          }
        }
      }
    }
  }
  *best_index = best_i;
  return best;
}

}  // namespace metrics
}  // namespace meshrec
