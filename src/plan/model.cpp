#include "burst/plan.h"
#include "block_model.h"
#include "steps.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <tuple>

#include "burst/layout.h"
#include "burst/error.h"
#include "burst/kernels.h"

namespace burst::plan {
namespace {

// The layout a candidate runs: its own under a mask (causal, a window), contiguous without
// one (no mask: every layout gives every rank the same work).
algo::Layout layout_of(const Candidate& cand, const Workload& w) {
  return w.mask().masks_anything() ? cand.layout : algo::Layout::kContiguous;
}

std::vector<std::int64_t> shard_lengths(const Candidate& cand, const Workload& w, int ranks) {
  return algo::shard_lengths(w.seqlen, ranks, layout_of(cand, w));
}

// Time of one pass, split into its parts.
struct Pass {
  double seconds = 0, compute = 0, wire = 0;
  double inter_bytes = 0;
  void add_compute(double s) {
    seconds += s;
    compute += s;
  }
  // Not overlapped with anything (collectives).
  void add_blocking(double wire_seconds) {
    seconds += wire_seconds;
    wire += wire_seconds;
  }
};

// What one inter-node flow gets when `flows` ranks of its node send across at once: its own
// link (nics_per_node 0), or a share of the node's NICs.
Link inter_flow(const Cluster& c, int flows) {
  Link link = c.inter;
  if (c.nics_per_node > 0 && flows > c.nics_per_node) link.bandwidth *= static_cast<double>(c.nics_per_node) / flows;
  return link;
}

// The link a ring's slowest hop uses: with several nodes one hop per node crosses, and every
// step waits for it.
Link ring_link(const Cluster& c) { return c.nodes > 1 ? inter_flow(c, 1) : c.intra; }

// A ring whose step t computes for step_compute[t] seconds (its busiest rank's work, steps.h)
// and whose step transfer takes `step_wire` (steps 1 to `hops`, posted while the previous
// step computes; later steps receive nothing, their shards having stopped; -1: every step),
// plus a trailing transfer at the end.
void ring_pass(Pass& pass, const Cluster& c, const std::vector<double>& step_compute, double step_wire, double tail_wire,
               int hops = -1) {
  const auto last_hop = hops < 0 ? step_compute.size() - 1 : static_cast<std::size_t>(hops);
  const double compute = std::accumulate(step_compute.begin(), step_compute.end(), 0.0);
  const double wire = static_cast<double>(last_hop) * step_wire + tail_wire;
  double t = 0;
  if (c.overlap) {
    t = step_compute.front() + tail_wire;
    for (std::size_t i = 1; i < step_compute.size(); ++i)
      t += i <= last_hop ? std::max(step_compute[i], step_wire) : step_compute[i];
  } else {
    t = compute + wire;
  }
  pass.seconds += t;
  pass.compute += compute;
  pass.wire += wire;
}

// A ring of `steps` equal steps whose compute totals `compute`.
void ring_pass(Pass& pass, const Cluster& c, int steps, double compute, double step_wire, double tail_wire) {
  ring_pass(pass, c, std::vector<double>(static_cast<std::size_t>(steps), compute / steps), step_wire, tail_wire);
}

std::vector<double> as_doubles(const std::vector<std::int64_t>& v) { return {v.begin(), v.end()}; }

// Seconds of each step: its visible pairs x FLOPs per pair / rate.
std::vector<double> seconds_of(std::vector<double> pairs, double flops_per_pair, double rate) {
  for (double& x : pairs) x *= flops_per_pair / rate;
  return pairs;
}

// The double ring: I outer steps, each an L-step intra ring ([u][s]: seconds of intra step s
// of outer step u, its busiest rank's); the inter-node hop of the next outer step is posted at
// the start and hides behind the L intra steps.
void double_ring_pass(Pass& pass, const Cluster& c, const std::vector<std::vector<double>>& steps, double step_bytes,
                      double step_msgs, double tail_bytes) {
  const int nodes = c.nodes, local = c.ranks_per_node;
  // Every rank of a node sends its inter-node hop in the same outer step.
  const Link across = inter_flow(c, local);
  const double intra = c.intra.seconds(step_bytes, step_msgs), inter = across.seconds(step_bytes, step_msgs);
  double compute = 0, seconds = 0;
  for (int u = 0; u < nodes; ++u) {
    const std::vector<double>& cycle = steps[static_cast<std::size_t>(u)];
    double intra_cycle = cycle.front();
    for (int s = 1; s < local; ++s) {
      const double step = cycle[static_cast<std::size_t>(s)];
      intra_cycle += c.overlap ? std::max(step, intra) : step + intra;
    }
    compute += std::accumulate(cycle.begin(), cycle.end(), 0.0);
    const bool last = u + 1 == nodes;
    seconds += last ? intra_cycle : c.overlap ? std::max(intra_cycle, inter) : intra_cycle + inter;
  }
  const double tail = nodes > 1 ? across.seconds(tail_bytes, 1) : c.intra.seconds(tail_bytes, 1);
  pass.seconds += seconds + tail;
  pass.compute += compute;
  pass.wire += nodes * (local - 1) * intra + (nodes - 1) * inter + tail;
  pass.inter_bytes += (nodes - 1) * step_bytes + (nodes > 1 ? tail_bytes : 0);
}

// A collective of `bytes` per rank over every rank. Ring collectives (all-gather,
// reduce-scatter, all-reduce) wait on their slowest hop each step; pairwise exchanges (all-to-all,
// and the layer's all-to-allv gathers) send equal parts to every peer, each over its own link.
enum class Pattern { kRing, kPairwise };
void collective(Pass& pass, const Cluster& c, int ranks, int ranks_per_node, Pattern pattern, double bytes,
                double messages) {
  if (ranks <= 1 || bytes <= 0) return;
  const bool crosses = ranks > ranks_per_node;
  double wire = 0;
  // A ring collective has one crossing hop per node; pairwise exchanges cross from every rank.
  const Link across = inter_flow(c, pattern == Pattern::kRing ? 1 : ranks_per_node);
  if (pattern == Pattern::kRing || !crosses) {
    const Link& link = crosses ? across : c.intra;
    wire = link.seconds(bytes, messages);
    if (crosses) pass.inter_bytes += bytes * (static_cast<double>(ranks) / ranks_per_node) / ranks;
  } else {
    const double peers = ranks - 1, local = ranks_per_node - 1;
    const double intra_part = bytes * local / peers, inter_part = bytes - intra_part;
    wire = c.intra.seconds(intra_part, messages * local / peers) + across.seconds(inter_part, messages * (peers - local) / peers);
    pass.inter_bytes += inter_part;
  }
  pass.add_blocking(wire);
}

double visible(const Workload& w) {
  kernels::AttentionOptions o;
  o.mask = w.mask();
  return kernels::visible_fraction(w.seqlen, w.seqlen, o);
}

// Everything one layer (or the attention core) of a strategy does, per rank.
struct LayerCost {
  Pass forward, backward;
  double forward_bytes = 0, backward_bytes = 0;
};

// The registry's options the planner runs a candidate with.
algo::StrategyOptions options_of(const Candidate& cand, const ModelShape& m, const Cluster& c) {
  algo::StrategyOptions o;
  o.double_ring = cand.double_ring;
  if (cand.strategy == algo::Strategy::kUsp) o.ulysses_degree = cand.ulysses_degree > 0 ? cand.ulysses_degree : usp_degree(m, c);
  return o;
}

// The attention core as the registry sees it: the model's heads, or a rank's under tensor
// parallelism (which runs its heads over every token).
algo::ProblemShape core_shape(const Candidate& cand, const ModelShape& m, const Workload& w, int ranks) {
  const bool tp = algo::layer_only(cand.strategy);
  algo::ProblemShape s;
  s.batch = w.batch;
  const algo::HeadShard heads = tp ? algo::tensor_parallel_heads(m.layer(), ranks, 0) : algo::all_heads(m.layer());
  s.n_heads_q = heads.q_count;
  s.n_heads_kv = heads.kv_count;
  s.head_dim = m.head_dim;
  s.element_bytes = w.element_bytes;
  s.output_bytes = w.output_bytes;
  return s;
}

// pair_work is O(P^2); a table of strategies at one length asks for the same few layouts. The
// reference holds until the next call on this thread.
const PairWork& cached_pair_work(algo::Layout layout, std::int64_t seqlen, int ranks, const kernels::MaskSpec& mask) {
  using Key = std::tuple<algo::Layout, std::int64_t, int, bool, std::int64_t, std::int64_t>;
  thread_local std::map<Key, PairWork> cache;
  const Key key{layout, seqlen, ranks, mask.causal, mask.window_left, mask.window_right};
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  if (cache.size() >= 16) cache.clear();
  return cache.emplace(key, pair_work(layout, seqlen, ranks, mask)).first->second;
}

// Partially masked tiles, cached like cached_pair_work (O(P N / tile x log)).
const PairWork& cached_partial_tiles(algo::Layout layout, std::int64_t seqlen, int ranks, const kernels::MaskSpec& mask,
                                     int rows, int cols) {
  using Key = std::tuple<algo::Layout, std::int64_t, int, bool, std::int64_t, std::int64_t, int, int>;
  thread_local std::map<Key, PairWork> cache;
  const Key key{layout, seqlen, ranks, mask.causal, mask.window_left, mask.window_right, rows, cols};
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  if (cache.size() >= 16) cache.clear();
  return cache.emplace(key, partial_tiles(layout, seqlen, ranks, mask, rows, cols)).first->second;
}

// The attention core's passes on one rank.
void core_cost(const Candidate& cand, const Cluster& c, const ModelShape& m, const Workload& w,
               const std::vector<std::int64_t>& lengths, LayerCost& cost) {
  const int p = c.ranks();
  const double b = static_cast<double>(w.batch), n_total = static_cast<double>(w.seqlen);
  const double hq = static_cast<double>(m.heads), d = static_cast<double>(m.head_dim);
  const double share = c.rank_share();
  // A masked call on a cluster with a tile model: full tiles at the full rate and each
  // partially masked tile's extra (Cluster::masked_tile_forward); else one rate for the mask.
  const bool tiled = c.tile_rows > 0 && w.mask().masks_anything();
  const bool causal_rates =
      !tiled && w.causal && c.attention_forward_flops_causal > 0 && c.attention_backward_flops_causal > 0;
  const double fwd_rate = (causal_rates ? c.attention_forward_flops_causal : c.attention_forward_flops) * share;
  const double bwd_rate = (causal_rates ? c.attention_backward_flops_causal : c.attention_backward_flops) * share;
  // Counted FLOPs of this rank's share of the whole problem, run as one call per head over
  // every token (Ulysses, tensor parallelism); with the tile model, the call's partially
  // masked tiles added.
  const double flops = 4.0 * b * hq * n_total * n_total * d * visible(w) / p;
  double fwd = flops / fwd_rate, bwd = 2.5 * flops / bwd_rate;
  if (tiled) {
    const double edges =
        cached_partial_tiles(algo::Layout::kContiguous, w.seqlen, 1, w.mask(), c.tile_rows, c.tile_cols).total() *
        4.0 * b * hq * d / p;
    fwd += c.masked_tile_forward * edges / fwd_rate;
    bwd += 2.5 * c.masked_tile_backward * edges / bwd_rate;
  }

  const algo::StrategyOptions options = options_of(cand, m, c);
  // Every rank's bytes, averaged as the library's reports average them.
  const algo::MeanBytes mean = algo::mean_bytes(cand.strategy, core_shape(cand, m, w, p), lengths, options);
  const double fsum = mean.forward, bsum = mean.backward, bundle = mean.backward_bundle, trailing = mean.backward_trailing;
  cost.forward_bytes += fsum;
  cost.backward_bytes += bsum;
  const int l = c.ranks_per_node;

  // The rings' work step by step under the candidate's layout (steps.h): a step takes its
  // busiest rank's time. FLOPs of one visible (query, key) pair over every head.
  const algo::Layout layout = layout_of(cand, w);
  const double pair_flops = 4.0 * b * hq * d;
  auto work = [&]() -> const PairWork& { return cached_pair_work(layout, w.seqlen, p, w.mask()); };
  // What the kernels compute between every two ranks' shards, in pairs at the full rate, for
  // the forward and the backward: the visible pairs without the tile model.
  std::optional<PairWork> tiled_forward, tiled_backward;
  auto kernel_work = [&](bool backward) -> const PairWork& {
    if (!tiled) return work();
    std::optional<PairWork>& slot = backward ? tiled_backward : tiled_forward;
    if (!slot) {
      slot = tile_weighted(work(), cached_partial_tiles(layout, w.seqlen, p, w.mask(), c.tile_rows, c.tile_cols),
                           backward ? c.masked_tile_backward : c.masked_tile_forward);
    }
    return *slot;
  };
  // The backward's travelling side: the ring always moves K and V; burst as the library's
  // automatic scheme chooses.
  const Travelling backward_travels =
      cand.strategy == algo::Strategy::kRing ||
              algo::choose_scheme(layout, lengths, w.batch, m.heads, m.kv_heads, m.head_dim, w.element_bytes) ==
                  algo::BackwardScheme::kKeyValue
          ? Travelling::kKeys
          : Travelling::kQueries;

  switch (cand.strategy) {
    case algo::Strategy::kBurst:
    case algo::Strategy::kRing: {
      const PairWork& pairs = work();
      if (cand.double_ring) {
        auto seconds = [&](const PairWork& kernels, Travelling t, double flops_per_pair, double rate) {
          std::vector<std::vector<double>> steps = double_ring_steps(kernels, c.nodes, l, t);
          for (auto& cycle : steps) cycle = seconds_of(std::move(cycle), flops_per_pair, rate);
          return steps;
        };
        double_ring_pass(cost.forward, c, seconds(kernel_work(false), Travelling::kKeys, pair_flops, fwd_rate),
                         p > 1 ? fsum / (p - 1) : 0, 1, 0);
        if (w.backward) {
          double_ring_pass(cost.backward, c, seconds(kernel_work(true), backward_travels, 2.5 * pair_flops, bwd_rate),
                           p > 1 ? bundle / (p - 1) + trailing / p : 0, 2, p > 1 ? trailing / p : 0);
        }
        break;
      }
      const Link link = ring_link(c);
      const double share_inter = c.nodes > 1 ? static_cast<double>(c.nodes) / p : 0.0;
      // Shards stop where no later rank needs them (a causal contiguous layout): fewer bytes
      // than the registry's unmasked figures, and no transfer after the last hop.
      const RingSends sent = ring_sends(last_steps(pairs, Travelling::kKeys), last_steps(pairs, backward_travels),
                                        as_doubles(lengths), fsum, bundle, trailing);
      cost.forward_bytes += sent.forward - fsum;
      ring_pass(cost.forward, c, seconds_of(ring_steps(kernel_work(false), Travelling::kKeys), pair_flops, fwd_rate),
                p > 1 ? link.seconds(fsum / (p - 1), 1) : 0, 0, sent.forward_hops);
      cost.forward.inter_bytes += sent.forward * share_inter;
      if (w.backward) {
        const double step = p > 1 ? link.seconds(bundle / (p - 1) + trailing / p, 2) : 0;
        ring_pass(cost.backward, c, seconds_of(ring_steps(kernel_work(true), backward_travels), 2.5 * pair_flops, bwd_rate),
                  step,
                  sent.backward_hops > 0 ? link.seconds(trailing / p, 1) : 0, sent.backward_hops);
        cost.backward_bytes += sent.bundle + sent.trailing - bsum;
        cost.backward.inter_bytes += (sent.bundle + sent.trailing) * share_inter;
      }
      break;
    }
    case algo::Strategy::kRingRsa: {
      // Materialised scores: Q K^T and P V as plain GEMMs over every key (no mask skipping),
      // and the score rows [b, h, n, N] fp32 streamed through memory: written by the K pass,
      // read and written by the softmax, read by the V pass.
      // Measured rates (calibration) cover both; without them the GEMMs run at the GEMM rate
      // and the score passes at the memory bandwidth.
      const bool measured = c.ring_rsa_forward_flops > 0 && c.ring_rsa_backward_flops > 0;
      const double gemm = c.gemm_flops * share;
      const double full = 4.0 * b * hq * n_total * n_total * d / p;
      const double scores = b * hq * (n_total / p) * n_total * sizeof(float);
      const double mem = measured ? 0.0 : scores / (c.memory_bandwidth * share);
      const double half_pass = measured ? full / 2 / (c.ring_rsa_forward_flops * share) : full / 2 / gemm + mem;
      const Link link = ring_link(c);
      const double half = p > 1 ? link.seconds(fsum / 2 / (p - 1), 1) : 0;
      ring_pass(cost.forward, c, p, half_pass, half, 0);  // K pass: S = Q K^T
      if (!measured) cost.forward.add_compute(2 * mem);  // softmax in place
      ring_pass(cost.forward, c, p, half_pass, half, 0);  // V pass: O = P V
      if (c.nodes > 1) cost.forward.inter_bytes += fsum * c.nodes / p;
      if (w.backward) {
        // K (scores again), V (dP) and K (dQ) passes, then dK and dV all-reduced.
        const double third = measured ? 2.5 * full / 3 / (c.ring_rsa_backward_flops * share)
                                      : 2.5 * full / gemm / 3 + 2 * mem;
        const double step = p > 1 ? link.seconds(bundle / 3 / (p - 1), 1) : 0;
        for (int pass = 0; pass < 3; ++pass) ring_pass(cost.backward, c, p, third, step, 0);
        collective(cost.backward, c, p, l, Pattern::kRing, trailing, 4.0 * (p - 1));
        if (c.nodes > 1) cost.backward.inter_bytes += bundle * c.nodes / p;
      }
      break;
    }
    case algo::Strategy::kAllGather: {
      // One kernel call over every key: the busiest rank's queries set the time.
      collective(cost.forward, c, p, l, Pattern::kRing, fsum, p - 1);
      cost.forward.add_compute(busiest_rank(kernel_work(false)) * pair_flops / fwd_rate);
      if (w.backward) {
        collective(cost.backward, c, p, l, Pattern::kRing, bundle, p - 1);
        cost.backward.add_compute(busiest_rank(kernel_work(true)) * 2.5 * pair_flops / bwd_rate);
        collective(cost.backward, c, p, l, Pattern::kRing, trailing, p - 1);
      }
      break;
    }
    case algo::Strategy::kUlysses: {
      // Sequence shards to head shards, one kernel over the whole sequence, and back.
      collective(cost.forward, c, p, l, Pattern::kPairwise, fsum, 2.0 * (p - 1));
      cost.forward.add_compute(fwd);
      if (w.backward) {
        collective(cost.backward, c, p, l, Pattern::kPairwise, bsum, 2.0 * (p - 1));
        cost.backward.add_compute(bwd);
      }
      break;
    }
    case algo::Strategy::kUsp: {
      // The group all-to-alls and the ring over the groups, timed apart (the registry's
      // ring_* figures are the ring's share).
      const int u = options.ulysses_degree, groups = p / u;
      const double ring_f = mean.ring_forward, ring_bundle = mean.ring_bundle, ring_tail = mean.ring_trailing;
      const double ring_b = ring_bundle + ring_tail;
      const bool group_in_node = u <= l;
      Cluster group_view = c;  // the group's all-to-all stays inside a node when it fits
      if (group_in_node) group_view.nodes = 1;
      collective(cost.forward, group_view, u, std::min(u, l), Pattern::kPairwise, fsum - ring_f, 2.0 * (u - 1));
      // Ring members r, r + U, ... lie on different nodes when P > L; the node's U rings
      // then all cross at every step.
      const Link link = p > l ? inter_flow(c, std::min(u, l)) : c.intra;
      // The ring across groups: a member computes 1 / U of its two groups' pairs.
      const PairWork groups_work = group_work(work(), u);
      std::vector<double> group_tokens(static_cast<std::size_t>(groups), 0.0);
      for (int r = 0; r < p; ++r) group_tokens[static_cast<std::size_t>(r / u)] += static_cast<double>(lengths[static_cast<std::size_t>(r)]);
      const RingSends sent = ring_sends(last_steps(groups_work, Travelling::kKeys), last_steps(groups_work, backward_travels),
                                        group_tokens, ring_f, ring_bundle, ring_tail);
      cost.forward_bytes += sent.forward - ring_f;
      ring_pass(cost.forward, c,
                seconds_of(ring_steps(tiled ? group_work(kernel_work(false), u) : groups_work, Travelling::kKeys),
                           pair_flops / u, fwd_rate),
                groups > 1 ? link.seconds(ring_f / (groups - 1), 1) : 0, 0, sent.forward_hops);
      if (w.backward) {
        collective(cost.backward, group_view, u, std::min(u, l), Pattern::kPairwise, bsum - ring_b, 2.0 * (u - 1));
        const double step = groups > 1 ? link.seconds(ring_bundle / (groups - 1) + ring_tail / groups, 2) : 0;
        ring_pass(cost.backward, c,
                  seconds_of(ring_steps(tiled ? group_work(kernel_work(true), u) : groups_work, backward_travels),
                             2.5 * pair_flops / u, bwd_rate),
                  step, sent.backward_hops > 0 ? link.seconds(ring_tail / groups, 1) : 0, sent.backward_hops);
        cost.backward_bytes += sent.bundle + sent.trailing - ring_b;
      }
      if (p > l) {
        cost.forward.inter_bytes += sent.forward;
        cost.backward.inter_bytes += w.backward ? sent.bundle + sent.trailing : 0;
      }
      break;
    }
    case algo::Strategy::kLocal:
    case algo::Strategy::kTpV1:
    case algo::Strategy::kTpV3:
      // Local attention over the whole sequence for this rank's heads.
      cost.forward.add_compute(fwd);
      if (w.backward) cost.backward.add_compute(bwd);
      break;
  }
}

// Parameters of one layer (attention and MLP) and of the embeddings.
double layer_parameters(const ModelShape& m, bool with_mlp) {
  const double dim = static_cast<double>(m.model_dim), hd = static_cast<double>(m.head_dim);
  const double attention = dim * static_cast<double>(2 * m.heads + 2 * m.kv_heads) * hd;
  return attention + (with_mlp ? 3.0 * dim * static_cast<double>(m.mlp_dim) : 0.0);
}

double sum(const std::vector<algo::MemoryPart>& parts) {
  double total = 0;
  for (const algo::MemoryPart& part : parts) total += part.bytes;
  return total;
}

// Per-rank memory: the registry's figures for the core and the layer; for the whole model,
// its weights, K/V cache and activations around one layer's core. The kernels' scratch is
// per tile and left out (small next to the rest, and the GPUs' own).
double memory_estimate(const Candidate& cand, const Cluster& c, const ModelShape& m, const Workload& w,
                       const std::vector<std::int64_t>& lengths) {
  const int p = c.ranks();
  const bool tp = algo::layer_only(cand.strategy);
  const algo::StrategyOptions options = options_of(cand, m, c);
  if (w.scope == Scope::kBlock) return block_figures(cand.strategy, m, w, lengths, options).memory;
  if (w.scope == Scope::kLayer) {
    const algo::LayerMemory l = algo::layer_memory(cand.strategy, m.layer(), w.batch, lengths,
                                                   w.element_bytes == 2 ? DType::kBF16 : DType::kF32, w.backward,
                                                   options, {});
    return l.parameters + std::max(sum(l.forward), sum(l.backward));
  }
  // The core on this rank: its shards (tensor parallelism: its heads over every token).
  const algo::ProblemShape shape = core_shape(cand, m, w, p);
  const algo::RankMemory core = algo::rank_memory(cand.strategy, shape, tp ? std::vector<std::int64_t>{w.seqlen} : lengths,
                                                  options, {});
  if (w.scope == Scope::kCore) return core.peak(w.backward);

  // The whole model. Rows and heads this rank's activations hold.
  const double b = static_cast<double>(w.batch), big_n = static_cast<double>(w.seqlen);
  const double n = static_cast<double>(*std::max_element(lengths.begin(), lengths.end()));
  const double d = static_cast<double>(m.head_dim), dim = static_cast<double>(m.model_dim);
  const double e = static_cast<double>(w.element_bytes), f = static_cast<double>(m.mlp_dim);
  const double rows = tp ? big_n : n;
  const double hq_r = static_cast<double>(shape.n_heads_q), g_r = static_cast<double>(shape.n_heads_kv);
  const double f_r = tp ? f / p : f;
  const double x_rows = cand.strategy == algo::Strategy::kTpV3 ? big_n + n : rows;  // tp-v3 keeps the gathered X
  // Weights (tensor parallelism splits them, embeddings included).
  const double layers = m.layers;
  const double params = layers * layer_parameters(m, true) + 2.0 * static_cast<double>(m.vocab) * dim;
  const double a = static_cast<double>(w.activation_bytes);
  const double qkv = b * rows * (hq_r + 2 * g_r) * d * e + b * rows * hq_r * d * e;
  const double mlp = 3 * b * rows * f_r * a;
  const double x = b * x_rows * dim * a + b * rows * dim * a;
  if (!w.backward) {
    // First-token inference: the K/V cache of every layer, one layer's activations at a time.
    const double weights = params * static_cast<double>(w.weight_bytes) / (tp ? p : 1);
    const double cache = layers * 2 * b * rows * g_r * d * e;
    return weights + cache + x + std::max(qkv + core.workspace.forward, qkv + mlp);
  }
  // Training: fp32 weights and gradients (no optimizer state), every layer's saved
  // activations, one layer's backward buffers (the core's gradients: dO, dq, dk, dv).
  const double weights = 2 * 4 * params / (tp ? p : 1);
  const double saved_layer = x + qkv + b * rows * 4 * hq_r + b * rows * (3 * f_r) * a;
  const double core_grads = core.inputs.backward - core.inputs.forward + core.outputs.backward - core.outputs.forward;
  return weights + layers * saved_layer + core.workspace.forward + core_grads + core.workspace.backward;
}

// One transformer block beyond its attention core (burst run --block): the projections' and
// the MLP's GEMMs, the attention layer's and the MLP's collectives (tp-v3's gathers pairwise,
// the all-reduces as rings, none hidden) and the weight-gradient all-reduces, in fp32.
void block_cost(const Candidate& cand, const Cluster& c, const ModelShape& m, const Workload& w,
                const std::vector<std::int64_t>& lengths, LayerCost& cost) {
  const int p = c.ranks(), l = c.ranks_per_node;
  const BlockFigures f = block_figures(cand.strategy, m, w, lengths, options_of(cand, m, c));
  const double rate = c.gemm_flops * c.rank_share();
  cost.forward.add_compute(f.gemm_flops / rate);
  const Pattern pattern = cand.strategy == algo::Strategy::kTpV3 ? Pattern::kPairwise : Pattern::kRing;
  for (const double bytes : {f.layer_forward, f.mlp_forward}) collective(cost.forward, c, p, l, pattern, bytes, 2.0 * (p - 1));
  cost.forward_bytes += f.layer_forward + f.mlp_forward;
  if (!w.backward) return;
  cost.backward.add_compute(2 * f.gemm_flops / rate);
  for (const double bytes : {f.layer_backward, f.mlp_backward}) collective(cost.backward, c, p, l, pattern, bytes, 2.0 * (p - 1));
  collective(cost.backward, c, p, l, Pattern::kRing, f.grads, 2.0 * (p - 1));
  cost.backward_bytes += f.layer_backward + f.mlp_backward + f.grads;
}

}  // namespace

Cluster at_speed(Cluster c, double speed) {
  BURST_CHECK(speed > 0 && std::isfinite(speed), "speed: expected a positive number, got ", speed);
  for (double* rate : {&c.attention_forward_flops, &c.attention_backward_flops, &c.attention_forward_flops_causal,
                       &c.attention_backward_flops_causal, &c.gemm_flops, &c.ring_rsa_forward_flops,
                       &c.ring_rsa_backward_flops})
    *rate *= speed;
  return c;
}

int Cluster::threads_per_rank() const { return std::max(1, compute_slots / std::max(1, ranks_per_node)); }

double Cluster::rank_share() const {
  const int threads = threads_per_rank();
  const double busy = static_cast<double>(threads) * ranks_per_node;
  if (busy <= compute_slots) return threads;
  return threads * (compute_slots / busy) * shared_slot_efficiency;
}

std::string scope_name(Scope scope) {
  switch (scope) {
    case Scope::kCore: return "core";
    case Scope::kLayer: return "layer";
    case Scope::kModel: return "model";
    case Scope::kBlock: return "block";
  }
  return "?";
}

Scope parse_scope(const std::string& text, const std::string& what) {
  for (Scope scope : {Scope::kCore, Scope::kLayer, Scope::kModel, Scope::kBlock})
    if (scope_name(scope) == text) return scope;
  fail(what, ": expected core, layer or model (or block: transformer blocks), got '", text, "'");
}

Workload make_workload(std::int64_t batch, bool causal, bool backward, Scope scope, DType dtype) {
  Workload w;
  w.batch = batch;
  w.causal = causal;
  w.backward = backward;
  w.scope = scope;
  w.element_bytes = w.weight_bytes = dtype_size(dtype);
  const bool fp32_rows = scope == Scope::kLayer || scope == Scope::kBlock;  // the library's layer and block
  w.output_bytes = w.activation_bytes = fp32_rows ? sizeof(float) : dtype_size(dtype);
  return w;
}

// The planner's candidates: the registry's distributed strategies, and the double ring.
const std::vector<Candidate>& candidates() {
  static const std::vector<Candidate> all = {
      {algo::Strategy::kBurst, false, 0},     {algo::Strategy::kBurst, true, 0},   {algo::Strategy::kRing, false, 0},
      {algo::Strategy::kRingRsa, false, 0},   {algo::Strategy::kUlysses, false, 0}, {algo::Strategy::kUsp, false, 0},
      {algo::Strategy::kAllGather, false, 0}, {algo::Strategy::kTpV1, false, 0},   {algo::Strategy::kTpV3, false, 0}};
  return all;
}

std::vector<algo::Layout> planned_layouts() {
  return {algo::Layout::kZigzag, algo::Layout::kStriped, algo::Layout::kContiguous};
}

bool layout_matters(algo::Strategy strategy) {
  return strategy == algo::Strategy::kBurst || strategy == algo::Strategy::kRing || strategy == algo::Strategy::kUsp ||
         strategy == algo::Strategy::kAllGather;
}

std::string Candidate::name() const {
  std::string n = algo::strategy_name(strategy);
  if (double_ring) n += "-double";
  if (ulysses_degree > 0) {
    n += ':';
    n += std::to_string(ulysses_degree);
  }
  if (layout != algo::Layout::kZigzag) {
    n += '@';
    n += algo::layout_name(layout);
  }
  return n;
}

algo::Layout parse_planned_layout(const std::string& text, const std::string& what) {
  const std::vector<algo::Layout> planned = planned_layouts();
  std::string names;
  for (algo::Layout l : planned) {
    if (!names.empty()) names += '|';
    names += algo::layout_name(l);
  }
  const auto it = std::find_if(planned.begin(), planned.end(), [&](algo::Layout l) { return algo::layout_name(l) == text; });
  if (it == planned.end()) fail(what, ": expected a layout the planner models, ", names, ", got '", text, "'");
  return *it;
}

std::vector<Candidate> with_layout(std::vector<Candidate> choices, algo::Layout layout) {
  for (Candidate& cand : choices)
    if (layout_matters(cand.strategy)) cand.layout = layout;
  return choices;
}

Candidate parse_candidate(const std::string& text, const std::string& what) {
  // strategy[@layout]
  if (const std::size_t at = text.find('@'); at != std::string::npos) {
    Candidate c = parse_candidate(text.substr(0, at), what);
    std::string named = what;
    named += ": '";
    named += text;
    named += '\'';
    c.layout = parse_planned_layout(text.substr(at + 1), named);
    if (!layout_matters(c.strategy))
      fail(named, ": ", algo::strategy_name(c.strategy), "'s work does not depend on the layout");
    return c;
  }
  if (text.rfind("usp:", 0) == 0) {
    const std::string digits = text.substr(4);
    int u = 0;
    if (!digits.empty() && digits.size() < 7 && digits.find_first_not_of("0123456789") == std::string::npos)
      u = std::stoi(digits);
    if (u < 2) fail(what, ": usp:U takes a Ulysses degree U >= 2, got '", text, "'");
    return Candidate{algo::Strategy::kUsp, false, u};
  }
  std::string names;
  for (const Candidate& c : candidates()) {
    if (c.name() == text) return c;
    if (!names.empty()) names += '|';
    names += c.name();
  }
  fail(what, ": expected ", names, ", got '", text, "'");
}

std::vector<Candidate> with_ulysses_degrees(const std::vector<Candidate>& choices, const ModelShape& m, const Cluster& c) {
  std::vector<Candidate> out;
  for (const Candidate& cand : choices) {
    if (cand.strategy != algo::Strategy::kUsp || cand.ulysses_degree > 0) {
      out.push_back(cand);
      continue;
    }
    for (int u = 2; u <= c.ranks() / 2; ++u)
      if (c.ranks() % u == 0 && m.heads % u == 0 && m.kv_heads % u == 0) out.push_back({algo::Strategy::kUsp, false, u});
  }
  return out;
}

std::vector<Candidate> with_layouts(const std::vector<Candidate>& choices, bool masked) {
  std::vector<Candidate> out;
  for (const Candidate& cand : choices) {
    if (!masked || !layout_matters(cand.strategy)) {
      out.push_back(cand);
      continue;
    }
    for (algo::Layout l : planned_layouts()) {
      Candidate c = cand;
      c.layout = l;
      if (std::find(out.begin(), out.end(), c) == out.end()) out.push_back(c);
    }
  }
  return out;
}

int usp_degree(const ModelShape& m, const Cluster& c) {
  int best = 1;
  for (int u = 2; u <= c.ranks(); ++u) {
    if (c.ranks() % u == 0 && m.heads % u == 0 && m.kv_heads % u == 0 && c.ranks_per_node % u == 0) best = u;
  }
  return best;
}

std::string infeasible_reason(const Candidate& cand, const ModelShape& m, const Cluster& c, Scope scope) {
  const int p = c.ranks();
  const algo::StrategyOptions options = options_of(cand, m, c);
  if (cand.strategy == algo::Strategy::kUsp && options.ulysses_degree == 1)
    return "no Ulysses group size > 1 divides the heads and a node";
  algo::ProblemShape shape;
  shape.n_heads_q = m.heads;
  shape.n_heads_kv = m.kv_heads;
  const std::string why = algo::strategy_info(cand.strategy).cannot_run(shape, p, options, scope != Scope::kCore);
  if (!why.empty()) return why;
  if (scope == Scope::kBlock) {
    const std::string block = block_infeasible(cand.strategy, m, p, options);
    if (!block.empty()) return block;
  }
  if (cand.double_ring && c.nodes == 1) return "one node: the double ring is the single ring";
  return "";
}

Prediction predict(const Candidate& cand, const Cluster& c, const ModelShape& m, const Workload& w) {
  Prediction pr;
  pr.candidate = cand;
  pr.infeasible = infeasible_reason(cand, m, c, w.scope);
  const int p = c.ranks();
  BURST_CHECK(w.seqlen >= p, "--seqlen: ", w.seqlen, " tokens cannot shard over ", p, " ranks");
  if (!pr.infeasible.empty()) return pr;
  const std::vector<std::int64_t> lengths = shard_lengths(cand, w, p);
  const int l = c.ranks_per_node;
  const bool tp = algo::layer_only(cand.strategy);

  LayerCost layer;
  core_cost(cand, c, m, w, lengths, layer);

  if (w.scope == Scope::kBlock) {
    block_cost(cand, c, m, w, lengths, layer);
  } else if (w.scope != Scope::kCore) {
    // Projections (and the MLP for the whole model) as GEMMs over this rank's rows and heads.
    const double b = static_cast<double>(w.batch), big_n = static_cast<double>(w.seqlen);
    const double rows = tp ? big_n : big_n / p;
    const algo::ProblemShape heads = core_shape(cand, m, w, p);
    const double hq_r = static_cast<double>(heads.n_heads_q), g_r = static_cast<double>(heads.n_heads_kv);
    const double dim = static_cast<double>(m.model_dim), d = static_cast<double>(m.head_dim);
    double gemm = 2 * b * rows * dim * (hq_r + 2 * g_r) * d + 2 * b * rows * hq_r * d * dim;
    const bool mlp = w.scope == Scope::kModel && m.mlp_dim > 0;
    if (mlp) gemm += 6 * b * rows * dim * static_cast<double>(m.mlp_dim) / (tp ? p : 1);
    const double rate = c.gemm_flops * c.rank_share();
    layer.forward.add_compute(gemm / rate);
    if (w.backward) layer.backward.add_compute(2 * gemm / rate);

    // The layer's own collectives (tensor parallelism: twice per layer with the MLP block,
    // whose input and output have X's shape) and the weight-gradient all-reduce.
    const algo::LayerShape shape = m.layer();
    double lf = 0, lb = 0, grads = 0;
    for (int r = 0; r < p; ++r) {
      const algo::LayerTraffic t = algo::expected_layer_traffic(cand.strategy, shape, w.batch, lengths, r);
      lf += static_cast<double>(t.forward);
      lb += static_cast<double>(t.backward);
      grads += static_cast<double>(t.grads);
    }
    // The library's layer is fp32 (expected_layer_traffic counts 4-byte rows); the model's
    // activations travel in their own dtype. Weight gradients stay fp32.
    const double activation_scale = static_cast<double>(w.activation_bytes) / sizeof(float);
    lf *= activation_scale / p;
    lb *= activation_scale / p;
    grads /= p;
    const double blocks = mlp ? 2 : 1;
    // tp-v3's gathers and scatters go to every peer at once (all-to-allv).
    const Pattern pattern = cand.strategy == algo::Strategy::kTpV3 ? Pattern::kPairwise : Pattern::kRing;
    for (int i = 0; i < static_cast<int>(blocks); ++i) {
      collective(layer.forward, c, p, l, pattern, lf, 2.0 * (p - 1));
      if (w.backward) collective(layer.backward, c, p, l, pattern, lb, 2.0 * (p - 1));
    }
    layer.forward_bytes += blocks * lf;
    if (w.backward) {
      layer.backward_bytes += blocks * lb;
      if (mlp && !tp) {
        const auto mlp_weights = static_cast<std::uint64_t>(3 * m.model_dim * m.mlp_dim);
        grads += static_cast<double>(comm::all_reduce_bytes(mlp_weights, sizeof(float), p));
      }
      collective(layer.backward, c, p, l, Pattern::kRing, grads, 2.0 * (p - 1));
      layer.backward_bytes += grads;
    }
  }
  if (!w.backward) layer.backward_bytes = 0;

  const double layers = w.scope == Scope::kModel || w.scope == Scope::kBlock ? m.layers : 1;
  pr.forward_seconds = layers * layer.forward.seconds;
  pr.backward_seconds = layers * layer.backward.seconds;
  pr.compute_seconds = layers * (layer.forward.compute + layer.backward.compute);
  pr.comm_seconds = layers * (layer.forward.wire + layer.backward.wire);
  pr.exposed_seconds = pr.seconds() - pr.compute_seconds;
  pr.forward_bytes = layers * layer.forward_bytes;
  pr.backward_bytes = layers * layer.backward_bytes;
  pr.inter_bytes = layers * (layer.forward.inter_bytes + layer.backward.inter_bytes);
  pr.memory_bytes = memory_estimate(cand, c, m, w, lengths);
  pr.out_of_memory = c.memory_bytes > 0 && pr.memory_bytes > c.memory_bytes;
  return pr;
}

int recommend(const std::vector<Prediction>& predictions) {
  int best = -1;
  for (std::size_t i = 0; i < predictions.size(); ++i) {
    const Prediction& p = predictions[i];
    if (!p.runs()) continue;
    if (best < 0) {
      best = static_cast<int>(i);
      continue;
    }
    const Prediction& q = predictions[static_cast<std::size_t>(best)];
    const double bytes_p = p.forward_bytes + p.backward_bytes, bytes_q = q.forward_bytes + q.backward_bytes;
    // Within 0.5% counts as a tie, decided by bytes (less traffic, less risk).
    const bool faster = p.seconds() < q.seconds() * 0.995;
    const bool tie = !faster && p.seconds() <= q.seconds() * 1.005;
    if (faster || (tie && bytes_p < bytes_q)) best = static_cast<int>(i);
  }
  return best;
}

std::vector<Row> predict_all(const Cluster& c, const ModelShape& m, const Workload& base,
                             const std::vector<std::int64_t>& seqlens, const std::vector<Candidate>& cands) {
  std::vector<Row> rows;
  for (std::int64_t s : seqlens) {
    Workload w = base;
    w.seqlen = s;
    Row row;
    row.seqlen = s;
    for (const Candidate& cand : cands) row.predictions.push_back(predict(cand, c, m, w));
    row.best = recommend(row.predictions);
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace burst::plan
