// Element-wise work on score tiles, compiled once per instruction set (tile_ops_impl.inc)
// and chosen at run time. All tiles are row-major fp32 with a leading dimension `ld`.
#pragma once

#include <cstdint>

#include "burst/dtype.h"
#include "burst/kernels.h"

namespace burst::kernels {

struct TileOps {
  Isa isa;

  // Online-softmax step on a score tile s (rows x cols): for each row updates row_max and
  // row_sum, turns s into exp(s - new_max) in place and writes the factor the previous
  // accumulator must be scaled by. A row with no score above -inf so far keeps max -inf,
  // sum 0, a zero probability row and factor 1. A NaN score makes the row's max or sum, and
  // so its factor and output, NaN for good (docs/numerics.md, "Non-finite inputs").
  void (*online_softmax)(float* s, std::int64_t ld, int rows, int cols, float* row_max,
                         float* row_sum, float* rescale);
  // x[i, :cols] *= factor[i] for rows whose factor is not 1.
  void (*scale_rows)(float* x, std::int64_t ld, int rows, int cols, const float* factor);
  // s = exp(s - lse[i]) in place; rows with lse = -inf become 0, rows with lse NaN NaN.
  void (*probs_from_lse)(float* s, std::int64_t ld, int rows, int cols, const float* lse);
  // dp = p * (dp - delta[i]) in place: the score gradient dS from dP.
  void (*ds_from_dp)(float* dp, std::int64_t ld_dp, const float* p, std::int64_t ld_p, int rows,
                     int cols, const float* delta);
  // Sets s[i, j] = fill where the pair (qpos[i], kpos[j]) is not visible under mask: -inf
  // for scores, 0 for probabilities and score gradients.
  void (*apply_mask)(float* s, std::int64_t ld, int rows, int cols, const std::int64_t* qpos,
                     const std::int64_t* kpos, const MaskSpec& mask, float fill);
  void (*bf16_to_f32)(const bf16_bits* src, float* dst, std::int64_t n);
  void (*f32_to_bf16)(const float* src, bf16_bits* dst, std::int64_t n);
  // y = exp(x) for x <= 88, flushing results below FLT_MIN to 0 (docs/numerics.md); NaN
  // gives NaN.
  void (*exp)(const float* x, float* y, std::int64_t n);

  // bf16 dot-product GEMM for S = alpha Q K^T on bf16 inputs (the avx512bf16 set only; null
  // elsewhere, where bf16 tiles are widened to fp32 for sgemm instead). Products of two bf16
  // values are exact in fp32 and sums are fp32, so only the summation order differs.
  // pack_bf16_keys lays out `cols` key rows of `d` bf16 values (leading dimension ld) as
  // pairs along d in panels of kBf16Panel columns, zero-padded; it writes
  // bf16_packed_words(cols, d) 32-bit words.
  void (*pack_bf16_keys)(const bf16_bits* k, std::int64_t ld, int cols, int d,
                         std::uint32_t* packed);
  // s[i, j] = alpha * sum_x q[i, x] k[j, x] for i < rows, j < cols; q rows have leading
  // dimension ld_q, s has ld_s.
  void (*gemm_bf16_qkt)(const bf16_bits* q, std::int64_t ld_q, int rows,
                        const std::uint32_t* packed, int cols, int d, float alpha, float* s,
                        std::int64_t ld_s);
};

constexpr int kBf16Panel = 32;
constexpr std::int64_t bf16_packed_words(std::int64_t cols, std::int64_t d) {
  return (cols + kBf16Panel - 1) / kBf16Panel * kBf16Panel * ((d + 1) / 2);
}

// The table for `isa` (kAuto resolved as resolve_isa does); throws if the processor lacks it.
const TileOps& tile_ops(Isa isa);

// One table per implementation, defined in tile_ops_<isa>.cpp.
namespace avx512bf16 { const TileOps& table(); }
namespace avx512 { const TileOps& table(); }
namespace avx2 { const TileOps& table(); }
namespace generic { const TileOps& table(); }

}  // namespace burst::kernels
