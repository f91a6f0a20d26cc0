// CUDA Rodrigues kernels against the host math. Exits 77 (ctest: skipped) without a GPU.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <random>
#include <vector>

#include "rotation/rodrigues.h"
#include "rotation/rodrigues_cuda.h"
#include "test_harness.h"

template <typename T>
void check(int64_t count, double tolerance) {
  std::mt19937_64 rng(11);
  std::normal_distribution<double> normal(0.0, 1.5);
  std::vector<T> w(3 * count), g(9 * count), R(9 * count), gw(3 * count);
  for (auto& x : w) x = T(normal(rng));
  for (auto& x : g) x = T(normal(rng));
  if (count > 1) w[0] = w[1] = w[2] = T(0);
  T *dw, *dg, *dR, *dgw;
  cudaMalloc(&dw, sizeof(T) * w.size());
  cudaMalloc(&dg, sizeof(T) * g.size());
  cudaMalloc(&dR, sizeof(T) * R.size() + 1);
  cudaMalloc(&dgw, sizeof(T) * gw.size() + 1);
  cudaMemcpy(dw, w.data(), sizeof(T) * w.size(), cudaMemcpyHostToDevice);
  cudaMemcpy(dg, g.data(), sizeof(T) * g.size(), cudaMemcpyHostToDevice);
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  EXPECT_TRUE(meshrec::cuda::launch_rodrigues_forward<T>(dw, dR, count, stream) == cudaSuccess);
  EXPECT_TRUE(meshrec::cuda::launch_rodrigues_backward<T>(dg, dw, dgw, count, stream) == cudaSuccess);
  EXPECT_TRUE(cudaStreamSynchronize(stream) == cudaSuccess);
  cudaMemcpy(R.data(), dR, sizeof(T) * R.size(), cudaMemcpyDeviceToHost);
  cudaMemcpy(gw.data(), dgw, sizeof(T) * gw.size(), cudaMemcpyDeviceToHost);
  for (int64_t i = 0; i < count; ++i) {
    T expected[9], expected_grad[3];
    meshrec::rotation::rodrigues_forward(&w[3 * i], expected);
    meshrec::rotation::rodrigues_backward(&g[9 * i], &w[3 * i], expected_grad);
    for (int k = 0; k < 9; ++k) EXPECT_NEAR(R[9 * i + k], expected[k], tolerance);
    for (int k = 0; k < 3; ++k) EXPECT_NEAR(gw[3 * i + k], expected_grad[k], tolerance * 10);
  }
  cudaStreamDestroy(stream);
  cudaFree(dw);
  cudaFree(dg);
  cudaFree(dR);
  cudaFree(dgw);
}

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  for (int64_t count : {int64_t(0), int64_t(1), int64_t(1000), int64_t(300000)}) {
    check<double>(count, 1e-13);
    check<float>(count, 1e-5);
  }
  // Zero rotations launch nothing and succeed.
  EXPECT_TRUE(meshrec::cuda::launch_rodrigues_forward<float>(nullptr, nullptr, 0, nullptr) == cudaSuccess);
  return TEST_RESULT();
}
