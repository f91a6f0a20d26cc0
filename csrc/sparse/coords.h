// Voxel coordinates as hash keys, shared by the CPU and CUDA kernels of the sparse family.
//
// A voxel is (batch, x, y, z), int32 each, with x, y, z in full-resolution voxel units (a tensor
// at stride s holds multiples of s, as in torchsparse 1.4). Each row packs into one
// non-negative int64 key:
//     bits 51..62: batch          (0 .. 4095)
//     bits 34..50: x + 65536      (x in -65536 .. 65535)
//     bits 17..33: y + 65536
//     bits  0..16: z + 65536
// The packing is exact (no collisions, unlike torchsparse's FNV hash) and order-preserving:
// sorting keys sorts voxels lexicographically by (batch, x, y, z), which is the canonical output
// order of every op that creates voxels. Bit 63 stays clear, so -1 marks an empty table slot and
// the keys sort correctly as signed integers (torch has no unsigned sort).
#pragma once

#include <cstdint>

#include "../common/hostdevice.h"

namespace meshrec {
namespace sparse {

constexpr int kCoordBits = 17;
constexpr int kBatchBits = 12;
constexpr int32_t kCoordMin = -(1 << (kCoordBits - 1));
constexpr int32_t kCoordMax = (1 << (kCoordBits - 1)) - 1;
constexpr int32_t kBatchMax = (1 << kBatchBits) - 1;
constexpr int64_t kEmptyKey = -1;
// Table sizes are powers of two up to this many slots (the int32 row indices stored as values
// stay far from overflow, and a table of this size already takes 12 GiB).
constexpr int64_t kMaxHashCapacity = int64_t(1) << 30;

MESHREC_HOST_DEVICE inline bool coord_in_range(int64_t c) { return c >= kCoordMin && c <= kCoordMax; }
MESHREC_HOST_DEVICE inline bool batch_in_range(int64_t b) { return b >= 0 && b <= kBatchMax; }

// Packs an in-range voxel; callers check the ranges first.
MESHREC_HOST_DEVICE inline int64_t pack_key(int64_t b, int64_t x, int64_t y, int64_t z) {
  constexpr int64_t mask = (int64_t(1) << kCoordBits) - 1;
  return (b << (3 * kCoordBits)) | (((x - kCoordMin) & mask) << (2 * kCoordBits)) |
         (((y - kCoordMin) & mask) << kCoordBits) | ((z - kCoordMin) & mask);
}

// The key of (b, x + dx, y + dy, z + dz), or kEmptyKey when that voxel lies outside the packable
// range (then it cannot be in any table, so the lookup is a miss).
MESHREC_HOST_DEVICE inline int64_t offset_key(const int32_t* coord, int64_t dx, int64_t dy, int64_t dz) {
  const int64_t x = int64_t(coord[1]) + dx, y = int64_t(coord[2]) + dy, z = int64_t(coord[3]) + dz;
  if (!coord_in_range(x) || !coord_in_range(y) || !coord_in_range(z) || !batch_in_range(coord[0])) return kEmptyKey;
  return pack_key(coord[0], x, y, z);
}

MESHREC_HOST_DEVICE inline void unpack_key(int64_t key, int32_t* coord) {
  constexpr int64_t mask = (int64_t(1) << kCoordBits) - 1;
  coord[0] = int32_t(key >> (3 * kCoordBits));
  coord[1] = int32_t(((key >> (2 * kCoordBits)) & mask) + kCoordMin);
  coord[2] = int32_t(((key >> kCoordBits) & mask) + kCoordMin);
  coord[3] = int32_t((key & mask) + kCoordMin);
}

// Division of a coordinate by a positive stride, rounding toward -inf (floor, the default) or
// toward zero (torchsparse 1.4 under PyTorch < 1.13, whose `//` truncated).
MESHREC_HOST_DEVICE inline int64_t divide_coord(int64_t c, int64_t stride, bool truncate) {
  const int64_t q = c / stride;  // C++ division truncates
  return (!truncate && (c % stride != 0) && (c < 0)) ? q - 1 : q;
}

// Slot of a key in a power-of-two table: the murmur3 64-bit finaliser spreads the packed bits,
// whose low bits alone (z) would cluster badly under linear probing.
MESHREC_HOST_DEVICE inline uint64_t hash_slot(int64_t key, uint64_t mask) {
  uint64_t h = static_cast<uint64_t>(key);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h & mask;
}

// The hash table: open addressing with linear probing over `capacity` (a power of two) slots.
// Slot s is two int64 words, entries[2 s] = key (kEmptyKey when free) and entries[2 s + 1] =
// value, so a hit costs one cache line. Returns the value stored with `key`, or -1. Probing stops
// at the first free slot, and after `capacity` probes in a full table.
MESHREC_HOST_DEVICE inline int64_t table_find(const int64_t* entries, uint64_t capacity, int64_t key) {
  if (key == kEmptyKey) return -1;
  const uint64_t mask = capacity - 1;
  uint64_t slot = hash_slot(key, mask);
  for (uint64_t probe = 0; probe < capacity; ++probe) {
    const int64_t stored = entries[2 * slot];
    if (stored == key) return entries[2 * slot + 1];
    if (stored == kEmptyKey) return -1;
    slot = (slot + 1) & mask;
  }
  return -1;
}

// Smallest power of two >= n (n >= 1).
MESHREC_HOST_DEVICE inline int64_t next_power_of_two(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

}  // namespace sparse
}  // namespace meshrec
