// DeepSpeed-Ulysses attention: an all-to-all turns sequence shards into head shards
// ((b, n_r, H, d) -> (b, N, H/P, d)), every rank attends its heads over the whole sequence
// with one local kernel call, and an all-to-all turns the results back. Needs n_heads_q and
// n_heads_kv divisible by P: K/V heads are not replicated when there are too few (use burst
// or ring then); that fails loudly.
#pragma once

#include "burst/burst_attention.h"

namespace burst::algo {

// Same contract as burst_forward / burst_backward (shards in options.layout, global
// positions); they read only the options every strategy shares.
StrategyStats ulysses_forward(comm::Communicator& comm, const TensorView& q, const TensorView& k,
                              const TensorView& v, const TensorView& out, const RowStatsView& lse,
                              const DistributedOptions& options);
StrategyStats ulysses_backward(comm::Communicator& comm, const TensorView& q, const TensorView& k,
                               const TensorView& v, const TensorView& out, const RowStatsView& lse,
                               const TensorView& dout, const TensorView& dq, const TensorView& dk,
                               const TensorView& dv, const DistributedOptions& options);

}  // namespace burst::algo
