// Trilinear sampling of a dense signed-distance grid at 3D points, and its gradient with respect
// to the points. Shared by the CPU and CUDA kernels; no torch.
//
// Convention (PROX, SA-HMR): sdf[ix][iy][iz] (row-major, shape X x Y x Z) is the signed distance
// at grid_min + (ix, iy, iz) * (grid_max - grid_min) / (dims - 1): the first and last samples sit
// on grid_min and grid_max (F.grid_sample with align_corners=True after the (z, y, x) swap).
// Points outside the box are clamped onto it (padding_mode="border"); along a clamped axis the
// gradient is zero, as in grid_sample. At a sample plane the gradient is the one-sided one of
// the cell above it (of the last cell on the upper face).
#pragma once

#include <cstdint>

#include "../common/hostdevice.h"

namespace meshrec {
namespace metrics {

struct SdfGrid {
  double origin[3];       // grid_min
  double inverse_step[3]; // (dims - 1) / (grid_max - grid_min)
  int64_t dims[3];        // X, Y, Z, each >= 2
};

// Value at `point`; writes d value / d point into `gradient` when it is not null.
template <typename T>
MESHREC_HOST_DEVICE inline T sample_sdf_point(const T* sdf, const SdfGrid& grid, const T* point, T* gradient) {
  int64_t base[3];
  double fraction[3], chain[3];
  bool finite = true;
  double nan_value = 0.0;
  for (int a = 0; a < 3; ++a) {
    double u = (static_cast<double>(point[a]) - grid.origin[a]) * grid.inverse_step[a];
    const double last = static_cast<double>(grid.dims[a] - 1);
    chain[a] = grid.inverse_step[a];
    if (!(u == u)) {  // NaN coordinate: the value and gradient are NaN
      finite = false;
      nan_value = u;
      u = 0.0;
    } else if (u < 0.0) {
      u = 0.0;
      chain[a] = 0.0;
    } else if (u > last) {
      u = last;
      chain[a] = 0.0;
    }
    int64_t cell = static_cast<int64_t>(floor(u));
    if (cell > grid.dims[a] - 2) cell = grid.dims[a] - 2;
    base[a] = cell;
    fraction[a] = u - static_cast<double>(cell);
  }
  if (!finite) {
    const T nan = static_cast<T>(nan_value);
    if (gradient) gradient[0] = gradient[1] = gradient[2] = nan;
    return nan;
  }
  const int64_t stride_x = grid.dims[1] * grid.dims[2], stride_y = grid.dims[2];
  const T* c = sdf + base[0] * stride_x + base[1] * stride_y + base[2];
  const double c000 = c[0], c001 = c[1], c010 = c[stride_y], c011 = c[stride_y + 1];
  const double c100 = c[stride_x], c101 = c[stride_x + 1], c110 = c[stride_x + stride_y],
               c111 = c[stride_x + stride_y + 1];
  const double fx = fraction[0], fy = fraction[1], fz = fraction[2];
  // Interpolate along z, then y, then x.
  const double c00 = c000 + fz * (c001 - c000), c01 = c010 + fz * (c011 - c010);
  const double c10 = c100 + fz * (c101 - c100), c11 = c110 + fz * (c111 - c110);
  const double c0 = c00 + fy * (c01 - c00), c1 = c10 + fy * (c11 - c10);
  const double value = c0 + fx * (c1 - c0);
  if (gradient) {
    const double d_x = c1 - c0;
    const double d_y = (1.0 - fx) * (c01 - c00) + fx * (c11 - c10);
    const double d_z = (1.0 - fx) * ((1.0 - fy) * (c001 - c000) + fy * (c011 - c010)) +
                       fx * ((1.0 - fy) * (c101 - c100) + fy * (c111 - c110));
    gradient[0] = static_cast<T>(d_x * chain[0]);
    gradient[1] = static_cast<T>(d_y * chain[1]);
    gradient[2] = static_cast<T>(d_z * chain[2]);
  }
  return static_cast<T>(value);
}

}  // namespace metrics
}  // namespace meshrec
