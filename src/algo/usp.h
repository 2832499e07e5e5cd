// USP, the hybrid of Ulysses and the ring: the P ranks form R = P / U groups of U consecutive
// ranks. Inside a group an all-to-all turns the group's sequence shards into head shards
// ((b, n_r, H, d) -> (b, n_group, H/U, d)); ranks with the same index in every group then run
// BurstAttention's ring over the R groups' token sets for their H/U heads; an all-to-all
// turns the results back. U = 1 is the ring, U = P is Ulysses.
#pragma once

#include "burst/strategy.h"

namespace burst::algo {

// Same contract as burst_forward / burst_backward; U is options.ulysses_degree, which must
// divide the world size, n_heads_q and n_heads_kv. The ring part honours backward_scheme,
// double_ring and gradient_wire.
StrategyStats usp_forward(comm::Communicator& comm, const TensorView& q, const TensorView& k,
                          const TensorView& v, const TensorView& out, const RowStatsView& lse,
                          const StrategyOptions& options);
StrategyStats usp_backward(comm::Communicator& comm, const TensorView& q, const TensorView& k,
                           const TensorView& v, const TensorView& out, const RowStatsView& lse,
                           const TensorView& dout, const TensorView& dq, const TensorView& dk,
                           const TensorView& dv, const StrategyOptions& options);

}  // namespace burst::algo
