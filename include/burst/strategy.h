// The distributed attention strategies as one table: an entry per strategy holds everything
// about it (its name, what it cannot run and why, its forward and backward on this rank's
// shards, the bytes each rank sends and the memory each rank allocates), so tools, bindings,
// the planner and the tests iterate the table instead of switching on names:
//   local      the single-rank kernel, one rank: the point every other strategy reproduces;
//   burst      BurstAttention (burst_attention.h): K/V ring forward, backward scheme by byte cost;
//   ring       RingAttention as ring-flash-attention does it: the same K/V ring forward, and
//              a backward that passes K, V, dK, dV (the kv scheme, always);
//   ring-rsa   the paper's RingAttention baseline with materialised scores;
//   ulysses    all-to-all from sequence to head shards and back;
//   usp        Ulysses inside groups of options.ulysses_degree ranks x the ring across them;
//   allgather  all-gather K/V, one local kernel call, reduce-scatter dK/dV;
//   tp-v1, tp-v3  Megatron tensor parallelism: heads split over ranks. They shard the layer's
//              weights, so they exist only at layer level (layer.h); the attention-core calls
//              refuse them.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "burst/burst_attention.h"

namespace burst::algo {

// In the registry's order (strategies()).
enum class Strategy { kLocal, kBurst, kRing, kRingRsa, kUlysses, kUsp, kAllGather, kTpV1, kTpV3 };

// Options of any strategy: what every one reads, BurstAttention's ring (burst, ring, usp),
// and usp's group size.
struct StrategyOptions : BurstOptions {
  int ulysses_degree = 1;  // usp: ranks per Ulysses group, dividing the ranks and both head counts
};

// An attention problem as the formulas read it: the heads of the problem a strategy is given
// (a layer under tensor parallelism gives it a rank's heads), head_dim, element sizes.
struct ProblemShape {
  std::int64_t batch = 1, n_heads_q = 1, n_heads_kv = 1, head_dim = 1;
  std::size_t element_bytes = 4;  // q, k, v, dO
  std::size_t output_bytes = 4;   // out
  // Keys of a one-rank problem (local) when there are not as many as queries; 0: as many.
  std::int64_t seqlen_k = 0;
};

// Bytes one rank sends in one forward and one backward, exactly as its communicator counts
// them, for shards of given lengths. Exact for unequal shards too, except the double ring's
// (exact for equal shards: it sends P - 1 shards per rank, not always the same ones).
struct StrategyBytes {
  // K/V rings: what is sent plus what the mask spares (StrategyStats::bytes_saved).
  std::uint64_t forward = 0;
  std::uint64_t backward = 0;  // backward_bundle + backward_trailing
  // The backward's two halves: what leaves before the compute (a ring's bundle over P - 1
  // hops, the inputs of a collective) and what follows it (accumulators trailing home over
  // P hops, results going back, gradient reductions).
  std::uint64_t backward_bundle = 0, backward_trailing = 0;
  // Of the figures above, what a ring sends hop by hop (usp: the ring across its groups; the
  // rest is its group all-to-alls). The planner times the two apart.
  std::uint64_t ring_forward = 0, ring_bundle = 0, ring_trailing = 0;
  BackwardScheme scheme = BackwardScheme::kAuto;  // the scheme of the ring's backward
};

// Bytes of one rank's buffers in each pass.
struct PassBytes {
  double forward = 0, backward = 0;
};

struct StrategyInfo {
  Strategy strategy;
  std::string_view name;     // as the command line and Python spell it
  std::string_view summary;  // one line for help texts
  // Shards the layer's weights by heads (tensor parallelism), so only AttentionLayer runs it.
  bool layer_only = false;
  // Reads RingOptions (backward scheme, double ring, gradient wire): BurstAttention's ring.
  bool ring_options = false;
  // What its backward moves, for reports ("reduce-scatter"); empty for a plain ring, whose
  // backward is its scheme (StrategyStats::scheme), which a hybrid's label is followed by.
  std::string_view backward_moves;
  // Why it cannot run a problem of `shape` over `ranks` ranks with `options`, "" when it can:
  // the message its own calls throw. `as_layer`: inside AttentionLayer, where tensor
  // parallelism gives each rank its heads.
  std::string (*cannot_run)(const ProblemShape& shape, int ranks, const StrategyOptions& options, bool as_layer);
  // This rank's out and lse, and dq, dk, dv (burst_attention.h has the shapes and dtypes).
  StrategyStats (*forward)(comm::Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v,
                           const TensorView& out, const RowStatsView& lse, const StrategyOptions& options);
  StrategyStats (*backward)(comm::Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v,
                            const TensorView& out, const RowStatsView& lse, const TensorView& dout,
                            const TensorView& dq, const TensorView& dk, const TensorView& dv,
                            const StrategyOptions& options);
  // Bytes rank `rank` sends when every rank's shard has `shard_lengths` tokens (rank order).
  StrategyBytes (*bytes)(const ProblemShape& shape, const std::vector<std::int64_t>& shard_lengths, int rank,
                         const StrategyOptions& options);
  // Buffers one rank allocates beyond its own shards (the longest shard's), in each pass;
  // `kernel` is the scratch of one local kernel call on the rank's threads.
  PassBytes (*workspace)(const ProblemShape& shape, const std::vector<std::int64_t>& shard_lengths,
                         const StrategyOptions& options, const PassBytes& kernel);
  // Bytes rank `rank` sends in AttentionLayer's own collectives over rows of X's shape
  // (`row_floats` = b D floats a token): tp-v1 all-reduces Y and dX, tp-v3 all-gathers X and
  // reduce-scatters Y (backward: dY and dX); none for the others (the weight gradients'
  // all-reduce is the layer's, expected_layer_traffic). Only forward and backward are set.
  StrategyBytes (*layer_bytes)(std::int64_t row_floats, const std::vector<std::int64_t>& shard_lengths, int rank);
};

// Every strategy, in a fixed order: local, burst, ring, ring-rsa, ulysses, usp, allgather,
// tp-v1, tp-v3.
std::span<const StrategyInfo> strategies();
const StrategyInfo& strategy_info(Strategy strategy);
// The entry named `name`; throws naming `what` and listing the names otherwise.
const StrategyInfo& find_strategy(std::string_view name, std::string_view what);
std::string strategy_name(Strategy strategy);
Strategy parse_strategy(const std::string& text, const std::string& what);
// True for tp-v1 and tp-v3, which run only as a layer.
bool layer_only(Strategy strategy);

// Every rank's StrategyBytes averaged over the ranks, as reports average the counted bytes.
struct MeanBytes {
  double forward = 0, backward = 0, backward_bundle = 0, backward_trailing = 0;
  double ring_forward = 0, ring_bundle = 0, ring_trailing = 0;
};
MeanBytes mean_bytes(Strategy strategy, const ProblemShape& shape, const std::vector<std::int64_t>& shard_lengths,
                     const StrategyOptions& options);

// Memory of one rank running a strategy, bytes, in each pass: its own tensors and the
// strategy's buffers. The forward holds q, k, v, out, lse; the backward adds dO, dq, dk, dv.
struct RankMemory {
  PassBytes inputs;     // q, k, v shards (backward: and dO)
  PassBytes outputs;    // out, lse (backward: and the fp32 dq, dk, dv)
  PassBytes workspace;  // StrategyInfo::workspace
  double forward() const { return inputs.forward + outputs.forward + workspace.forward; }
  double backward() const { return inputs.backward + outputs.backward + workspace.backward; }
  double peak(bool with_backward) const { return with_backward && backward() > forward() ? backward() : forward(); }
};
RankMemory rank_memory(Strategy strategy, const ProblemShape& shape, const std::vector<std::int64_t>& shard_lengths,
                       const StrategyOptions& options, const PassBytes& kernel);

// The registry's forward and backward of `strategy`, for callers holding its enum.
StrategyStats strategy_forward(Strategy strategy, comm::Communicator& comm, const TensorView& q,
                               const TensorView& k, const TensorView& v, const TensorView& out,
                               const RowStatsView& lse, const StrategyOptions& options);
StrategyStats strategy_backward(Strategy strategy, comm::Communicator& comm, const TensorView& q,
                                const TensorView& k, const TensorView& v, const TensorView& out,
                                const RowStatsView& lse, const TensorView& dout, const TensorView& dq,
                                const TensorView& dk, const TensorView& dv, const StrategyOptions& options);

}  // namespace burst::algo
