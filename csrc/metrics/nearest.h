// Nearest point of a point cloud (a scene) for query points (body vertices), with a uniform grid.
// Shared by the CPU and CUDA kernels; no torch.
//
// The scene's bounding box is cut into cubic cells (about four points per cell for a volume
// filled uniformly; scenes are surfaces, so occupied cells hold more), grouped in blocks of
// 4 x 4 x 4 cells that record how many points they hold. Points are sorted by cell (counting
// sort: exactly one slot per point, so the GPU build needs no host synchronisation). A query
// visits blocks in rings of growing Chebyshev distance around its (clamped) block, skipping
// empty blocks and blocks farther than the best distance so far, and stops once a lower bound
// on the distance to every unvisited block exceeds the best distance: the result is exact, ties
// going to the smaller point index, and empty space costs one counter read per block. Memory is
// linear in the number of points, so a million-point scene needs a few tens of MB.
#pragma once

#include <cstdint>

#include "../common/hostdevice.h"

namespace meshrec {
namespace metrics {

constexpr int64_t kBlockCells = 4;  // cells per block edge

struct PointGridParams {
  double origin[3];
  double lower[3], upper[3];  // bounding box of the points themselves
  double cell;                // edge length
  double inverse_cell;
  int64_t dims[3];            // cells per axis
  int64_t blocks[3];          // blocks per axis
  int64_t valid;              // 0 for an empty scene
};

// Cells (and, at most as many, blocks) available per scene of `points` points.
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
    g.lower[a] = g.valid ? lower[a] : 0.0;
    g.upper[a] = g.valid ? lower[a] + extent[a] : 0.0;
    largest = largest > extent[a] ? largest : extent[a];
  }
  g.dims[0] = g.dims[1] = g.dims[2] = 1;
  g.blocks[0] = g.blocks[1] = g.blocks[2] = 1;
  g.cell = 1.0;
  g.inverse_cell = 1.0;
  if (!(largest > 0.0)) return;
  // Start from cubes filling the box with `capacity` cells, flat axes counted as one cell thick.
  double volume = 1.0;
  for (int a = 0; a < 3; ++a) {
    const double thickness = largest / static_cast<double>(capacity);
    volume *= extent[a] > thickness ? extent[a] : thickness;
  }
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
  for (int a = 0; a < 3; ++a) g.blocks[a] = (g.dims[a] + kBlockCells - 1) / kBlockCells;
  g.cell = cell;
  g.inverse_cell = 1.0 / cell;
}

// Cell index of a point along axis a (clamped into the grid; 0 for NaN). Truncation is floor
// for the positive values that reach it, and avoids a libm call on hosts without SSE4.1.
MESHREC_HOST_DEVICE inline int64_t point_grid_axis(const PointGridParams& g, int a, double value) {
  const double u = (value - g.origin[a]) * g.inverse_cell;
  if (!(u > 0.0)) return 0;
  const double last = static_cast<double>(g.dims[a] - 1);
  return u < last ? static_cast<int64_t>(u) : g.dims[a] - 1;
}

MESHREC_HOST_DEVICE inline int64_t point_grid_cell(const PointGridParams& g, const double* p) {
  return (point_grid_axis(g, 0, p[0]) * g.dims[1] + point_grid_axis(g, 1, p[1])) * g.dims[2] +
         point_grid_axis(g, 2, p[2]);
}

// Distance from value to the interval [lo, hi].
MESHREC_HOST_DEVICE inline double interval_distance(double value, double lo, double hi) {
  return value < lo ? lo - value : (value > hi ? value - hi : 0.0);
}

// Number of points of block b and the box they span (x0, y0, z0, x1, y1, z1; inf / -inf when it
// holds none), read from the sorted points: the cells of one block column are contiguous there.
template <typename T>
MESHREC_HOST_DEVICE inline int32_t summarise_block(const PointGridParams& g, int64_t b, const int32_t* cell_start,
                                                   const T* sorted_points, T* bounds) {
  const int64_t bz = b % g.blocks[2], by = (b / g.blocks[2]) % g.blocks[1], bx = b / (g.blocks[2] * g.blocks[1]);
  for (int a = 0; a < 3; ++a) {
    bounds[a] = static_cast<T>(HUGE_VAL);
    bounds[3 + a] = static_cast<T>(-HUGE_VAL);
  }
  int32_t total = 0;
  const int64_t z0 = bz * kBlockCells, z1 = z0 + kBlockCells < g.dims[2] ? z0 + kBlockCells : g.dims[2];
  for (int64_t ix = bx * kBlockCells; ix < (bx + 1) * kBlockCells && ix < g.dims[0]; ++ix)
    for (int64_t iy = by * kBlockCells; iy < (by + 1) * kBlockCells && iy < g.dims[1]; ++iy) {
      const int64_t first = (ix * g.dims[1] + iy) * g.dims[2];
      for (int32_t j = cell_start[first + z0]; j < cell_start[first + z1]; ++j) {
        for (int a = 0; a < 3; ++a) {
          const T value = sorted_points[3 * static_cast<int64_t>(j) + a];  // NaN compares false: ignored
          if (value < bounds[a]) bounds[a] = value;
          if (value > bounds[3 + a]) bounds[3 + a] = value;
        }
        ++total;
      }
    }
  return total;
}

// Offsets 0, -1, +1, -2, +2, ...: visiting ring blocks near the axes through q first finds a
// close point early, which prunes the rest of the ring.
MESHREC_HOST_DEVICE inline int64_t centred_offset(int64_t t) { return t % 2 ? -(t + 1) / 2 : t / 2; }

// Scans the points of one block that may be closer than `best`. `bounds` is the bounding box of
// the block's points (x0, y0, z0, x1, y1, z1); cell boxes are clipped to it.
template <typename T>
MESHREC_HOST_DEVICE inline void nearest_in_block(const double* q, const PointGridParams& g, int64_t bx, int64_t by,
                                                 int64_t bz, const T* bounds, const int32_t* cell_start,
                                                 const T* sorted_points, const int32_t* sorted_index, double& best,
                                                 int64_t& best_index) {
  double lo[3], hi[3];
  for (int a = 0; a < 3; ++a) {
    lo[a] = static_cast<double>(bounds[a]);
    hi[a] = static_cast<double>(bounds[3 + a]);
  }
  const double bdx = interval_distance(q[0], lo[0], hi[0]), bdy = interval_distance(q[1], lo[1], hi[1]);
  const double dz = interval_distance(q[2], lo[2], hi[2]);
  if (bdx * bdx + bdy * bdy + dz * dz > best) return;
  const int64_t x0 = bx * kBlockCells, y0 = by * kBlockCells, z0 = bz * kBlockCells;
  const int64_t x1 = x0 + kBlockCells < g.dims[0] ? x0 + kBlockCells : g.dims[0];
  const int64_t y1 = y0 + kBlockCells < g.dims[1] ? y0 + kBlockCells : g.dims[1];
  const int64_t z1 = z0 + kBlockCells < g.dims[2] ? z0 + kBlockCells : g.dims[2];
  for (int64_t ix = x0; ix < x1; ++ix) {
    const double cx0 = g.origin[0] + g.cell * static_cast<double>(ix);
    const double dx = interval_distance(q[0], cx0 > lo[0] ? cx0 : lo[0], cx0 + g.cell < hi[0] ? cx0 + g.cell : hi[0]);
    if (dx * dx + bdy * bdy + dz * dz > best) continue;
    for (int64_t iy = y0; iy < y1; ++iy) {
      const double cy0 = g.origin[1] + g.cell * static_cast<double>(iy);
      const double dy =
          interval_distance(q[1], cy0 > lo[1] ? cy0 : lo[1], cy0 + g.cell < hi[1] ? cy0 + g.cell : hi[1]);
      if (dx * dx + dy * dy + dz * dz > best) continue;
      // The z cells of one (x, y) column of the block are contiguous, and so are their points.
      const int64_t first = (ix * g.dims[1] + iy) * g.dims[2];
      for (int32_t j = cell_start[first + z0]; j < cell_start[first + z1]; ++j) {
        const double ex = static_cast<double>(sorted_points[3 * static_cast<int64_t>(j)]) - q[0];
        const double ey = static_cast<double>(sorted_points[3 * static_cast<int64_t>(j) + 1]) - q[1];
        const double ez = static_cast<double>(sorted_points[3 * static_cast<int64_t>(j) + 2]) - q[2];
        const double d = ex * ex + ey * ey + ez * ez;
        const int64_t index = sorted_index[j];
        if (d < best || (d == best && index < best_index)) {
          best = d;
          best_index = index;
        }
      }
    }
  }
}

// Squared distance from q to the nearest point and its index (into the unsorted cloud; -1 and
// inf for an empty scene, NaN for a NaN query). Points are sorted by cell: cell c holds
// sorted[cell_start[c] .. cell_start[c + 1]); block_count says how many points each block holds
// and block_bounds (6 per block) the box they span.
template <typename T>
MESHREC_HOST_DEVICE inline double nearest_query(const T* query, const PointGridParams& g, const int32_t* cell_start,
                                                const int32_t* block_count, const T* block_bounds,
                                                const T* sorted_points, const int32_t* sorted_index,
                                                int64_t* best_index) {
  double best = HUGE_VAL;
  int64_t best_i = -1;
  *best_index = -1;
  if (!g.valid) return best;
  const double q[3] = {static_cast<double>(query[0]), static_cast<double>(query[1]), static_cast<double>(query[2])};
  if (!(q[0] == q[0] && q[1] == q[1] && q[2] == q[2])) return q[0] + q[1] + q[2];
  const double block = g.cell * static_cast<double>(kBlockCells);
  int64_t c[3];
  double outside[3];  // distance from q to the points' bounding box along each axis
  int64_t rings = 0;
  for (int a = 0; a < 3; ++a) {
    c[a] = point_grid_axis(g, a, q[a]) / kBlockCells;
    outside[a] = interval_distance(q[a], g.lower[a], g.upper[a]);
    const int64_t reach = c[a] > g.blocks[a] - 1 - c[a] ? c[a] : g.blocks[a] - 1 - c[a];
    if (reach > rings) rings = reach;
  }
  for (int64_t k = 0; k <= rings; ++k) {
    if (k > 0) {
      // Every unvisited block is at least k blocks away along some axis a, on one side: bound
      // the distance to that slab (and to the bounding box along the other axes).
      double bound = HUGE_VAL;
      for (int a = 0; a < 3; ++a) {
        const double others = outside[(a + 1) % 3] * outside[(a + 1) % 3] + outside[(a + 2) % 3] * outside[(a + 2) % 3];
        if (c[a] - k >= 0) {
          double gap = q[a] - (g.origin[a] + block * static_cast<double>(c[a] - k + 1));
          gap = gap > 0.0 ? gap : 0.0;
          bound = bound < gap * gap + others ? bound : gap * gap + others;
        }
        if (c[a] + k <= g.blocks[a] - 1) {
          double gap = g.origin[a] + block * static_cast<double>(c[a] + k) - q[a];
          gap = gap > 0.0 ? gap : 0.0;
          bound = bound < gap * gap + others ? bound : gap * gap + others;
        }
      }
      if (bound * (1.0 - 1e-9) > best) break;
    }
    for (int64_t tx = 0; tx <= 2 * k; ++tx) {
      const int64_t bx = c[0] + centred_offset(tx);
      if (bx < 0 || bx >= g.blocks[0]) continue;
      for (int64_t ty = 0; ty <= 2 * k; ++ty) {
        const int64_t by = c[1] + centred_offset(ty);
        if (by < 0 || by >= g.blocks[1]) continue;
        // On the ring's side faces every bz from c-k to c+k belongs to ring k; inside, only the ends.
        const bool side = tx >= 2 * k - 1 || ty >= 2 * k - 1;
        for (int64_t tz = side ? 0 : 2 * k - 1; tz <= 2 * k; ++tz) {
          const int64_t bz = c[2] + centred_offset(tz);
          if (bz < 0 || bz >= g.blocks[2]) continue;
          const int64_t b = (bx * g.blocks[1] + by) * g.blocks[2] + bz;
          if (block_count[b] == 0) continue;
          nearest_in_block(q, g, bx, by, bz, block_bounds + 6 * b, cell_start, sorted_points, sorted_index, best,
                           best_i);
        }
      }
    }
  }
  *best_index = best_i;
  return best;
}

}  // namespace metrics
}  // namespace meshrec
