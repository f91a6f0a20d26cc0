// Host tests of the Rodrigues math shared by the CPU and CUDA kernels (csrc/rotation/rodrigues.h).
#include <random>

#include "rotation/rodrigues.h"
#include "test_harness.h"

using meshrec::rotation::rodrigues_backward;
using meshrec::rotation::rodrigues_forward;

template <typename T>
void check_orthonormal(const T* R, double tolerance) {
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      double dot = 0;
      for (int k = 0; k < 3; ++k) dot += double(R[3 * k + i]) * R[3 * k + j];
      EXPECT_NEAR(dot, i == j ? 1.0 : 0.0, tolerance);
    }
  const double det = R[0] * (R[4] * R[8] - R[5] * R[7]) - R[1] * (R[3] * R[8] - R[5] * R[6]) +
                     R[2] * (R[3] * R[7] - R[4] * R[6]);
  EXPECT_NEAR(det, 1.0, tolerance);
}

int main() {
  // A quarter turn about z maps x to y.
  {
    const double w[3] = {0, 0, M_PI / 2};
    double R[9];
    rodrigues_forward(w, R);
    EXPECT_NEAR(R[0], 0, 1e-15);
    EXPECT_NEAR(R[3], 1, 1e-15);
    EXPECT_NEAR(R[1], -1, 1e-15);
    EXPECT_NEAR(R[8], 1, 1e-15);
  }
  // Zero maps to the identity, with the skew part of the gradient.
  {
    const double w[3] = {0, 0, 0};
    double R[9], g[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8}, gw[3];
    rodrigues_forward(w, R);
    for (int k = 0; k < 9; ++k) EXPECT_NEAR(R[k], k % 4 == 0 ? 1 : 0, 0);
    rodrigues_backward(g, w, gw);
    EXPECT_NEAR(gw[0], g[7] - g[5], 1e-15);
    EXPECT_NEAR(gw[1], g[2] - g[6], 1e-15);
    EXPECT_NEAR(gw[2], g[3] - g[1], 1e-15);
  }
  std::mt19937_64 rng(7);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform(-1, 1);
  for (int trial = 0; trial < 2000; ++trial) {
    // Angles from 1e-9 to 3.1 (near pi), and exactly at both sides of the series threshold.
    double w[3] = {normal(rng), normal(rng), normal(rng)};
    const double norm = std::sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2]);
    double angle = trial < 100 ? std::pow(10.0, -9 + trial * 0.09) : (trial < 200 ? 3.1 + 0.0004 * (trial - 100)
                                                                                   : 3.0 * std::fabs(uniform(rng)));
    if (trial == 300) angle = std::sqrt(1e-4) * (1 - 1e-12);
    if (trial == 301) angle = std::sqrt(1e-4) * (1 + 1e-12);
    for (double& x : w) x *= angle / norm;
    double R[9];
    rodrigues_forward(w, R);
    check_orthonormal(R, 1e-14);
    float wf[3] = {float(w[0]), float(w[1]), float(w[2])}, Rf[9];
    rodrigues_forward(wf, Rf);
    for (int k = 0; k < 9; ++k) EXPECT_NEAR(Rf[k], R[k], 2e-6);
    // R(w) R(-w) = I
    double wn[3] = {-w[0], -w[1], -w[2]}, Rn[9];
    rodrigues_forward(wn, Rn);
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) {
        double product = 0;
        for (int k = 0; k < 3; ++k) product += R[3 * i + k] * Rn[3 * k + j];
        EXPECT_NEAR(product, i == j ? 1.0 : 0.0, 1e-14);
      }
    // Backward against central differences of <G, R(w)>.
    double g[9], gw[3];
    for (double& x : g) x = normal(rng);
    rodrigues_backward(g, w, gw);
    const double h = 1e-6;
    for (int i = 0; i < 3; ++i) {
      double wp[3] = {w[0], w[1], w[2]}, wm[3] = {w[0], w[1], w[2]}, Rp[9], Rm[9];
      wp[i] += h;
      wm[i] -= h;
      rodrigues_forward(wp, Rp);
      rodrigues_forward(wm, Rm);
      double numeric = 0;
      for (int k = 0; k < 9; ++k) numeric += g[k] * (Rp[k] - Rm[k]) / (2 * h);
      EXPECT_NEAR(gw[i], numeric, 1e-7);
    }
  }
  return TEST_RESULT();
}
