// Element-wise work on score tiles, compiled once per instruction set (tile_ops_impl.inc)
// and chosen at run time. All tiles are row-major fp32 with a leading dimension `ld`.
#pragma once

#include <cstdint>
#include <string>

#include "burst/dtype.h"
#include "burst/kernels.h"

namespace burst::kernels {

namespace amx {
struct Ops;
}

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

  // The fused fp32 route (src/kernels/README.md, docs/performance.md). Its tiles are held
  // transposed, in "lanes" layout: one vector lane per token of the task's own block (the
  // queries of a forward task, the keys of a backward task), so per-token state of the
  // forward (row max, row sum, rescale factor) is a vector and the online softmax needs no
  // horizontal reductions. The other side's rows are read in place, row-major, one broadcast
  // element at a time: nothing is packed per tile. `lanes` counts are padded to kLaneAlign
  // and every lanes-layout array has a leading dimension that is a multiple of kLaneAlign;
  // padded lanes compute junk that is never stored. These are null where the instruction set
  // has no register-blocked kernels (generic): the route is then BLAS.
  //
  // out[j, i] = alpha * sum_x b[j, x] a_t[x, i]    for j < nb, i < lanes  (S^T = K Q^T ...)
  void (*scores_lanes)(const float* b, std::int64_t ld_b, int nb, const float* a_t, std::int64_t ld_a,
                       int lanes, int d, float alpha, float* out, std::int64_t ld_out);
  // c_t[x, i] = c_t[x, i] factor[i] + sum_j b[j, x] t[j, i]  for x < d, i < lanes; factor
  // may be null (1).                                  (O^T = O^T diag(f) + V^T P^T ...)
  void (*accumulate_lanes)(const float* b, std::int64_t ld_b, int nb, int d, const float* t,
                           std::int64_t ld_t, int lanes, const float* factor, float* c_t,
                           std::int64_t ld_c);
  // online_softmax on a lanes-layout tile s (n key rows x lanes query lanes): the same
  // per-query semantics, with row_max, row_sum and rescale indexed by lane.
  void (*online_softmax_lanes)(float* s, std::int64_t ld, int n, int lanes, float* row_max,
                               float* row_sum, float* rescale);
  // Both score products of a backward tile and its score gradient in one pass: with rows j
  // of b1, b2 (a query each) against lanes-layout a1, a2 (a key per lane, shared ld_a),
  //   s = alpha b1 a1, dp = b2 a2, p = exp(s - lse[j]) (0 where lse[j] = -inf),
  //   ds = p (dp - delta[j])     (nb rows x lanes, ld_out),
  // the arithmetic of scores_lanes twice and then probs_from_lse and ds_from_dp, without the
  // tiles' round trips through memory. Null where the instruction set lacks the registers
  // for it (AVX2): the separate calls serve there.
  void (*probs_and_ds_lanes)(const float* b1, std::int64_t ld_b1, const float* b2, std::int64_t ld_b2, int nb,
                             const float* a1, const float* a2, std::int64_t ld_a, int lanes, int d, float alpha,
                             const float* lse, const float* delta, float* p, float* ds, std::int64_t ld_out);

  // Whether bf16 inputs take the fused route too (detail::fused_route): their tiles are
  // widened to fp32 (Q^T or K^T, V^T once per task, the streamed rows once per tile) and go
  // through the lanes products above, so the arithmetic is the fp32 route's on the widened
  // values. Set on avx512bf16, where it beat both the BLAS route and bf16 dot products
  // (vdpbf16ps runs at half the fp32 FMA rate on the Xeon of docs/performance.md).
  bool fused_bf16;

  // The AMX route (amx.h, README.md "AMX"): bf16 inputs' products as TDPBF16PS tile
  // products, on the processor (amxbf16) or emulated (amxbf16-emulated); null elsewhere.
  const amx::Ops* amx;
};

// Lanes-layout arrays are padded to a multiple of this many tokens (one AVX-512 vector).
constexpr int kLaneAlign = 16;
constexpr std::int64_t lanes_padded(std::int64_t n) { return (n + kLaneAlign - 1) / kLaneAlign * kLaneAlign; }

constexpr int kBf16Panel = 32;
constexpr std::int64_t bf16_packed_words(std::int64_t cols, std::int64_t d) {
  return (cols + kBf16Panel - 1) / kBf16Panel * kBf16Panel * ((d + 1) / 2);
}

// AMX-BF16 (Sapphire Rapids and later Xeons), detected for the amxbf16 implementation
// (README.md, "AMX"), which is supported only where `permitted` holds. cpu: cpuid 7.0 EDX
// reports amx_bf16 (bit 22) and amx_tile (bit 24); os: XCR0 enables the tile state (bits 17,
// 18); permitted: Linux granted this process the tile data state (arch_prctl
// ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA = 18), requested once, on the first call, and
// only where cpu and os hold. `why` says which step failed, for logs and test output.
struct AmxStatus {
  bool cpu = false, os = false, permitted = false;
  std::string why;
};
const AmxStatus& amx_bf16_status();

// The table for `isa` (kAuto resolved as resolve_isa does); throws if the processor lacks it.
const TileOps& tile_ops(Isa isa);

// The table of an AMX implementation: `base` (its element-wise work and the fused fp32 route)
// with bf16 inputs' products on the tile backend `amx` (isa.cpp).
TileOps with_amx(const TileOps& base, Isa isa, const amx::Ops& amx);

// One table per implementation, defined in tile_ops_<isa>.cpp.
namespace amxbf16 { const TileOps& table(); }
namespace amxbf16_emulated { const TileOps& table(); }
namespace avx512bf16 { const TileOps& table(); }
namespace avx512 { const TileOps& table(); }
namespace avx2 { const TileOps& table(); }
namespace generic { const TileOps& table(); }

}  // namespace burst::kernels
