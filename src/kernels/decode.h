// Attention of a few query rows against many keys (decoding), reading K and V once: the tile
// kernels multiply block_m query rows by every key tile, which for one query row is a
// matrix-vector product per tile and falls far short of memory bandwidth.
#pragma once

#include "burst/kernels.h"
#include "burst/tensor.h"

namespace burst::kernels {

// out, lse of q's rows against k, v as attention_forward computes them (mask, positions,
// scale of `options`; NaN and Inf as docs/numerics.md says), on the calling thread. Meant for
// q.s * (n_heads_q / n_heads_kv) of a few rows: every key row is read once per kv head and
// used by all of them. q, k, v fp32 or bf16 (the same); out fp32.
void attention_forward_few_rows(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                                const RowStatsView& lse, const AttentionOptions& options);

}  // namespace burst::kernels
