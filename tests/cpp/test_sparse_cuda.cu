// CUDA sparse kernels against host computations. Exits 77 (ctest: skipped) without a GPU.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "sparse/coords.h"
#include "sparse/sparse_cuda.h"
#include "test_harness.h"

using meshrec::sparse::kEmptyKey;
namespace mc = meshrec::cuda;

template <typename T>
T* upload(const std::vector<T>& host) {
  T* device = nullptr;
  cudaMalloc(&device, sizeof(T) * host.size() + 16);
  cudaMemcpy(device, host.data(), sizeof(T) * host.size(), cudaMemcpyHostToDevice);
  return device;
}

template <typename T>
std::vector<T> download(const T* device, size_t count) {
  std::vector<T> host(count);
  cudaDeviceSynchronize();
  cudaMemcpy(host.data(), device, sizeof(T) * count, cudaMemcpyDeviceToHost);
  return host;
}

using Coord = std::array<int32_t, 4>;

std::vector<int32_t> random_coords(int64_t count, int seed, bool unique) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> axis(-9, 9), batch(0, 2);
  std::set<Coord> seen;
  std::vector<int32_t> flat;
  while (int64_t(flat.size()) < 4 * count) {
    const Coord c{batch(rng), axis(rng), axis(rng), axis(rng)};
    if (unique && !seen.insert(c).second) continue;
    flat.insert(flat.end(), c.begin(), c.end());
  }
  return flat;
}

void test_tables_and_maps() {
  const int64_t n = 3000, capacity = 8192;
  const std::vector<int32_t> coords = random_coords(n, 1, true);
  int32_t* d_coords = upload(coords);
  int64_t* d_keys = upload(std::vector<int64_t>(n));
  EXPECT_TRUE(mc::launch_pack_keys(d_coords, n, 1, 1, 1, false, d_keys, nullptr) == cudaSuccess);
  const std::vector<int64_t> keys = download(d_keys, n);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t* c = &coords[4 * i];
    EXPECT_TRUE(keys[i] == meshrec::sparse::pack_key(c[0], c[1], c[2], c[3]));
  }
  int64_t* d_table = upload(std::vector<int64_t>(2 * capacity, kEmptyKey));
  int32_t* d_status = upload(std::vector<int32_t>(1, 0));
  EXPECT_TRUE(mc::launch_table_insert(d_keys, n, d_table, capacity, false, d_status, nullptr) == cudaSuccess);
  EXPECT_TRUE(download(d_status, 1)[0] == 0);

  // 3x3x3 submanifold map against a host dictionary.
  std::vector<int32_t> offsets;
  for (int dz = -1; dz <= 1; ++dz)
    for (int dy = -1; dy <= 1; ++dy)
      for (int dx = -1; dx <= 1; ++dx) offsets.insert(offsets.end(), {dx, dy, dz});
  int32_t* d_offsets = upload(offsets);
  int32_t* d_map = upload(std::vector<int32_t>(n * 27));
  EXPECT_TRUE(mc::launch_kernel_map_query(d_coords, n, d_offsets, 27, d_table, capacity, d_map, nullptr) ==
              cudaSuccess);
  const std::vector<int32_t> map = download(d_map, n * 27);
  std::map<Coord, int32_t> rows;
  for (int64_t i = 0; i < n; ++i) rows[{coords[4 * i], coords[4 * i + 1], coords[4 * i + 2], coords[4 * i + 3]}] = int32_t(i);
  for (int64_t r = 0; r < n; ++r) {
    for (int k = 0; k < 27; ++k) {
      const Coord q{coords[4 * r], coords[4 * r + 1] + offsets[3 * k], coords[4 * r + 2] + offsets[3 * k + 1],
                    coords[4 * r + 3] + offsets[3 * k + 2]};
      const auto found = rows.find(q);
      EXPECT_TRUE(map[r * 27 + k] == (found == rows.end() ? -1 : found->second));
    }
  }
  // Inversion: inverse[map[r, k], k] = r.
  int32_t* d_inverse = upload(std::vector<int32_t>(n * 27, -1));
  EXPECT_TRUE(mc::launch_invert_map(d_map, n, 27, d_inverse, nullptr) == cudaSuccess);
  const std::vector<int32_t> inverse = download(d_inverse, n * 27);
  for (int64_t r = 0; r < n; ++r)
    for (int k = 0; k < 27; ++k)
      if (map[r * 27 + k] >= 0) EXPECT_TRUE(inverse[int64_t(map[r * 27 + k]) * 27 + k] == r);

  // Duplicates are flagged; a table too small reports full.
  int32_t* d_status2 = upload(std::vector<int32_t>(1, 0));
  EXPECT_TRUE(mc::launch_table_insert(d_keys, n, d_table, capacity, false, d_status2, nullptr) == cudaSuccess);
  EXPECT_TRUE(download(d_status2, 1)[0] & mc::kStatusDuplicate);
  int64_t* d_small = upload(std::vector<int64_t>(2 * 1024, kEmptyKey));
  int32_t* d_status3 = upload(std::vector<int32_t>(1, 0));
  EXPECT_TRUE(mc::launch_table_insert(d_keys, n, d_small, 1024, true, d_status3, nullptr) == cudaSuccess);
  EXPECT_TRUE(download(d_status3, 1)[0] & mc::kStatusFull);

  // Ranks, lookups and unpacking (the steps of unique_coords).
  std::vector<int64_t> sorted = keys;
  std::sort(sorted.begin(), sorted.end());
  int64_t* d_sorted = upload(sorted);
  EXPECT_TRUE(mc::launch_table_assign_ranks(d_sorted, n, d_table, capacity, nullptr) == cudaSuccess);
  int64_t* d_ranks = upload(std::vector<int64_t>(n));
  EXPECT_TRUE(mc::launch_table_lookup(d_keys, n, d_table, capacity, d_ranks, nullptr) == cudaSuccess);
  const std::vector<int64_t> ranks = download(d_ranks, n);
  for (int64_t i = 0; i < n; ++i) EXPECT_TRUE(sorted[ranks[i]] == keys[i]);
  int32_t* d_unpacked = upload(std::vector<int32_t>(4 * n));
  EXPECT_TRUE(mc::launch_unpack_keys(d_sorted, n, d_unpacked, nullptr) == cudaSuccess);
  const std::vector<int32_t> unpacked = download(d_unpacked, 4 * n);
  for (int64_t i = 0; i < n; ++i)
    for (int a = 0; a < 4; ++a) EXPECT_TRUE(unpacked[4 * ranks[i] + a] == coords[4 * i + a]);

  // Strided keys: floor and truncation.
  EXPECT_TRUE(mc::launch_pack_keys(d_coords, n, 2, 2, 2, true, d_keys, nullptr) == cudaSuccess);
  const std::vector<int64_t> trunc_keys = download(d_keys, n);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t* c = &coords[4 * i];
    EXPECT_TRUE(trunc_keys[i] == meshrec::sparse::pack_key(c[0], c[1] / 2 * 2, c[2] / 2 * 2, c[3] / 2 * 2));
  }
  for (void* p : {(void*)d_coords, (void*)d_keys, (void*)d_table, (void*)d_status, (void*)d_offsets, (void*)d_map,
                  (void*)d_inverse, (void*)d_status2, (void*)d_small, (void*)d_status3, (void*)d_sorted,
                  (void*)d_ranks, (void*)d_unpacked})
    cudaFree(p);
}

template <typename T>
void test_row_kernels(double tolerance) {
  std::mt19937 rng(2);
  std::normal_distribution<double> normal;
  const int64_t n = 2000, voxels = 300, channels = 13, taps = 8;
  std::vector<T> features(voxels * channels), points(n * channels), weights(n * taps);
  for (auto& x : features) x = T(normal(rng));
  for (auto& x : points) x = T(normal(rng));
  for (auto& x : weights) x = T(normal(rng));
  std::uniform_int_distribution<int32_t> voxel(-1, voxels - 1);
  std::vector<int32_t> indices(n * taps);
  for (auto& x : indices) x = voxel(rng);
  std::vector<int64_t> index(n);
  for (auto& x : index) x = voxel(rng);

  // devoxelize
  T* d_features = upload(features);
  T* d_weights = upload(weights);
  int32_t* d_indices = upload(indices);
  T* d_out = upload(std::vector<T>(n * channels));
  EXPECT_TRUE(mc::launch_devoxelize<T>(d_features, d_indices, d_weights, n, taps, channels, d_out, nullptr) ==
              cudaSuccess);
  const std::vector<T> out = download(d_out, n * channels);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < channels; ++ch) {
      double expected = 0;
      for (int64_t j = 0; j < taps; ++j)
        if (indices[i * taps + j] >= 0) expected += double(weights[i * taps + j]) * features[indices[i * taps + j] * channels + ch];
      EXPECT_NEAR(out[i * channels + ch], expected, tolerance);
    }

  // Grouping of points by voxel (what sparse_cuda.cpp builds with ATen), then the segment kernels.
  std::vector<int64_t> order, starts(voxels + 1, 0);
  for (int64_t v = 0; v < voxels; ++v) {
    starts[v] = int64_t(order.size());
    for (int64_t i = 0; i < n; ++i)
      if (index[i] == v) order.push_back(i);
  }
  starts[voxels] = int64_t(order.size());
  int64_t* d_order = upload(order);
  int64_t* d_starts = upload(starts);
  int64_t* d_index = upload(index);
  T* d_points = upload(points);
  T* d_pooled = upload(std::vector<T>(voxels * channels));
  for (auto mode : {mc::SegmentMode::kSum, mc::SegmentMode::kMean, mc::SegmentMode::kFirst}) {
    EXPECT_TRUE(mc::launch_segment_reduce<T>(d_points, d_order, d_starts, voxels, channels, 1, nullptr, mode, d_pooled,
                                             nullptr) == cudaSuccess);
    const std::vector<T> pooled = download(d_pooled, voxels * channels);
    for (int64_t v = 0; v < voxels; ++v)
      for (int64_t ch = 0; ch < channels; ++ch) {
        double expected = 0;
        const int64_t count = starts[v + 1] - starts[v];
        for (int64_t e = starts[v]; e < starts[v + 1]; ++e)
          if (mode != mc::SegmentMode::kFirst || e == starts[v]) expected += points[order[e] * channels + ch];
        if (mode == mc::SegmentMode::kMean && count > 0) expected /= double(count);
        EXPECT_NEAR(pooled[v * channels + ch], expected, tolerance);
      }
  }
  T* d_grad = upload(std::vector<T>(n * channels));
  EXPECT_TRUE(mc::launch_pool_backward<T>(d_features, d_index, d_starts, d_order, n, channels, true, d_grad, nullptr) ==
              cudaSuccess);
  const std::vector<T> grad = download(d_grad, n * channels);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < channels; ++ch) {
      const int64_t v = index[i];
      const double expected = v < 0 ? 0.0 : double(features[v * channels + ch]) / double(starts[v + 1] - starts[v]);
      EXPECT_NEAR(grad[i * channels + ch], expected, tolerance);
    }

  // Scatter-add into distinct rows.
  std::vector<int64_t> rows(voxels / 2);
  for (int64_t i = 0; i < int64_t(rows.size()); ++i) rows[i] = 2 * i + 1;
  int64_t* d_rows = upload(rows);
  T* d_dst = upload(features);
  EXPECT_TRUE(mc::launch_scatter_add_rows<T>(d_points, d_rows, int64_t(rows.size()), channels, d_dst, nullptr) ==
              cudaSuccess);
  const std::vector<T> dst = download(d_dst, voxels * channels);
  for (int64_t i = 0; i < int64_t(rows.size()); ++i)
    for (int64_t ch = 0; ch < channels; ++ch)
      EXPECT_NEAR(dst[rows[i] * channels + ch], double(features[rows[i] * channels + ch]) + points[i * channels + ch],
                  tolerance);
  EXPECT_NEAR(dst[0], features[0], 0.0);
  for (void* p : {(void*)d_features, (void*)d_weights, (void*)d_indices, (void*)d_out, (void*)d_order,
                  (void*)d_starts, (void*)d_index, (void*)d_points, (void*)d_pooled, (void*)d_grad, (void*)d_rows,
                  (void*)d_dst})
    cudaFree(p);
}

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  test_tables_and_maps();
  test_row_kernels<double>(1e-12);
  test_row_kernels<float>(1e-4);
  // Empty launches do nothing and succeed.
  EXPECT_TRUE(mc::launch_kernel_map_query(nullptr, 0, nullptr, 27, nullptr, 64, nullptr, nullptr) == cudaSuccess);
  return TEST_RESULT();
}
