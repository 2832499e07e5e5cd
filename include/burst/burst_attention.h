// BurstAttention across the ranks of a communicator (GAO): exact attention over a sequence
// whose tokens are sharded over the ranks in a Layout. Every rank passes its own shards, in
// the layout's local order, and gets its own shards of the results.
//
// Forward: the query shard stays; K and V travel together around the ring, double buffered
// (the next shard is received while this one is computed), and each step continues an fp32
// running state with the local kernel. Backward has two schemes, chosen by byte cost:
//   kQuery (BurstAttention's): K, V, dK, dV stay; the bundle (Q, dO, delta, lse) travels and
//          dQ trails it one step behind, arriving home after a full circle;
//   kKeyValue (RingAttention's): Q, dO, dQ stay; K, V travel and dK, dV trail them.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "burst/layout.h"
#include "burst/communicator.h"
#include "burst/tensor.h"
#include "burst/kernels.h"

namespace burst::algo {

enum class BackwardScheme { kAuto, kQuery, kKeyValue };
std::string scheme_name(BackwardScheme scheme);  // "auto", "q", "kv"
BackwardScheme parse_scheme(const std::string& text, const std::string& what);

// What every strategy reads: how the sequence is sharded, the mask, and the local kernels'
// settings. The deadline of every wait and the ranks' nodes are the communicator's
// (Communicator::set_timeout, set_ranks_per_node): its wrappers (throttle, traffic counters)
// and the caller's reports need them too, so they live in one place.
struct DistributedOptions {
  std::int64_t seqlen = 0;  // global number of tokens N
  Layout layout = Layout::kContiguous;
  // Explicit token positions of every rank's shard (one list per rank of the communicator);
  // empty: from seqlen and layout. Lets a ring run over a sub-communicator whose members
  // hold arbitrary token sets (the ring of a hybrid strategy).
  std::vector<std::vector<std::int64_t>> positions;
  kernels::MaskSpec mask;      // in global token positions
  std::optional<float> scale;  // default 1/sqrt(head_dim)
  int threads = 1;             // kernel threads of this rank
  kernels::Isa isa = kernels::Isa::kAuto;
  int block_m = 0, block_n = 0;  // 0: the kernel's default tile
  // Set: every local kernel call is emulated (kernels::EmulatedCompute, docs/emulation.md).
  std::shared_ptr<const kernels::EmulatedCompute> emulate;
};

// BurstAttention's ring: read by burst, ring (whose backward is always kKeyValue) and the
// ring across usp's groups.
struct RingOptions {
  BackwardScheme backward_scheme = BackwardScheme::kAuto;
  // Forward over a topology-aware double ring: an intra-node ring per node plus one
  // inter-node hop per intra cycle, posted at its start so it hides behind the intra steps.
  // Nodes come from the communicator; every node must hold the same number of ranks. With
  // one node it is the plain ring.
  bool double_ring = false;
  // Precision of the trailing gradient partial sums (dQ, or dK and dV) on the wire. They are
  // always summed in fp32; bf16 halves their bytes at one rounding (2^-9 relative) per hop.
  DType gradient_wire = DType::kF32;
};

// What burst_forward and burst_backward read.
struct BurstOptions : DistributedOptions, RingOptions {};

// What one call of any strategy did on this rank.
struct StrategyStats {
  std::uint64_t bytes_sent = 0, bytes_received = 0;
  // What a ring did not send because no later rank needed it (sliding windows, packed
  // documents): K/V in the forward; bundles and trailing accumulators in the backward
  // (the double ring sends everything). bytes_sent + bytes_saved is the unmasked figure.
  std::uint64_t bytes_saved = 0;
  // Ring steps computed and skipped (masked out); a single kernel call (all-gather, Ulysses,
  // local) counts as one step.
  int steps_computed = 0, steps_skipped = 0;
  double compute_seconds = 0.0;    // in the local kernels
  double wait_seconds = 0.0;       // waiting for transfers: the exposed communication
  std::vector<double> step_seconds;  // kernel time of each step (0 when skipped)
  BackwardScheme scheme = BackwardScheme::kAuto;  // the scheme a ring's backward used
};

// Computes out and lse of this rank's queries against every rank's keys.
// q [b, n_r, n_heads_q, d], k and v [b, n_r, n_heads_kv, d] (same dtype, fp32 or bf16);
// out [b, n_r, n_heads_q, d] fp32 or bf16; lse [b, n_heads_q, n_r]; n_r is this rank's
// shard length under options.layout.
StrategyStats burst_forward(comm::Communicator& comm, const TensorView& q, const TensorView& k,
                            const TensorView& v, const TensorView& out, const RowStatsView& lse,
                            const BurstOptions& options);

// Computes this rank's shards of dq, dk, dv (fp32, overwritten) from the forward's out and
// lse and the output gradient dout (dtype of q).
StrategyStats burst_backward(comm::Communicator& comm, const TensorView& q, const TensorView& k,
                             const TensorView& v, const TensorView& out, const RowStatsView& lse,
                             const TensorView& dout, const TensorView& dq, const TensorView& dk,
                             const TensorView& dv, const BurstOptions& options);

// Mean bytes per rank a backward scheme sends, for shards of `shard_lengths` tokens: every
// origin's bundle (kQuery: Q, dO in the input dtype, delta and lse in fp32; kKeyValue: K, V)
// makes P - 1 hops and its accumulator (dQ, or dK and dV, in the gradient wire precision)
// P hops. The mean of the registry's per-rank figures (strategy.h: burst, ring).
std::uint64_t backward_bytes(BackwardScheme scheme, const std::vector<std::int64_t>& shard_lengths,
                             std::int64_t b, std::int64_t n_heads_q, std::int64_t n_heads_kv,
                             std::int64_t d, std::size_t element_bytes,
                             std::size_t gradient_wire_bytes = 4);
// The cheaper scheme by backward_bytes (kQuery on a tie).
BackwardScheme choose_scheme(const std::vector<std::int64_t>& shard_lengths, std::int64_t b,
                             std::int64_t n_heads_q, std::int64_t n_heads_kv, std::int64_t d,
                             std::size_t element_bytes);
// What kAuto runs for a layout: kKeyValue under the balanced layout, whose cuts balance the
// work of each rank's queries; that scheme computes it where the queries live, while kQuery
// computes it where the keys live (under a causal mask the early keys are seen by the most
// queries). Otherwise choose_scheme.
BackwardScheme choose_scheme(Layout layout, const std::vector<std::int64_t>& shard_lengths, std::int64_t b,
                             std::int64_t n_heads_q, std::int64_t n_heads_kv, std::int64_t d,
                             std::size_t element_bytes);

}  // namespace burst::algo
