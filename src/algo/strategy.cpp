#include "burst/strategy.h"

#include <algorithm>
#include <chrono>

#include "algo/allgather.h"
#include "algo/common.h"
#include "algo/costs.h"
#include "algo/ring_rsa.h"
#include "algo/ulysses.h"
#include "algo/usp.h"
#include "burst/error.h"

namespace burst::algo {
namespace {

using comm::Communicator;
using Clock = std::chrono::steady_clock;

// The single-rank kernel on this rank's whole problem (any seqlen_k; positions are the
// kernels' own, bottom-right aligned).
StrategyStats local_forward(Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v,
                            const TensorView& out, const RowStatsView& lse, const StrategyOptions& o) {
  const std::string why = costs::local_cannot_run({}, comm.world_size(), o, false);
  BURST_CHECK(why.empty(), why);
  StrategyStats stats;
  const auto t0 = Clock::now();
  kernels::attention_forward(q, k, v, out, lse, detail::kernel_options(o, comm));
  stats.compute_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  stats.step_seconds.push_back(stats.compute_seconds);
  stats.steps_computed = 1;
  return stats;
}

StrategyStats local_backward(Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v,
                             const TensorView& out, const RowStatsView& lse, const TensorView& dout,
                             const TensorView& dq, const TensorView& dk, const TensorView& dv,
                             const StrategyOptions& o) {
  const std::string why = costs::local_cannot_run({}, comm.world_size(), o, false);
  BURST_CHECK(why.empty(), why);
  detail::check_backward_tensors(q, k, out, dout, dq, dk, dv);
  StrategyStats stats;
  const auto t0 = Clock::now();
  RowStats delta(q.b, q.h, q.s);
  kernels::compute_delta(dout, out, delta.view(), o.threads);
  for (const TensorView* g : {&dq, &dk, &dv})
    for (std::int64_t ib = 0; ib < g->b; ++ib)
      for (std::int64_t is = 0; is < g->s; ++is)
        for (std::int64_t ih = 0; ih < g->h; ++ih) std::fill_n(g->row<float>(ib, is, ih), g->d, 0.0f);
  kernels::attention_backward(q, k, v, dout, lse, delta.view(), dq, dk, dv, detail::kernel_options(o, comm));
  stats.compute_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  stats.step_seconds.push_back(stats.compute_seconds);
  stats.steps_computed = 1;
  return stats;
}

// Tensor parallelism shards the layer's weights; its attention-core calls refuse, naming it.
template <Strategy kTp>
StrategyStats tp_forward(Communicator&, const TensorView&, const TensorView&, const TensorView&, const TensorView&,
                         const RowStatsView&, const StrategyOptions&) {
  fail("strategy ", strategy_name(kTp), " ", costs::tp_cannot_run({}, 1, {}, false));
}
template <Strategy kTp>
StrategyStats tp_backward(Communicator&, const TensorView&, const TensorView&, const TensorView&, const TensorView&,
                          const RowStatsView&, const TensorView&, const TensorView&, const TensorView&,
                          const TensorView&, const StrategyOptions&) {
  fail("strategy ", strategy_name(kTp), " ", costs::tp_cannot_run({}, 1, {}, false));
}

// The registry's signature over an algorithm that reads fewer options (the options slice to
// what it takes).
template <auto kFn>
StrategyStats forward_of(Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v,
                         const TensorView& out, const RowStatsView& lse, const StrategyOptions& o) {
  return kFn(comm, q, k, v, out, lse, o);
}
template <auto kFn>
StrategyStats backward_of(Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v,
                          const TensorView& out, const RowStatsView& lse, const TensorView& dout, const TensorView& dq,
                          const TensorView& dk, const TensorView& dv, const StrategyOptions& o) {
  return kFn(comm, q, k, v, out, lse, dout, dq, dk, dv, o);
}

// RingAttention's backward always passes K and V.
StrategyStats ring_backward(Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v,
                            const TensorView& out, const RowStatsView& lse, const TensorView& dout,
                            const TensorView& dq, const TensorView& dk, const TensorView& dv,
                            const StrategyOptions& o) {
  BurstOptions ring = o;
  ring.backward_scheme = BackwardScheme::kKeyValue;
  return burst_backward(comm, q, k, v, out, lse, dout, dq, dk, dv, ring);
}

using namespace costs;

// The registry, in the order of Strategy. Each entry: identity and help; layer only, reads
// the ring's options, what its backward moves; cannot_run; forward, backward; bytes,
// workspace, the layer's own collectives.
const StrategyInfo kStrategies[] = {
    {Strategy::kLocal, "local", "the single-rank kernel on one rank",
     false, false, "", local_cannot_run,
     local_forward, local_backward,
     no_bytes, local_workspace, no_layer_bytes},
    {Strategy::kBurst, "burst", "BurstAttention: K/V ring forward, query-bundle or K/V backward by byte cost",
     false, true, "", any_cannot_run,
     forward_of<burst_forward>, backward_of<burst_backward>,
     burst_bytes, burst_workspace, no_layer_bytes},
    {Strategy::kRing, "ring", "RingAttention: K/V ring forward, K/V-passing backward",
     false, true, "", any_cannot_run,
     forward_of<burst_forward>, ring_backward,
     ring_bytes, ring_workspace, no_layer_bytes},
    {Strategy::kRingRsa, "ring-rsa", "the paper's RingAttention baseline: materialised scores, K and V rings",
     false, false, "K, V, K rings + all-reduce", ring_rsa_cannot_run,
     forward_of<ring_rsa_forward>, backward_of<ring_rsa_backward>,
     ring_rsa_bytes, ring_rsa_workspace, no_layer_bytes},
    {Strategy::kUlysses, "ulysses", "DeepSpeed-Ulysses: all-to-all to head shards and back",
     false, false, "all-to-all", ulysses_cannot_run,
     forward_of<ulysses_forward>, backward_of<ulysses_backward>,
     ulysses_bytes, ulysses_workspace, no_layer_bytes},
    {Strategy::kUsp, "usp", "Ulysses inside groups x BurstAttention's ring across them",
     false, true, "all-to-all + ring", usp_cannot_run,
     forward_of<usp_forward>, backward_of<usp_backward>,
     usp_bytes, usp_workspace, no_layer_bytes},
    {Strategy::kAllGather, "allgather", "all-gather K/V, one kernel call, reduce-scatter dK/dV",
     false, false, "reduce-scatter", any_cannot_run,
     forward_of<allgather_forward>, backward_of<allgather_backward>,
     allgather_bytes, allgather_workspace, no_layer_bytes},
    {Strategy::kTpV1, "tp-v1", "Megatron tensor parallelism: heads split, Y and dX all-reduced (layer only)",
     true, false, "all-reduce", tp_cannot_run,
     tp_forward<Strategy::kTpV1>, tp_backward<Strategy::kTpV1>,
     no_bytes, local_workspace, tp_v1_layer_bytes},
    {Strategy::kTpV3, "tp-v3", "Megatron with sequence parallelism: X gathered, Y reduce-scattered (layer only)",
     true, false, "all-gather + reduce-scatter", tp_cannot_run,
     tp_forward<Strategy::kTpV3>, tp_backward<Strategy::kTpV3>,
     no_bytes, local_workspace, tp_v3_layer_bytes},
};

}  // namespace

std::span<const StrategyInfo> strategies() { return kStrategies; }

const StrategyInfo& strategy_info(Strategy strategy) {
  const StrategyInfo& info = kStrategies[static_cast<std::size_t>(strategy)];
  BURST_CHECK(info.strategy == strategy, "strategy registry: entry ", static_cast<int>(strategy), " out of order");
  return info;
}

const StrategyInfo& find_strategy(std::string_view name, std::string_view what) {
  std::string names;
  for (const StrategyInfo& s : kStrategies) {
    if (s.name == name) return s;
    names += (names.empty() ? "" : ", ") + std::string(s.name);
  }
  fail(what, ": expected one of ", names, ", got '", name, "'");
}

std::string strategy_name(Strategy strategy) { return std::string(strategy_info(strategy).name); }

Strategy parse_strategy(const std::string& text, const std::string& what) { return find_strategy(text, what).strategy; }

bool layer_only(Strategy strategy) { return strategy_info(strategy).layer_only; }

MeanBytes mean_bytes(Strategy strategy, const ProblemShape& shape, const std::vector<std::int64_t>& shard_lengths,
                     const StrategyOptions& options) {
  const StrategyInfo& info = strategy_info(strategy);
  const auto p = static_cast<double>(shard_lengths.size());
  MeanBytes m;
  for (int r = 0; r < static_cast<int>(shard_lengths.size()); ++r) {
    const StrategyBytes b = info.bytes(shape, shard_lengths, r, options);
    m.forward += static_cast<double>(b.forward);
    m.backward += static_cast<double>(b.backward);
    m.backward_bundle += static_cast<double>(b.backward_bundle);
    m.backward_trailing += static_cast<double>(b.backward_trailing);
    m.ring_forward += static_cast<double>(b.ring_forward);
    m.ring_bundle += static_cast<double>(b.ring_bundle);
    m.ring_trailing += static_cast<double>(b.ring_trailing);
  }
  for (double* x : {&m.forward, &m.backward, &m.backward_bundle, &m.backward_trailing, &m.ring_forward, &m.ring_bundle,
                    &m.ring_trailing})
    *x /= p;
  return m;
}

RankMemory rank_memory(Strategy strategy, const ProblemShape& shape, const std::vector<std::int64_t>& shard_lengths,
                       const StrategyOptions& options, const PassBytes& kernel) {
  BURST_CHECK(!shard_lengths.empty(), "rank_memory: expected a shard length per rank, got none");
  const double n = static_cast<double>(*std::max_element(shard_lengths.begin(), shard_lengths.end()));
  RankMemory m;
  m.inputs = costs::input_bytes(shape, n);
  m.outputs = costs::output_bytes(shape, n);
  m.workspace = strategy_info(strategy).workspace(shape, shard_lengths, options, kernel);
  return m;
}

StrategyStats strategy_forward(Strategy strategy, comm::Communicator& comm, const TensorView& q, const TensorView& k,
                               const TensorView& v, const TensorView& out, const RowStatsView& lse,
                               const StrategyOptions& options) {
  return strategy_info(strategy).forward(comm, q, k, v, out, lse, options);
}

StrategyStats strategy_backward(Strategy strategy, comm::Communicator& comm, const TensorView& q, const TensorView& k,
                                const TensorView& v, const TensorView& out, const RowStatsView& lse,
                                const TensorView& dout, const TensorView& dq, const TensorView& dk,
                                const TensorView& dv, const StrategyOptions& options) {
  return strategy_info(strategy).backward(comm, q, k, v, out, lse, dout, dq, dk, dv, options);
}

}  // namespace burst::algo
