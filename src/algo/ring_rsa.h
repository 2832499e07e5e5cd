// RingAttention as the BurstAttention paper compares against it (ring self-attention, Li et
// al. 2021): the scores are materialised. Forward: a ring pass of K fills this rank's full
// score rows [b, h, n_r, N], a row softmax turns them into probabilities, and a ring pass of
// V accumulates O. Backward: ring passes of K (scores again), V (dP = dO V^T) and K (dQ),
// dK and dV of every key computed locally into full-length buffers, and an all-reduce of
// those buffers. Memory grows as n_r x N per head: that, and its traffic, is what it shows.
#pragma once

#include "burst/burst_attention.h"

namespace burst::algo {

// Same contract as burst_forward / burst_backward (shards in options.layout, global
// positions); they read only the options every strategy shares.
StrategyStats ring_rsa_forward(comm::Communicator& comm, const TensorView& q, const TensorView& k,
                               const TensorView& v, const TensorView& out, const RowStatsView& lse,
                               const DistributedOptions& options);
StrategyStats ring_rsa_backward(comm::Communicator& comm, const TensorView& q, const TensorView& k,
                                const TensorView& v, const TensorView& out, const RowStatsView& lse,
                                const TensorView& dout, const TensorView& dq, const TensorView& dk,
                                const TensorView& dv, const DistributedOptions& options);

// Bytes of the materialised score rows this rank holds: b h n_r N fp32 (the forward keeps
// one such matrix, the backward two).
std::uint64_t ring_rsa_score_bytes(std::int64_t b, std::int64_t n_heads_q, std::int64_t shard,
                                   std::int64_t seqlen);

}  // namespace burst::algo
