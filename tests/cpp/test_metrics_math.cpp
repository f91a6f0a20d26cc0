// Host tests of the metrics kernel math: Procrustes (exact similarities, reflections, degenerate
// sets, backward against finite differences), trilinear SDF sampling, exact winding numbers, and
// grid nearest points against brute force.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "metrics/grids_host.h"
#include "metrics/procrustes.h"
#include "metrics/sdf.h"
#include "test_harness.h"

using namespace meshrec::metrics;

namespace {

std::mt19937_64 rng(7);

double normal() { return std::normal_distribution<double>(0.0, 1.0)(rng); }

// A random rotation from a random unit quaternion.
void random_rotation(double* R) {
  double q[4];
  double n = 0.0;
  for (double& v : q) {
    v = normal();
    n += v * v;
  }
  for (double& v : q) v /= std::sqrt(n);
  quaternion_to_rotation(q, R);
}

void check_recovers_similarity() {
  for (int trial = 0; trial < 200; ++trial) {
    const int count = 3 + trial % 20;
    double R[9];
    random_rotation(R);
    const double s = 0.1 + 3.0 * std::fabs(normal()), t[3] = {normal(), normal(), normal()};
    std::vector<double> x(3 * count), y(3 * count), aligned(3 * count), residual(count);
    for (double& v : x) v = normal();
    for (int i = 0; i < count; ++i)
      for (int a = 0; a < 3; ++a)
        y[3 * i + a] = s * (R[3 * a] * x[3 * i] + R[3 * a + 1] * x[3 * i + 1] + R[3 * a + 2] * x[3 * i + 2]) + t[a];
    ProcrustesSolution sol;
    solve_procrustes(x.data(), y.data(), static_cast<const double*>(nullptr), count, true, sol);
    apply_similarity(sol, x.data(), y.data(), count, aligned.data(), residual.data());
    EXPECT_NEAR(sol.scale, s, 1e-12 * s);
    for (int k = 0; k < 9; ++k) EXPECT_NEAR(sol.rotation[k], R[k], 1e-11);
    for (int k = 0; k < 3 * count; ++k) EXPECT_NEAR(aligned[k], y[k], 1e-11);
    for (int k = 0; k < count; ++k) EXPECT_NEAR(residual[k], 0.0, 1e-11);
  }
}

void check_reflection_gives_rotation() {
  // Target = mirrored source: the best proper rotation has det +1 and a worse fit than the mirror.
  const int count = 10;
  std::vector<double> x(3 * count), y(3 * count);
  for (int i = 0; i < count; ++i) {
    for (int a = 0; a < 3; ++a) x[3 * i + a] = normal() * (a + 1);
    y[3 * i] = x[3 * i];
    y[3 * i + 1] = x[3 * i + 1];
    y[3 * i + 2] = -x[3 * i + 2];
  }
  ProcrustesSolution sol;
  solve_procrustes(x.data(), y.data(), static_cast<const double*>(nullptr), count, true, sol);
  EXPECT_NEAR(determinant3(sol.rotation), 1.0, 1e-12);
  EXPECT_TRUE(sol.scale > 0.0 && sol.scale < 1.0);
}

void check_degenerate_sets() {
  const int count = 6;
  std::vector<double> x(3 * count), y(3 * count), w(count, 0.0), aligned(3 * count), residual(count);
  for (double& v : y) v = normal();
  for (int i = 0; i < count; ++i)
    for (int a = 0; a < 3; ++a) x[3 * i + a] = 1.5 + a;  // all source points equal
  ProcrustesSolution sol;
  solve_procrustes(x.data(), y.data(), static_cast<const double*>(nullptr), count, true, sol);
  apply_similarity(sol, x.data(), y.data(), count, aligned.data(), residual.data());
  EXPECT_TRUE(sol.scale == 0.0);
  for (int i = 0; i < count; ++i)
    for (int a = 0; a < 3; ++a) EXPECT_NEAR(aligned[3 * i + a], sol.target_mean[a], 1e-14);
  // All weights zero: identity.
  for (double& v : x) v = normal();
  solve_procrustes(x.data(), y.data(), w.data(), count, true, sol);
  apply_similarity(sol, x.data(), y.data(), count, aligned.data(), residual.data());
  EXPECT_TRUE(sol.empty && sol.scale == 1.0);
  for (int k = 0; k < 3 * count; ++k) EXPECT_NEAR(aligned[k], x[k], 0.0);
  // Collinear source and target along different lines: the line maps onto the line.
  for (int i = 0; i < count; ++i) {
    const double u = normal();
    for (int a = 0; a < 3; ++a) {
      x[3 * i + a] = u * (a + 1.0);
      y[3 * i + a] = 2.0 * u * (a == 0 ? 0.0 : (a == 1 ? 3.0 : -1.0)) + 1.0;
    }
  }
  solve_procrustes(x.data(), y.data(), static_cast<const double*>(nullptr), count, true, sol);
  apply_similarity(sol, x.data(), y.data(), count, aligned.data(), residual.data());
  EXPECT_NEAR(determinant3(sol.rotation), 1.0, 1e-12);
  for (int k = 0; k < 3 * count; ++k) EXPECT_NEAR(aligned[k], y[k], 1e-10);
}

// Loss = <G_a, aligned> + g_s s + <G_R, R> + <g_t, t> + <g_r, residual>, differentiated numerically.
void check_backward_against_finite_differences() {
  const int count = 7;
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<double> x(3 * count), y(3 * count), w(count), ga(3 * count), gR(9), gt(3), gres(count);
    for (double& v : x) v = normal();
    for (double& v : y) v = normal();
    for (double& v : w) v = 0.2 + std::fabs(normal());
    for (double& v : ga) v = normal();
    for (double& v : gR) v = normal();
    for (double& v : gt) v = normal();
    for (double& v : gres) v = normal();
    const double gs = normal();
    const bool scaling = trial % 2 == 0;
    auto loss = [&](const std::vector<double>& xs, const std::vector<double>& ys, const std::vector<double>& ws) {
      ProcrustesSolution sol;
      std::vector<double> aligned(3 * count), residual(count);
      solve_procrustes(xs.data(), ys.data(), ws.data(), count, scaling, sol);
      apply_similarity(sol, xs.data(), ys.data(), count, aligned.data(), residual.data());
      double value = gs * sol.scale;
      for (int k = 0; k < 3 * count; ++k) value += ga[k] * aligned[k];
      for (int k = 0; k < 9; ++k) value += gR[k] * sol.rotation[k];
      for (int a = 0; a < 3; ++a) value += gt[a] * sol.translation[a];
      for (int k = 0; k < count; ++k) value += gres[k] * residual[k];
      return value;
    };
    std::vector<double> gx(3 * count), gy(3 * count), gw(count);
    procrustes_backward_sample(x.data(), y.data(), w.data(), count, scaling, ga.data(), &gs, gR.data(), gt.data(),
                               gres.data(), gx.data(), gy.data(), gw.data());
    const double h = 1e-6;
    for (int k = 0; k < 3 * count; ++k) {
      std::vector<double> plus = x, minus = x;
      plus[k] += h;
      minus[k] -= h;
      EXPECT_NEAR(gx[k], (loss(plus, y, w) - loss(minus, y, w)) / (2 * h), 1e-6);
      plus = y;
      minus = y;
      plus[k] += h;
      minus[k] -= h;
      EXPECT_NEAR(gy[k], (loss(x, plus, w) - loss(x, minus, w)) / (2 * h), 1e-6);
    }
    for (int k = 0; k < count; ++k) {
      std::vector<double> plus = w, minus = w;
      plus[k] += h;
      minus[k] -= h;
      EXPECT_NEAR(gw[k], (loss(x, y, plus) - loss(x, y, minus)) / (2 * h), 1e-6);
    }
  }
}

void check_sdf_reproduces_linear_fields() {
  // A linear field is reproduced exactly by trilinear interpolation, with its exact gradient.
  SdfGrid grid{{-1.0, 0.0, 2.0}, {0, 0, 0}, {4, 5, 6}};
  const double upper[3] = {1.0, 2.0, 3.0};
  for (int a = 0; a < 3; ++a) grid.inverse_step[a] = (grid.dims[a] - 1) / (upper[a] - grid.origin[a]);
  std::vector<double> sdf(4 * 5 * 6);
  auto field = [](const double* p) { return 0.5 * p[0] - 2.0 * p[1] + 3.0 * p[2] + 0.25; };
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 5; ++j)
      for (int k = 0; k < 6; ++k) {
        const double p[3] = {grid.origin[0] + i / grid.inverse_step[0], grid.origin[1] + j / grid.inverse_step[1],
                             grid.origin[2] + k / grid.inverse_step[2]};
        sdf[(i * 5 + j) * 6 + k] = field(p);
      }
  for (int trial = 0; trial < 500; ++trial) {
    double p[3], gradient[3];
    for (int a = 0; a < 3; ++a)
      p[a] = grid.origin[a] + std::uniform_real_distribution<double>(0, 1)(rng) * (upper[a] - grid.origin[a]);
    EXPECT_NEAR(sample_sdf_point(sdf.data(), grid, p, gradient), field(p), 1e-12);
    EXPECT_NEAR(gradient[0], 0.5, 1e-12);
    EXPECT_NEAR(gradient[1], -2.0, 1e-12);
    EXPECT_NEAR(gradient[2], 3.0, 1e-12);
  }
  // Outside the box: clamped value, zero gradient along the clamped axis.
  double p[3] = {-5.0, 1.0, 2.5}, gradient[3];
  const double clamped[3] = {-1.0, 1.0, 2.5};
  EXPECT_NEAR(sample_sdf_point(sdf.data(), grid, p, gradient), field(clamped), 1e-12);
  EXPECT_NEAR(gradient[0], 0.0, 0.0);
  EXPECT_NEAR(gradient[1], -2.0, 1e-12);
}

// Closed, outward-oriented axis-aligned box [lo, hi], 8 vertices starting at index `first`.
void add_box(std::vector<double>& vertices, std::vector<int64_t>& faces, const double* lo, const double* hi) {
  const int64_t first = static_cast<int64_t>(vertices.size() / 3);
  for (int corner = 0; corner < 8; ++corner) {
    vertices.push_back(corner & 1 ? hi[0] : lo[0]);
    vertices.push_back(corner & 2 ? hi[1] : lo[1]);
    vertices.push_back(corner & 4 ? hi[2] : lo[2]);
  }
  const int quads[6][4] = {{0, 2, 3, 1}, {4, 5, 7, 6}, {0, 1, 5, 4}, {2, 6, 7, 3}, {0, 4, 6, 2}, {1, 3, 7, 5}};
  for (const auto& q : quads) {
    const int64_t tri[6] = {q[0], q[1], q[2], q[0], q[2], q[3]};
    for (int64_t v : tri) faces.push_back(first + v);
  }
}

void check_winding_numbers() {
  std::vector<double> vertices;
  std::vector<int64_t> faces;
  const double lo1[3] = {0, 0, 0}, hi1[3] = {2, 2, 2}, lo2[3] = {1, 1, 1}, hi2[3] = {3, 3, 3};
  add_box(vertices, faces, lo1, hi1);
  add_box(vertices, faces, lo2, hi2);
  WindingGridHost grid;
  build_winding_grid(vertices.data(), static_cast<int64_t>(vertices.size() / 3), faces.data(),
                     static_cast<int64_t>(faces.size() / 3), grid);
  auto winding = [&](double x, double y, double z) {
    const double p[3] = {x, y, z};
    return winding_query(p, grid, vertices.data(), faces.data());
  };
  EXPECT_TRUE(winding(0.5, 0.5, 0.5) == 1);
  EXPECT_TRUE(winding(1.5, 1.5, 1.5) == 2);  // inside both boxes
  EXPECT_TRUE(winding(2.5, 2.5, 2.5) == 1);
  EXPECT_TRUE(winding(2.5, 0.5, 0.5) == 0);
  EXPECT_TRUE(winding(-1.0, 0.5, 0.5) == 0);
  // Rays through shared edges and vertices of the triangulation (x = y is a diagonal of the
  // quads, x = 1 / y = 1 pass through box corners) are counted once.
  EXPECT_TRUE(winding(1.0, 1.0, 0.5) == 1);
  EXPECT_TRUE(winding(0.5, 0.5, 1.5) == 1);
  EXPECT_TRUE(winding(1.0, 1.0, 1.5) == 2);
  EXPECT_TRUE(winding(1.5, 1.5, 0.5) == 1);
  EXPECT_TRUE(winding(1.5, 1.5, 2.5) == 1);
  EXPECT_TRUE(winding(2.0 - 1e-7, 1.5, 1.5) == 2);
  EXPECT_TRUE(winding(2.0 + 1e-7, 1.5, 1.5) == 1);
  // Random points against the analytic answer (away from the faces).
  for (int trial = 0; trial < 20000; ++trial) {
    double p[3];
    for (double& v : p) v = std::uniform_real_distribution<double>(-0.5, 3.5)(rng);
    int expected = 0;
    bool near_face = false;
    for (const double* box : {lo1, lo2}) {
      const double* top = box == lo1 ? hi1 : hi2;
      bool inside = true;
      for (int a = 0; a < 3; ++a) {
        inside = inside && p[a] > box[a] && p[a] < top[a];
        near_face = near_face || std::fabs(p[a] - box[a]) < 1e-7 || std::fabs(p[a] - top[a]) < 1e-7;
      }
      expected += inside;
    }
    if (!near_face) EXPECT_TRUE(winding(p[0], p[1], p[2]) == expected);
  }
}

void check_nearest_points() {
  for (int64_t count : {int64_t(1), int64_t(9), int64_t(3000)}) {
    std::vector<double> points(3 * count);
    for (int64_t i = 0; i < count; ++i) {
      points[3 * i] = normal();
      points[3 * i + 1] = i % 3 == 0 ? 0.0 : normal();  // part of the cloud on a plane
      points[3 * i + 2] = std::round(normal() * 4) / 4;  // duplicates and ties
    }
    PointGridHost<double> grid;
    build_point_grid(points.data(), count, grid);
    for (int trial = 0; trial < 300; ++trial) {
      double q[3];
      for (double& v : q) v = normal() * (trial % 3 == 0 ? 10.0 : 1.5);
      if (trial % 7 == 0)
        for (int a = 0; a < 3; ++a) q[a] = points[a];
      double best = HUGE_VAL;
      int64_t best_index = -1;
      for (int64_t i = 0; i < count; ++i) {
        double d = 0.0;
        for (int a = 0; a < 3; ++a) d += (points[3 * i + a] - q[a]) * (points[3 * i + a] - q[a]);
        if (d < best) {
          best = d;
          best_index = i;
        }
      }
      int64_t index;
      const double found = nearest_query(q, grid, &index);
      EXPECT_NEAR(found, best, 1e-12);
      EXPECT_TRUE(index == best_index);
    }
  }
  PointGridHost<double> empty;
  build_point_grid(static_cast<const double*>(nullptr), 0, empty);
  const double q[3] = {0, 0, 0};
  int64_t index;
  EXPECT_TRUE(std::isinf(nearest_query(q, empty, &index)) && index == -1);
}

}  // namespace

int main() {
  check_recovers_similarity();
  check_reflection_gives_rotation();
  check_degenerate_sets();
  check_backward_against_finite_differences();
  check_sdf_reproduces_linear_fields();
  check_winding_numbers();
  check_nearest_points();
  return TEST_RESULT();
}
