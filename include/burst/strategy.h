// The distributed attention strategies behind one call, so tools and tests can run any of
// them on the same shards:
//   burst      BurstAttention (burst.h): K/V ring forward, backward scheme by byte cost;
//   ring       RingAttention as ring-flash-attention does it: the same K/V ring forward, and
//              a backward that passes K, V, dK, dV (the kv scheme, always);
//   allgather  all-gather K/V, one local kernel call, reduce-scatter dK/dV (allgather.h);
//   ulysses    all-to-all from sequence to head shards and back (ulysses.h);
//   ring-rsa   the paper's RingAttention baseline with materialised scores (ring_rsa.h);
//   usp        Ulysses inside groups of options.ulysses_degree ranks x the ring across them;
//   tp-v1, tp-v3  Megatron tensor parallelism: heads split over ranks. They shard the layer's
//              weights, so they exist only at layer level (layer.h); the attention-core calls
//              below refuse them.
#pragma once

#include <string>

#include "burst/burst_attention.h"

namespace burst::algo {

enum class Strategy { kBurst, kRing, kAllGather, kUlysses, kRingRsa, kUsp, kTpV1, kTpV3 };

std::string strategy_name(Strategy strategy);
// Parses "burst", "ring", "allgather", "ulysses", "ring-rsa", "usp", "tp-v1", "tp-v3"; throws
// naming `what` otherwise.
Strategy parse_strategy(const std::string& text, const std::string& what);
// True for tp-v1 and tp-v3, which run only as a layer.
bool layer_only(Strategy strategy);

RingStats strategy_forward(Strategy strategy, comm::Communicator& comm, const TensorView& q,
                           const TensorView& k, const TensorView& v, const TensorView& out,
                           const RowStatsView& lse, const BurstOptions& options);
RingStats strategy_backward(Strategy strategy, comm::Communicator& comm, const TensorView& q,
                            const TensorView& k, const TensorView& v, const TensorView& out,
                            const RowStatsView& lse, const TensorView& dout, const TensorView& dq,
                            const TensorView& dk, const TensorView& dv, const BurstOptions& options);

}  // namespace burst::algo
