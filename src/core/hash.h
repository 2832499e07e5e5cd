// A fast 64-bit hash of bytes, for ranks to check cheaply that they hold the same inputs
// (not for security: anyone can make two inputs collide).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace burst {

// Hashes `bytes` bytes at `data`, continuing from `seed` (chain calls to hash several
// buffers). About one multiply per 8 bytes: a few GB/s, cheap next to attention on them.
inline std::uint64_t hash_bytes(const void* data, std::size_t bytes, std::uint64_t seed = 0x9E3779B97F4A7C15ull) {
  constexpr std::uint64_t kMul = 0xBF58476D1CE4E5B9ull;
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint64_t h = seed ^ (bytes * kMul);
  std::size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * kMul;
    h ^= h >> 29;
  }
  std::uint64_t tail = 0;
  std::memcpy(&tail, p + i, bytes - i);
  h = (h ^ tail) * kMul;
  return h ^ (h >> 32);
}

}  // namespace burst
