// Rodrigues' formula (axis-angle -> rotation matrix) and its vector-Jacobian product.
//
// With w the axis-angle vector, s = |w|^2, t = |w| and K = skew(w) (not normalised):
//   R = cos(t) I + A(s) K + B(s) w w^T,  A = sin(t)/t,  B = (1 - cos t)/t^2 = 2 sin^2(t/2)/t^2.
// Working with the unnormalised w keeps the formula smooth at w = 0 (R = I there, gradient
// = skew part of the upstream gradient), where the textbook form divides by zero.
// Rotation matrices are row-major 3x3, acting on column vectors (x' = R x), as smplx and cv2.
#pragma once

#include "../common/hostdevice.h"

namespace meshrec {
namespace rotation {

// Coefficients of R and their derivatives with respect to s = |w|^2.
template <typename T>
struct RodriguesCoefficients {
  T cos_t, a, b;     // cos(t), sin(t)/t, (1-cos t)/t^2
  T da, db;          // dA/ds, dB/ds   (dcos(t)/ds = -A/2)
};

template <typename T>
MESHREC_HOST_DEVICE inline RodriguesCoefficients<T> rodrigues_coefficients(T s) {
  RodriguesCoefficients<T> c;
  if (s < SmallAngle<T>::squared_threshold) {
    // Taylor series in s; the first omitted terms are below the type's precision here.
    const T s2 = s * s, s3 = s2 * s;
    c.a = T(1) - s / T(6) + s2 / T(120) - s3 / T(5040);
    c.b = T(0.5) - s / T(24) + s2 / T(720) - s3 / T(40320);
    c.cos_t = T(1) - s * c.b;
    c.da = T(-1) / T(6) + s / T(60) - s2 / T(1680) + s3 / T(90720);
    c.db = T(-1) / T(24) + s / T(360) - s2 / T(13440) + s3 / T(907200);
  } else {
    const T t = math_sqrt(s);
    const T sin_half = math_sin(t / T(2));
    c.a = math_sin(t) / t;
    c.b = T(2) * sin_half * sin_half / s;
    c.cos_t = math_cos(t);
    c.da = (c.cos_t - c.a) / (T(2) * s);
    c.db = (c.a / T(2) - c.b) / s;
  }
  return c;
}

// w: 3 values; R: 9 values, row-major.
template <typename T>
MESHREC_HOST_DEVICE inline void rodrigues_forward(const T* w, T* R) {
  const T x = w[0], y = w[1], z = w[2];
  const RodriguesCoefficients<T> c = rodrigues_coefficients(x * x + y * y + z * z);
  R[0] = c.cos_t + c.b * x * x;
  R[1] = -c.a * z + c.b * x * y;
  R[2] = c.a * y + c.b * x * z;
  R[3] = c.a * z + c.b * y * x;
  R[4] = c.cos_t + c.b * y * y;
  R[5] = -c.a * x + c.b * y * z;
  R[6] = -c.a * y + c.b * z * x;
  R[7] = c.a * x + c.b * z * y;
  R[8] = c.cos_t + c.b * z * z;
}

// grad_w = (dR/dw)^T grad_R for one rotation. grad_R: 9 values row-major.
template <typename T>
MESHREC_HOST_DEVICE inline void rodrigues_backward(const T* grad_R, const T* w, T* grad_w) {
  const T x = w[0], y = w[1], z = w[2];
  const RodriguesCoefficients<T> c = rodrigues_coefficients(x * x + y * y + z * z);
  const T* G = grad_R;
  const T trace_g = G[0] + G[4] + G[8];
  // <G, K> with K = skew(w)
  const T skew_x = G[7] - G[5], skew_y = G[2] - G[6], skew_z = G[3] - G[1];
  const T g_dot_k = x * skew_x + y * skew_y + z * skew_z;
  // G w and G^T w
  const T gw0 = G[0] * x + G[1] * y + G[2] * z;
  const T gw1 = G[3] * x + G[4] * y + G[5] * z;
  const T gw2 = G[6] * x + G[7] * y + G[8] * z;
  const T gtw0 = G[0] * x + G[3] * y + G[6] * z;
  const T gtw1 = G[1] * x + G[4] * y + G[7] * z;
  const T gtw2 = G[2] * x + G[5] * y + G[8] * z;
  const T wgw = x * gw0 + y * gw1 + z * gw2;
  // d/ds of (cos t * tr G + A <G,K> + B w^T G w), times ds/dw_i = 2 w_i
  const T radial = T(2) * (-c.a / T(2) * trace_g + c.da * g_dot_k + c.db * wgw);
  grad_w[0] = radial * x + c.a * skew_x + c.b * (gw0 + gtw0);
  grad_w[1] = radial * y + c.a * skew_y + c.b * (gw1 + gtw1);
  grad_w[2] = radial * z + c.a * skew_z + c.b * (gw2 + gtw2);
}

}  // namespace rotation
}  // namespace meshrec
