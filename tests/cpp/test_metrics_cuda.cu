// CUDA metrics kernels against the host math (Procrustes, SDF sampling, winding numbers,
// nearest points). Exits 77 (ctest: skipped) without a GPU.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "metrics/grids_host.h"
#include "metrics/metrics_cuda.h"
#include "metrics/procrustes.h"
#include "metrics/sdf.h"
#include "test_harness.h"

using namespace meshrec;

namespace {

std::mt19937_64 rng(5);

template <typename T>
struct DeviceArray {
  T* data = nullptr;
  size_t size = 0;
  explicit DeviceArray(const std::vector<T>& host) : size(host.size()) {
    cudaMalloc(&data, sizeof(T) * (size + 1));
    if (size) cudaMemcpy(data, host.data(), sizeof(T) * size, cudaMemcpyHostToDevice);
  }
  explicit DeviceArray(size_t n) : size(n) { cudaMalloc(&data, sizeof(T) * (n + 1)); }
  DeviceArray(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(data); }
  std::vector<T> to_host() const {
    std::vector<T> host(size);
    if (size) cudaMemcpy(host.data(), data, sizeof(T) * size, cudaMemcpyDeviceToHost);
    return host;
  }
};

template <typename T>
std::vector<T> random_vector(size_t n, double scale = 1.0) {
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<T> out(n);
  for (T& v : out) v = static_cast<T>(normal(rng));
  return out;
}

template <typename T>
void check_procrustes(int64_t batch, int64_t count, double tolerance, cudaStream_t stream) {
  const std::vector<T> x = random_vector<T>(batch * count * 3), y = random_vector<T>(batch * count * 3);
  std::vector<T> w = random_vector<T>(batch * count);
  for (T& v : w) v = std::fabs(v);
  const std::vector<T> ga = random_vector<T>(batch * count * 3), gs = random_vector<T>(batch),
                       gr = random_vector<T>(batch * 9), gt = random_vector<T>(batch * 3),
                       gres = random_vector<T>(batch * count);
  DeviceArray<T> dx(x), dy(y), dw(w), dga(ga), dgs(gs), dgr(gr), dgt(gt), dgres(gres);
  DeviceArray<T> aligned(batch * count * 3), scale(batch), rotation(batch * 9), translation(batch * 3),
      residual(batch * count);
  DeviceArray<T> gx(batch * count * 3), gy(batch * count * 3), gw(batch * count);
  EXPECT_TRUE(cuda::launch_procrustes<T>(dx.data, dy.data, dw.data, batch, count, true, aligned.data, scale.data,
                                         rotation.data, translation.data, residual.data, stream) == cudaSuccess);
  EXPECT_TRUE(cuda::launch_procrustes_backward<T>(dga.data, dgs.data, dgr.data, dgt.data, dgres.data, dx.data, dy.data,
                                                  dw.data, batch, count, true, gx.data, gy.data, gw.data,
                                                  stream) == cudaSuccess);
  EXPECT_TRUE(cudaStreamSynchronize(stream) == cudaSuccess);
  const std::vector<T> h_aligned = aligned.to_host(), h_scale = scale.to_host(), h_gx = gx.to_host(),
                       h_gw = gw.to_host(), h_residual = residual.to_host();
  std::vector<T> expected(count * 3), expected_residual(count), ex(count * 3), ey(count * 3), ew(count);
  for (int64_t b = 0; b < batch; ++b) {
    metrics::ProcrustesSolution sol;
    metrics::solve_procrustes(x.data() + 3 * count * b, y.data() + 3 * count * b, w.data() + count * b, count, true,
                              sol);
    metrics::apply_similarity(sol, x.data() + 3 * count * b, y.data() + 3 * count * b, count, expected.data(),
                              expected_residual.data());
    for (int64_t k = 0; k < count; ++k) EXPECT_NEAR(h_residual[count * b + k], expected_residual[k], tolerance);
    EXPECT_NEAR(h_scale[b], sol.scale, tolerance);
    for (int64_t k = 0; k < 3 * count; ++k) EXPECT_NEAR(h_aligned[3 * count * b + k], expected[k], tolerance);
    metrics::procrustes_backward_sample(x.data() + 3 * count * b, y.data() + 3 * count * b, w.data() + count * b,
                                        count, true, ga.data() + 3 * count * b, gs.data() + b, gr.data() + 9 * b,
                                        gt.data() + 3 * b, gres.data() + count * b, ex.data(), ey.data(), ew.data());
    for (int64_t k = 0; k < 3 * count; ++k) EXPECT_NEAR(h_gx[3 * count * b + k], ex[k], 100 * tolerance);
    for (int64_t k = 0; k < count; ++k) EXPECT_NEAR(h_gw[count * b + k], ew[k], 100 * tolerance);
  }
}

template <typename T>
void check_sample_sdf(int64_t count, double tolerance, cudaStream_t stream) {
  metrics::SdfGrid grid{{-1.0, -0.5, 0.0}, {0, 0, 0}, {9, 7, 8}};
  for (int a = 0; a < 3; ++a) grid.inverse_step[a] = (grid.dims[a] - 1) / 2.0;
  const std::vector<T> sdf = random_vector<T>(9 * 7 * 8), points = random_vector<T>(3 * count, 1.5),
                       grad = random_vector<T>(count);
  DeviceArray<T> dsdf(sdf), dpoints(points), dgrad(grad), values(count), grad_points(3 * count);
  EXPECT_TRUE(cuda::launch_sample_sdf<T>(dpoints.data, count, dsdf.data, grid, values.data, stream) == cudaSuccess);
  EXPECT_TRUE(cuda::launch_sample_sdf_backward<T>(dgrad.data, dpoints.data, count, dsdf.data, grid, grad_points.data,
                                                  stream) == cudaSuccess);
  EXPECT_TRUE(cudaStreamSynchronize(stream) == cudaSuccess);
  const std::vector<T> h_values = values.to_host(), h_grad = grad_points.to_host();
  for (int64_t i = 0; i < count; ++i) {
    T gradient[3];
    EXPECT_NEAR(h_values[i], metrics::sample_sdf_point(sdf.data(), grid, points.data() + 3 * i, gradient), tolerance);
    for (int a = 0; a < 3; ++a) EXPECT_NEAR(h_grad[3 * i + a], grad[i] * gradient[a], tolerance * 10);
  }
}

// A closed octahedron per body, scaled and shifted per body.
template <typename T>
void check_winding(int64_t bodies, int64_t count, cudaStream_t stream) {
  const double corners[6][3] = {{1, 0, 0}, {-1, 0, 0}, {0, 1, 0}, {0, -1, 0}, {0, 0, 1}, {0, 0, -1}};
  const std::vector<int64_t> faces = {0, 2, 4, 2, 1, 4, 1, 3, 4, 3, 0, 4, 2, 0, 5, 1, 2, 5, 3, 1, 5, 0, 3, 5};
  std::vector<T> vertices(bodies * 18);
  for (int64_t b = 0; b < bodies; ++b)
    for (int v = 0; v < 6; ++v)
      for (int a = 0; a < 3; ++a) vertices[18 * b + 3 * v + a] = static_cast<T>(corners[v][a] * (1.0 + 0.1 * b) + 0.05 * b);
  const std::vector<T> points = random_vector<T>(3 * count, 0.8);
  cuda::WindingWorkspace workspace;
  const size_t bytes = cuda::WindingWorkspace::layout(nullptr, bodies, 6, 8, nullptr);
  DeviceArray<char> scratch(bytes);
  cuda::WindingWorkspace::layout(scratch.data, bodies, 6, 8, &workspace);
  DeviceArray<T> dvertices(vertices), dpoints(points), winding(bodies * count);
  DeviceArray<int64_t> dfaces(faces);
  EXPECT_TRUE(cuda::launch_winding_number<T>(dpoints.data, 1, count, dvertices.data, bodies, 6, dfaces.data, 8, workspace,
                                             winding.data, stream) == cudaSuccess);
  EXPECT_TRUE(cudaStreamSynchronize(stream) == cudaSuccess);
  const std::vector<T> result = winding.to_host();
  for (int64_t b = 0; b < bodies; ++b) {
    metrics::WindingGridHost grid;
    metrics::build_winding_grid(vertices.data() + 18 * b, 6, faces.data(), 8, grid);
    for (int64_t i = 0; i < count; ++i)
      EXPECT_NEAR(result[count * b + i],
                  metrics::winding_query(points.data() + 3 * i, grid, vertices.data() + 18 * b, faces.data()), 0.0);
  }
}

template <typename T>
void check_nearest(int64_t scenes, int64_t scene_size, int64_t count, cudaStream_t stream) {
  std::vector<T> points = random_vector<T>(3 * scenes * scene_size);
  for (size_t i = 1; i < points.size(); i += 9) points[i] = 0;  // some points on a plane
  const std::vector<T> queries = random_vector<T>(3 * scenes * count, 2.0);
  cuda::NearestWorkspace<T> workspace;
  const size_t bytes = cuda::NearestWorkspace<T>::layout(nullptr, scenes, scene_size, nullptr);
  DeviceArray<char> scratch(bytes);
  cuda::NearestWorkspace<T>::layout(scratch.data, scenes, scene_size, &workspace);
  DeviceArray<T> dpoints(points), dqueries(queries), distance(scenes * count);
  DeviceArray<int64_t> index(scenes * count);
  EXPECT_TRUE(cuda::launch_nearest_points<T>(dqueries.data, scenes, count, dpoints.data, scenes, scene_size, workspace,
                                             distance.data, index.data, stream) == cudaSuccess);
  EXPECT_TRUE(cudaStreamSynchronize(stream) == cudaSuccess);
  const std::vector<T> h_distance = distance.to_host();
  const std::vector<int64_t> h_index = index.to_host();
  for (int64_t s = 0; s < scenes; ++s) {
    metrics::PointGridHost<T> grid;
    metrics::build_point_grid(points.data() + 3 * scene_size * s, scene_size, grid);
    for (int64_t i = 0; i < count; ++i) {
      int64_t expected_index;
      const double expected = std::sqrt(metrics::nearest_query(queries.data() + 3 * (count * s + i), grid, &expected_index));
      if (std::isinf(expected))
        EXPECT_TRUE(std::isinf(static_cast<double>(h_distance[count * s + i])));
      else
        EXPECT_NEAR(h_distance[count * s + i], expected, 1e-6 * (1.0 + expected));
      EXPECT_TRUE(h_index[count * s + i] == expected_index);
    }
  }
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  for (int64_t batch : {int64_t(0), int64_t(1), int64_t(1000)}) {
    check_procrustes<double>(batch, 14, 1e-12, stream);
    check_procrustes<float>(batch, 14, 1e-5, stream);
  }
  check_procrustes<double>(3, 6890, 1e-10, stream);
  check_sample_sdf<double>(10000, 1e-12, stream);
  check_sample_sdf<float>(10000, 1e-5, stream);
  check_winding<double>(3, 20000, stream);
  check_winding<float>(2, 5000, stream);
  check_nearest<double>(2, 30000, 2000, stream);
  check_nearest<float>(1, 1, 100, stream);
  check_nearest<double>(1, 0, 10, stream);
  cudaStreamDestroy(stream);
  return TEST_RESULT();
}
