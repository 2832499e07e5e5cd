// Element types Burst stores tensors in. Arithmetic is always fp32 (or double in references).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace burst {

enum class DType { kF32, kBF16 };

constexpr std::size_t dtype_size(DType t) { return t == DType::kF32 ? 4 : 2; }
constexpr std::string_view dtype_name(DType t) { return t == DType::kF32 ? "fp32" : "bf16"; }

// Parses "fp32" / "bf16"; throws burst::Error naming `what` otherwise.
DType parse_dtype(std::string_view text, std::string_view what);

// bfloat16 bits: the upper half of an IEEE fp32.
using bf16_bits = std::uint16_t;

// Rounds to nearest even; NaN stays a (quiet) NaN, infinities stay infinities.
inline bf16_bits float_to_bf16(float x) {
  std::uint32_t u = std::bit_cast<std::uint32_t>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<bf16_bits>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<bf16_bits>(u >> 16);
}

inline float bf16_to_float(bf16_bits b) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

}  // namespace burst
