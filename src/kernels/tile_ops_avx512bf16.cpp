// Tile operations for AVX-512 with avx512_bf16: the avx512 element-wise code plus a bf16
// dot-product (vdpbf16ps) micro-kernel for S = alpha Q K^T on the BLAS route. On Zen 4 class
// cores vdpbf16ps runs at twice the fp32 FMA rate, on the Xeon measured in
// docs/performance.md at half of it. fp32 inputs take the fused route's lanes-layout
// products, the same as avx512's, and so do bf16 inputs, widened to fp32 (fused_bf16).
#include <immintrin.h>

#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#include "kernels/tile_ops.h"

namespace burst::kernels::avx512bf16 {
namespace {

// Packed keys: panel p holds columns [32p, 32p + 32); within it, for each pair index kp the
// 32 words (k[c, 2kp] | k[c, 2kp + 1] << 16), c = 0..31, zero where c >= cols or 2kp+1 >= d.
void pack_bf16_keys(const bf16_bits* k, std::int64_t ld, int cols, int d, std::uint32_t* packed) {
  const int pairs = (d + 1) / 2;
  const int panels = (cols + kBf16Panel - 1) / kBf16Panel;
  for (int p = 0; p < panels; ++p) {
    std::uint32_t* out = packed + static_cast<std::int64_t>(p) * pairs * kBf16Panel;
    for (int c = 0; c < kBf16Panel; ++c) {
      const int col = p * kBf16Panel + c;
      const bf16_bits* row = col < cols ? k + col * ld : nullptr;
      for (int kp = 0; kp < pairs; ++kp) {
        std::uint32_t word = 0;
        if (row != nullptr) {
          const std::uint32_t lo = row[2 * kp];
          const std::uint32_t hi = 2 * kp + 1 < d ? row[2 * kp + 1] : 0u;
          word = lo | hi << 16;
        }
        out[kp * kBf16Panel + c] = word;
      }
    }
  }
}

// The pair (q[2kp], q[2kp + 1]) of one query row as a 32-bit lane pattern; `last_odd` reads
// only q[2kp] (odd d).
inline __m512bh query_pair(const bf16_bits* q, int kp, bool last_odd) {
  std::uint32_t word;
  if (last_odd) {
    word = q[2 * kp];
  } else {
    std::memcpy(&word, q + 2 * kp, sizeof(word));
  }
  return (__m512bh)_mm512_set1_epi32(static_cast<int>(word));
}

// MR query rows x one 32-column panel.
template <int MR>
void panel_block(const bf16_bits* q, std::int64_t ld_q, const std::uint32_t* panel, int d,
                 int ncols, float alpha, float* s, std::int64_t ld_s) {
  __m512 acc[MR][2];
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  const int full_pairs = d / 2;
  auto step = [&](int kp, bool last_odd) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(panel + kp * kBf16Panel);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(panel + kp * kBf16Panel + 16);
    for (int r = 0; r < MR; ++r) {
      const __m512bh a = query_pair(q + r * ld_q, kp, last_odd);
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, b1);
    }
  };
  for (int kp = 0; kp < full_pairs; ++kp) step(kp, false);
  if (d % 2 != 0) step(full_pairs, true);

  const __m512 scale = _mm512_set1_ps(alpha);
  const auto mask0 = static_cast<__mmask16>(ncols >= 16 ? 0xffff : (1u << ncols) - 1);
  const auto mask1 = static_cast<__mmask16>(ncols >= 32 ? 0xffff : ncols > 16 ? (1u << (ncols - 16)) - 1 : 0);
  for (int r = 0; r < MR; ++r) {
    _mm512_mask_storeu_ps(s + r * ld_s, mask0, _mm512_mul_ps(acc[r][0], scale));
    _mm512_mask_storeu_ps(s + r * ld_s + 16, mask1, _mm512_mul_ps(acc[r][1], scale));
  }
}

constexpr int kRowsPerBlock = 8;

template <int MR>
void rows_of_panel(const bf16_bits* q, std::int64_t ld_q, const std::uint32_t* panel, int d,
                   int ncols, float alpha, float* s, std::int64_t ld_s) {
  panel_block<MR>(q, ld_q, panel, d, ncols, alpha, s, ld_s);
}

using PanelFn = void (*)(const bf16_bits*, std::int64_t, const std::uint32_t*, int, int, float,
                         float*, std::int64_t);
constexpr PanelFn kRemainder[kRowsPerBlock] = {nullptr,           rows_of_panel<1>, rows_of_panel<2>,
                                               rows_of_panel<3>, rows_of_panel<4>, rows_of_panel<5>,
                                               rows_of_panel<6>, rows_of_panel<7>};

void gemm_bf16_qkt(const bf16_bits* q, std::int64_t ld_q, int rows, const std::uint32_t* packed,
                   int cols, int d, float alpha, float* s, std::int64_t ld_s) {
  const std::int64_t panel_words = static_cast<std::int64_t>((d + 1) / 2) * kBf16Panel;
  for (int c0 = 0; c0 < cols; c0 += kBf16Panel) {
    const std::uint32_t* panel = packed + (c0 / kBf16Panel) * panel_words;
    const int ncols = cols - c0 < kBf16Panel ? cols - c0 : kBf16Panel;
    int r = 0;
    for (; r + kRowsPerBlock <= rows; r += kRowsPerBlock) {
      panel_block<kRowsPerBlock>(q + r * ld_q, ld_q, panel, d, ncols, alpha, s + r * ld_s + c0, ld_s);
    }
    if (r < rows) kRemainder[rows - r](q + r * ld_q, ld_q, panel, d, ncols, alpha, s + r * ld_s + c0, ld_s);
  }
}

}  // namespace

#define BURST_TILE_ISA Isa::kAvx512Bf16
#define BURST_TILE_BF16_DOT
#define BURST_TILE_LANES
#define BURST_TILE_FUSED_BF16
#include "kernels/tile_ops_lanes.inc"
#include "kernels/tile_ops_impl.inc"
#undef BURST_TILE_FUSED_BF16
#undef BURST_TILE_LANES
#undef BURST_TILE_BF16_DOT
#undef BURST_TILE_ISA
}  // namespace burst::kernels::avx512bf16
