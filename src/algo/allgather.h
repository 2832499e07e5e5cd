// All-gather attention (the Llama 3 training recipe): every rank gathers every rank's K and V,
// attends its own queries to all of them with one local kernel call, and in the backward
// reduce-scatters the K/V gradients back to their owners. Simple and fast when K/V are small
// (GQA); memory and traffic grow with the whole sequence rather than one shard.
#pragma once

#include "burst/burst_attention.h"

namespace burst::algo {

// Same contract as burst_forward / burst_backward (shards in options.layout, global
// positions); they read only the options every strategy shares.
StrategyStats allgather_forward(comm::Communicator& comm, const TensorView& q, const TensorView& k,
                                const TensorView& v, const TensorView& out, const RowStatsView& lse,
                                const DistributedOptions& options);
StrategyStats allgather_backward(comm::Communicator& comm, const TensorView& q, const TensorView& k,
                                 const TensorView& v, const TensorView& out, const RowStatsView& lse,
                                 const TensorView& dout, const TensorView& dq, const TensorView& dk,
                                 const TensorView& dv, const DistributedOptions& options);

}  // namespace burst::algo
