// Host tests of the voxel-key math shared by the CPU and CUDA sparse kernels (csrc/sparse/coords.h).
#include <algorithm>
#include <array>
#include <cstdint>
#include <random>
#include <vector>

#include "sparse/coords.h"
#include "test_harness.h"

using namespace meshrec::sparse;

int main() {
  std::mt19937_64 rng(5);
  std::uniform_int_distribution<int32_t> coord(kCoordMin, kCoordMax), batch(0, kBatchMax), small(-3, 3);

  // Packing is exact and order-preserving over the whole range.
  std::vector<std::array<int32_t, 4>> rows;
  for (int i = 0; i < 20000; ++i) {
    rows.push_back({batch(rng), i % 3 ? coord(rng) : small(rng), coord(rng), i % 5 ? coord(rng) : small(rng)});
  }
  rows.push_back({0, kCoordMin, kCoordMin, kCoordMin});
  rows.push_back({kBatchMax, kCoordMax, kCoordMax, kCoordMax});
  for (const auto& r : rows) {
    const int64_t key = pack_key(r[0], r[1], r[2], r[3]);
    EXPECT_TRUE(key >= 0);
    int32_t back[4];
    unpack_key(key, back);
    for (int a = 0; a < 4; ++a) EXPECT_TRUE(back[a] == r[a]);
  }
  std::vector<std::array<int32_t, 4>> by_key = rows, lexicographic = rows;
  std::sort(by_key.begin(), by_key.end(), [](const auto& a, const auto& b) {
    return pack_key(a[0], a[1], a[2], a[3]) < pack_key(b[0], b[1], b[2], b[3]);
  });
  std::sort(lexicographic.begin(), lexicographic.end());
  EXPECT_TRUE(by_key == lexicographic);

  // Floor and truncating division agree for non-negative coordinates only.
  for (int64_t c = -9; c <= 9; ++c) {
    for (int64_t s : {1, 2, 3, 4}) {
      const int64_t floor_q = c >= 0 ? c / s : -((-c + s - 1) / s);
      EXPECT_TRUE(divide_coord(c, s, false) == floor_q);
      EXPECT_TRUE(divide_coord(c, s, true) == c / s);
    }
  }

  // Neighbours outside the packable range are misses, not wrapped keys.
  const int32_t corner[4] = {0, kCoordMax, 0, 0};
  EXPECT_TRUE(offset_key(corner, 1, 0, 0) == kEmptyKey);
  EXPECT_TRUE(offset_key(corner, -1, 0, 0) == pack_key(0, kCoordMax - 1, 0, 0));
  const int32_t bad_batch[4] = {kBatchMax + 1, 0, 0, 0};
  EXPECT_TRUE(offset_key(bad_batch, 0, 0, 0) == kEmptyKey);

  // A table filled by linear probing answers lookups, misses included.
  const uint64_t capacity = 64;
  std::vector<int64_t> table(2 * capacity, kEmptyKey);
  for (int32_t i = 0; i < 40; ++i) {
    const int64_t key = pack_key(0, i, -i, 2 * i);
    uint64_t slot = hash_slot(key, capacity - 1);
    while (table[2 * slot] != kEmptyKey) slot = (slot + 1) & (capacity - 1);
    table[2 * slot] = key;
    table[2 * slot + 1] = i;
  }
  for (int32_t i = 0; i < 40; ++i) EXPECT_TRUE(table_find(table.data(), capacity, pack_key(0, i, -i, 2 * i)) == i);
  EXPECT_TRUE(table_find(table.data(), capacity, pack_key(1, 0, 0, 0)) == -1);
  EXPECT_TRUE(table_find(table.data(), capacity, kEmptyKey) == -1);
  EXPECT_TRUE(next_power_of_two(1) == 1 && next_power_of_two(65) == 128 && next_power_of_two(64) == 64);
  return TEST_RESULT();
}
