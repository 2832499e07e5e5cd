// Tile operations for AVX-512 with avx512_bf16: the avx512 element-wise code plus bf16
// dot-product (vdpbf16ps) micro-kernels: S = alpha Q K^T on row-major tiles for the BLAS
// route, and S^T = alpha K Q^T in lanes layout for the fused bf16 route. vdpbf16ps does two
// products per lane, at twice the fp32 FMA rate on Zen 4 and on the Xeon measured in
// docs/performance.md. fp32 inputs take the fused route's lanes-layout products, the same
// as avx512's.
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
#include "kernels/tile_ops_lanes.inc"

namespace {

// The fused bf16 route's S^T = scale K Q^T (tile_ops.h, scores_lanes_bf16): scores_block's
// 6 rows x 4 vectors of accumulators, each step one pair of d: 4 lane vectors of pairs, a
// broadcast 32-bit word of each row of b and one vdpbf16ps per accumulator, so half the
// steps (and instructions) of the fp32 product for the same sum.
template <int JR, int IV>
void scores_block_bf16(const bf16_bits* b, std::int64_t ld_b, const std::uint32_t* a, std::int64_t ld_a, int d,
                       float alpha, float* out, std::int64_t ld_out) {
  __m512 acc[JR][IV];
  for (int j = 0; j < JR; ++j)
    for (int v = 0; v < IV; ++v) acc[j][v] = _mm512_setzero_ps();
  auto step = [&](int p, bool last_odd) {
    __m512bh av[IV];
    for (int v = 0; v < IV; ++v) av[v] = (__m512bh)_mm512_loadu_si512(a + p * ld_a + v * kVecLanes);
    for (int j = 0; j < JR; ++j) {
      const __m512bh bj = query_pair(b + j * ld_b, p, last_odd);
      for (int v = 0; v < IV; ++v) acc[j][v] = _mm512_dpbf16_ps(acc[j][v], bj, av[v]);
    }
  };
  const int full_pairs = d / 2;
  for (int p = 0; p < full_pairs; ++p) {
    // The next block's rows, a cache line (32 bf16 values) of each per 16 pairs.
    if (p % 16 == 0) {
      for (int j = 0; j < JR; ++j) _mm_prefetch(reinterpret_cast<const char*>(b + (JR + j) * ld_b + 2 * p), _MM_HINT_T0);
    }
    step(p, false);
  }
  if (d % 2 != 0) step(full_pairs, true);
  const __m512 scale = _mm512_set1_ps(alpha);
  for (int j = 0; j < JR; ++j)
    for (int v = 0; v < IV; ++v) _mm512_storeu_ps(out + j * ld_out + v * kVecLanes, _mm512_mul_ps(acc[j][v], scale));
}

using ScoresBf16BlockFn = void (*)(const bf16_bits*, std::int64_t, const std::uint32_t*, std::int64_t, int, float,
                                   float*, std::int64_t);
template <int R, int... V>
constexpr std::array<ScoresBf16BlockFn, kVecBlock + 1> scores_bf16_row(std::integer_sequence<int, V...>) {
  return {nullptr, scores_block_bf16<R, V + 1>...};
}
template <int... R>
constexpr auto scores_bf16_table(std::integer_sequence<int, R...>) {
  return std::array<std::array<ScoresBf16BlockFn, kVecBlock + 1>, kRowBlock + 1>{
      std::array<ScoresBf16BlockFn, kVecBlock + 1>{},
      scores_bf16_row<R + 1>(std::make_integer_sequence<int, kVecBlock>())...};
}
constexpr auto kScoresBf16Blocks = scores_bf16_table(std::make_integer_sequence<int, kRowBlock>());

// Lane strips outermost, as scores_lanes: the strip of pairs ((d + 1) / 2 x 64 lanes, 16 KiB
// at d = 128) stays in L1 while every row block of b passes over it.
void scores_lanes_bf16(const bf16_bits* b, std::int64_t ld_b, int nb, const std::uint32_t* a_pairs,
                       std::int64_t ld_a, int lanes, int d, float alpha, float* out, std::int64_t ld_out) {
  const int vectors = (lanes + kVecLanes - 1) / kVecLanes;
  for (int v0 = 0; v0 < vectors; v0 += kVecBlock) {
    const int iv = vectors - v0 < kVecBlock ? vectors - v0 : kVecBlock;
    for (int j0 = 0; j0 < nb; j0 += kRowBlock) {
      const int jr = nb - j0 < kRowBlock ? nb - j0 : kRowBlock;
      kScoresBf16Blocks[jr][iv](b + j0 * ld_b, ld_b, a_pairs + v0 * kVecLanes, ld_a, d, alpha,
                                out + j0 * ld_out + v0 * kVecLanes, ld_out);
    }
  }
}

}  // namespace

#define BURST_TILE_BF16_LANES
#include "kernels/tile_ops_impl.inc"
#undef BURST_TILE_BF16_LANES
#undef BURST_TILE_LANES
#undef BURST_TILE_BF16_DOT
#undef BURST_TILE_ISA
}  // namespace burst::kernels::avx512bf16
