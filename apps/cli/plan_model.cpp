#include "plan_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "burst/layout.h"
#include "burst/error.h"
#include "burst/kernels.h"

namespace burst::cli::plan {
namespace {

using u64 = std::uint64_t;

u64 as_u64(std::int64_t x) { return static_cast<u64>(x); }

// Ring all-reduce of `count` floats over `ranks` ranks, as the communicators run it
// (reduce-scatter + all-gather of ceil(count / ranks) chunks).
u64 all_reduce_bytes(u64 count, int ranks) {
  if (ranks <= 1 || count == 0) return 0;
  const auto p = static_cast<u64>(ranks);
  return 2 * (p - 1) * ((count + p - 1) / p) * sizeof(float);
}

// A ring's sends: the shard of every origin but the last passes on (P - 1 hops); a trailing
// accumulator of every origin moves P times (the last hop takes it home).
struct RingSends {
  u64 forward = 0, bundle = 0, trailing = 0;
};
RingSends ring_sends(int ranks, int me, const std::vector<u64>& tokens, u64 hq, u64 hkv, u64 d, u64 e,
                     algo::BackwardScheme scheme) {
  RingSends s;
  for (int t = 0; t < ranks; ++t) {
    const u64 n = tokens[static_cast<std::size_t>((me - t + ranks) % ranks)];
    if (t + 1 < ranks) s.forward += n * 2 * hkv * d * e;
    if (scheme == algo::BackwardScheme::kQuery) {
      if (t + 1 < ranks) s.bundle += n * hq * (2 * d * e + 8);
      if (ranks > 1) s.trailing += n * hq * d * sizeof(float);
    } else {
      if (t + 1 < ranks) s.bundle += n * 2 * hkv * d * e;
      if (ranks > 1) s.trailing += n * 2 * hkv * d * sizeof(float);
    }
  }
  return s;
}

bool is_tp(Choice c) { return c == Choice::kTpV1 || c == Choice::kTpV3; }

// Shard lengths of the layout the planner assumes: zigzag for causal problems (balanced
// work), contiguous otherwise.
std::vector<std::int64_t> shard_lengths(std::int64_t seqlen, int ranks, bool causal) {
  const auto plan = algo::shard_plan(seqlen, ranks, causal ? algo::Layout::kZigzag : algo::Layout::kContiguous);
  std::vector<std::int64_t> lengths;
  for (const auto& p : plan) lengths.push_back(static_cast<std::int64_t>(p.size()));
  return lengths;
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

// The link a ring's slowest hop uses: with several nodes one hop per node crosses, and every
// step waits for it.
const Link& ring_link(const Cluster& c) { return c.nodes > 1 ? c.inter : c.intra; }

// A ring of `steps` steps whose compute totals `compute` and whose step transfer takes
// `step_wire` (from the second step on, posted while the previous step computes), plus a
// trailing transfer at the end.
void ring_pass(Pass& pass, const Cluster& c, int steps, double compute, double step_wire, double tail_wire) {
  const double per_step = compute / steps;
  const double wire = (steps - 1) * step_wire + tail_wire;
  double t = 0;
  if (c.overlap) {
    t = per_step + (steps - 1) * std::max(per_step, step_wire) + tail_wire;
  } else {
    t = compute + wire;
  }
  pass.seconds += t;
  pass.compute += compute;
  pass.wire += wire;
}

// The double ring: I outer steps, each an L-step intra ring; the inter-node hop of the next
// outer step is posted at the start and hides behind the L intra steps.
void double_ring_pass(Pass& pass, const Cluster& c, double compute, double step_bytes, double step_msgs,
                      double tail_bytes) {
  const int nodes = c.nodes, local = c.ranks_per_node;
  const double per_step = compute / (nodes * local);
  const double intra = c.intra.seconds(step_bytes, step_msgs), inter = c.inter.seconds(step_bytes, step_msgs);
  const double intra_cycle = c.overlap ? per_step + (local - 1) * std::max(per_step, intra)
                                       : local * per_step + (local - 1) * intra;
  const double outer = c.overlap ? std::max(intra_cycle, inter) : intra_cycle + inter;
  const double tail = nodes > 1 ? c.inter.seconds(tail_bytes, 1) : c.intra.seconds(tail_bytes, 1);
  pass.seconds += (nodes - 1) * outer + intra_cycle + tail;
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
  if (pattern == Pattern::kRing || !crosses) {
    const Link& link = crosses ? c.inter : c.intra;
    wire = link.seconds(bytes, messages);
    if (crosses) pass.inter_bytes += bytes * (static_cast<double>(ranks) / ranks_per_node) / ranks;
  } else {
    const double peers = ranks - 1, local = ranks_per_node - 1;
    const double intra_part = bytes * local / peers, inter_part = bytes - intra_part;
    wire = c.intra.seconds(intra_part, messages * local / peers) + c.inter.seconds(inter_part, messages * (peers - local) / peers);
    pass.inter_bytes += inter_part;
  }
  pass.add_blocking(wire);
}

double visible(const Workload& w) {
  kernels::AttentionOptions o;
  o.mask.causal = w.causal;
  return kernels::visible_fraction(w.seqlen, w.seqlen, o);
}

// Everything one layer (or the attention core) of a strategy does, per rank.
struct LayerCost {
  Pass forward, backward;
  double forward_bytes = 0, backward_bytes = 0;
};

// The attention core's passes on one rank.
void core_cost(Choice choice, const Cluster& c, const ModelShape& m, const Workload& w,
               const std::vector<std::int64_t>& lengths, LayerCost& cost) {
  const int p = c.ranks();
  const double b = static_cast<double>(w.batch), n_total = static_cast<double>(w.seqlen);
  const double hq = static_cast<double>(m.heads), d = static_cast<double>(m.head_dim);
  const double share = c.rank_share();
  const bool causal_rates = w.causal && c.attention_forward_flops_causal > 0 && c.attention_backward_flops_causal > 0;
  const double fwd_rate = (causal_rates ? c.attention_forward_flops_causal : c.attention_forward_flops) * share;
  const double bwd_rate = (causal_rates ? c.attention_backward_flops_causal : c.attention_backward_flops) * share;
  // Counted FLOPs of this rank's share of the whole problem.
  const double flops = 4.0 * b * hq * n_total * n_total * d * visible(w) / p;
  const double fwd = flops / fwd_rate, bwd = 2.5 * flops / bwd_rate;

  CoreShape shape{w.batch, m.heads, m.kv_heads, m.head_dim, w.element_bytes, w.output_bytes, 1};
  if (choice == Choice::kUsp) shape.ulysses_degree = usp_degree(m, c);
  // Mean over ranks: what the library's reports average.
  double fsum = 0, bsum = 0, bundle = 0, trailing = 0;
  for (int r = 0; r < p; ++r) {
    const CoreBytes cb = core_bytes(choice, lengths, r, shape);
    fsum += static_cast<double>(cb.forward);
    bsum += static_cast<double>(cb.backward);
    bundle += static_cast<double>(cb.backward_bundle);
    trailing += static_cast<double>(cb.backward_trailing);
  }
  fsum /= p;
  bsum /= p;
  bundle /= p;
  trailing /= p;
  cost.forward_bytes += fsum;
  cost.backward_bytes += bsum;
  const int l = c.ranks_per_node;

  switch (choice) {
    case Choice::kBurst:
    case Choice::kRing: {
      const Link& link = ring_link(c);
      const double share_inter = c.nodes > 1 ? static_cast<double>(c.nodes) / p : 0.0;
      ring_pass(cost.forward, c, p, fwd, p > 1 ? link.seconds(fsum / (p - 1), 1) : 0, 0);
      cost.forward.inter_bytes += fsum * share_inter;
      if (w.backward) {
        const double step = p > 1 ? link.seconds(bundle / (p - 1) + trailing / p, 2) : 0;
        ring_pass(cost.backward, c, p, bwd, step, p > 1 ? link.seconds(trailing / p, 1) : 0);
        cost.backward.inter_bytes += bsum * share_inter;
      }
      break;
    }
    case Choice::kBurstDouble: {
      double_ring_pass(cost.forward, c, fwd, p > 1 ? fsum / (p - 1) : 0, 1, 0);
      if (w.backward) {
        double_ring_pass(cost.backward, c, bwd, p > 1 ? bundle / (p - 1) + trailing / p : 0, 2,
                         p > 1 ? trailing / p : 0);
      }
      break;
    }
    case Choice::kRingRsa: {
      // Materialised scores: Q K^T and P V as plain GEMMs over every key (no mask skipping),
      // and the score rows [b, h, n, N] fp32 streamed through memory: written by the K pass,
      // read and written by the softmax, read by the V pass.
      const double gemm = c.gemm_flops * share;
      const double full = 4.0 * b * hq * n_total * n_total * d / p;
      const double scores = b * hq * (n_total / p) * n_total * sizeof(float);
      const double mem = scores / (c.memory_bandwidth * share);
      const Link& link = ring_link(c);
      const double half = p > 1 ? link.seconds(fsum / 2 / (p - 1), 1) : 0;
      ring_pass(cost.forward, c, p, full / 2 / gemm + mem, half, 0);  // K pass: S = Q K^T
      cost.forward.add_compute(2 * mem);                             // softmax in place
      ring_pass(cost.forward, c, p, full / 2 / gemm + mem, half, 0);  // V pass: O = P V
      if (c.nodes > 1) cost.forward.inter_bytes += fsum * c.nodes / p;
      if (w.backward) {
        // K (scores again), V (dP) and K (dQ) passes, then dK and dV all-reduced.
        const double third = 2.5 * full / gemm / 3 + 2 * mem;
        const double step = p > 1 ? link.seconds(bundle / 3 / (p - 1), 1) : 0;
        for (int pass = 0; pass < 3; ++pass) ring_pass(cost.backward, c, p, third, step, 0);
        collective(cost.backward, c, p, l, Pattern::kRing, trailing, 4.0 * (p - 1));
        if (c.nodes > 1) cost.backward.inter_bytes += bundle * c.nodes / p;
      }
      break;
    }
    case Choice::kAllGather: {
      collective(cost.forward, c, p, l, Pattern::kRing, fsum, p - 1);
      cost.forward.add_compute(fwd);
      if (w.backward) {
        collective(cost.backward, c, p, l, Pattern::kRing, bundle, p - 1);
        cost.backward.add_compute(bwd);
        collective(cost.backward, c, p, l, Pattern::kRing, trailing, p - 1);
      }
      break;
    }
    case Choice::kUlysses: {
      // Sequence shards to head shards, one kernel over the whole sequence, and back.
      collective(cost.forward, c, p, l, Pattern::kPairwise, fsum, 2.0 * (p - 1));
      cost.forward.add_compute(fwd);
      if (w.backward) {
        collective(cost.backward, c, p, l, Pattern::kPairwise, bsum, 2.0 * (p - 1));
        cost.backward.add_compute(bwd);
      }
      break;
    }
    case Choice::kUsp: {
      // Exact split of the bytes between the group all-to-alls and the ring over the groups.
      const int u = shape.ulysses_degree, groups = p / u;
      std::vector<u64> group_tokens(static_cast<std::size_t>(groups), 0);
      for (int r = 0; r < p; ++r) group_tokens[static_cast<std::size_t>(r / u)] += as_u64(w.batch * lengths[static_cast<std::size_t>(r)]);
      const auto hq_u = as_u64(m.heads / u), hkv_u = as_u64(m.kv_heads / u);
      std::vector<std::int64_t> glen;
      for (u64 t : group_tokens) glen.push_back(static_cast<std::int64_t>(t));
      const algo::BackwardScheme scheme = algo::choose_scheme(glen, 1, static_cast<std::int64_t>(hq_u),
                                                              static_cast<std::int64_t>(hkv_u), m.head_dim, w.element_bytes);
      double ring_f = 0, ring_b = 0, ring_bundle = 0, ring_tail = 0;
      for (int g = 0; g < groups; ++g) {
        const RingSends s = ring_sends(groups, g, group_tokens, hq_u, hkv_u, as_u64(m.head_dim), w.element_bytes, scheme);
        ring_f += static_cast<double>(s.forward);
        ring_b += static_cast<double>(s.bundle + s.trailing);
        ring_bundle += static_cast<double>(s.bundle);
        ring_tail += static_cast<double>(s.trailing);
      }
      ring_f /= groups;
      ring_b /= groups;
      ring_bundle /= groups;
      ring_tail /= groups;
      const bool group_in_node = u <= l;
      Cluster group_view = c;  // the group's all-to-all stays inside a node when it fits
      if (group_in_node) group_view.nodes = 1;
      collective(cost.forward, group_view, u, std::min(u, l), Pattern::kPairwise, fsum - ring_f, 2.0 * (u - 1));
      // Ring members r, r + U, ... lie on different nodes when P > L.
      const Link& link = p > l ? c.inter : c.intra;
      ring_pass(cost.forward, c, groups, fwd, groups > 1 ? link.seconds(ring_f / (groups - 1), 1) : 0, 0);
      if (w.backward) {
        collective(cost.backward, group_view, u, std::min(u, l), Pattern::kPairwise, bsum - ring_b, 2.0 * (u - 1));
        const double step = groups > 1 ? link.seconds(ring_bundle / (groups - 1) + ring_tail / groups, 2) : 0;
        ring_pass(cost.backward, c, groups, bwd, step, groups > 1 ? link.seconds(ring_tail / groups, 1) : 0);
      }
      if (p > l) {
        cost.forward.inter_bytes += ring_f;
        cost.backward.inter_bytes += w.backward ? ring_b : 0;
      }
      break;
    }
    case Choice::kTpV1:
    case Choice::kTpV3:
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

// Key/value heads one rank holds under tensor parallelism (replicated when fewer than ranks).
double tp_kv_heads(const ModelShape& m, int p) {
  return m.kv_heads % p == 0 ? static_cast<double>(m.kv_heads / p) : 1.0;
}

// Per-rank memory: weights, activations live at the peak, K/V cache, strategy buffers.
double memory_estimate(Choice choice, const Cluster& c, const ModelShape& m, const Workload& w,
                       const std::vector<std::int64_t>& lengths) {
  const int p = c.ranks();
  const double b = static_cast<double>(w.batch), big_n = static_cast<double>(w.seqlen);
  const double n = static_cast<double>(*std::max_element(lengths.begin(), lengths.end()));
  const double hq = static_cast<double>(m.heads), g = static_cast<double>(m.kv_heads), d = static_cast<double>(m.head_dim);
  const double dim = static_cast<double>(m.model_dim), f = static_cast<double>(m.mlp_dim);
  const double e = static_cast<double>(w.element_bytes), eo = static_cast<double>(w.output_bytes);
  const bool tp = is_tp(choice);
  // Rows and heads this rank's activations hold.
  const double rows = tp ? big_n : n;
  const double hq_r = tp ? hq / p : hq, g_r = tp ? tp_kv_heads(m, p) : g;
  const double f_r = tp ? f / p : f;

  // Strategy buffers of the attention core beyond its inputs and outputs.
  double fwd_buf = 0, bwd_buf = 0;
  const double kv_shard = 2 * b * n * g * d * e;
  switch (choice) {
    case Choice::kBurst:
    case Choice::kRing:
    case Choice::kBurstDouble: {
      fwd_buf = (choice == Choice::kBurstDouble ? 4 : 2) * kv_shard + (eo < 4 ? b * n * hq * d * 4 : 0);
      const bool query = choice != Choice::kRing &&
                         algo::choose_scheme(lengths, w.batch, m.heads, m.kv_heads, m.head_dim, w.element_bytes) ==
                             algo::BackwardScheme::kQuery;
      bwd_buf = query ? 2 * b * n * hq * (2 * d * e + 8) + 2 * b * n * hq * d * 4
                      : 2 * kv_shard + 2 * 2 * b * n * g * d * 4;
      break;
    }
    case Choice::kRingRsa: {
      const double scores = b * hq * n * big_n * 4;
      fwd_buf = scores + 2 * b * n * g * d * e + b * n * hq * d * 4;
      bwd_buf = 2 * scores + 2 * b * big_n * g * d * 4 + 2 * b * n * g * d * e;
      break;
    }
    case Choice::kAllGather:
      fwd_buf = 2 * b * big_n * g * d * e;
      bwd_buf = fwd_buf + 2 * b * big_n * g * d * 4;
      break;
    case Choice::kUlysses:
      fwd_buf = b * big_n * (hq + 2 * g) / p * d * e + b * big_n * hq / p * (d * 4 + 4);
      bwd_buf = b * big_n * (2 * hq + 2 * g) / p * d * e + b * big_n * (hq + 2 * g) / p * d * 4;
      break;
    case Choice::kUsp: {
      const double u = usp_degree(m, c), rows_u = u * n;
      fwd_buf = b * rows_u * (hq + 2 * g) / u * d * e + b * rows_u * hq / u * (d * 4 + 4) + 4 * b * rows_u * g / u * d * e;
      bwd_buf = b * rows_u * (2 * hq + 2 * g) / u * d * e + b * rows_u * (hq + 2 * g) / u * d * 4 +
                4 * b * rows_u * hq / u * d * (e + 4);
      break;
    }
    case Choice::kTpV1:
    case Choice::kTpV3:
      break;
  }
  // The core's own inputs and outputs on this rank (q, k, v, out, lse; backward: dO, dq, dk,
  // dv, delta).
  const double core_in = b * rows * ((hq_r + 2 * g_r) * d * e + hq_r * d * eo + 4 * hq_r);
  const double core_grads = b * rows * (hq_r * d * e + (hq_r + 2 * g_r) * d * 4 + 4 * hq_r);

  if (w.scope == Scope::kCore) return core_in + fwd_buf + (w.backward ? core_grads + bwd_buf : 0);

  const double x_rows = choice == Choice::kTpV3 ? big_n + n : rows;  // tp-v3 keeps the gathered X
  if (w.scope == Scope::kLayer) {
    // fp32 parameters, X and Y, the saved activations (docs/layer.md), and the core.
    const double params = 4 * dim * (2 * hq_r + 2 * g_r) * d;
    const double xy = b * x_rows * dim * 4 + b * rows * dim * 4;
    const double saved = b * rows * (e * (hq_r + 2 * g_r) * d + 4 * hq_r * d + 4 * hq_r);
    const double base = params + xy + saved;
    if (!w.backward) return base + fwd_buf + b * rows * (hq_r + 2 * g_r) * d * 4;
    return base + params + xy + core_grads + bwd_buf + b * rows * (hq_r + 2 * g_r) * d * 4;
  }

  // The whole model. Weights (tensor parallelism splits them, embeddings included).
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
    return weights + cache + x + std::max(qkv + fwd_buf, qkv + mlp);
  }
  // Training: fp32 weights and gradients (no optimizer state), every layer's saved
  // activations, one layer's backward buffers.
  const double weights = 2 * 4 * params / (tp ? p : 1);
  const double saved_layer = x + qkv + b * rows * 4 * hq_r + b * rows * (3 * f_r) * a;
  return weights + layers * saved_layer + fwd_buf + core_grads + bwd_buf;
}

}  // namespace

int Cluster::threads_per_rank() const { return std::max(1, compute_slots / std::max(1, ranks_per_node)); }

double Cluster::rank_share() const {
  const int threads = threads_per_rank();
  const double busy = static_cast<double>(threads) * ranks_per_node;
  return threads * std::min(1.0, compute_slots / busy);
}

std::string scope_name(Scope scope) {
  switch (scope) {
    case Scope::kCore: return "core";
    case Scope::kLayer: return "layer";
    case Scope::kModel: return "model";
  }
  return "?";
}

const std::vector<Choice>& all_choices() {
  static const std::vector<Choice> all = {Choice::kBurst,   Choice::kBurstDouble, Choice::kRing,
                                          Choice::kRingRsa, Choice::kUlysses,     Choice::kUsp,
                                          Choice::kAllGather, Choice::kTpV1,      Choice::kTpV3};
  return all;
}

std::string choice_name(Choice choice) {
  switch (choice) {
    case Choice::kBurst: return "burst";
    case Choice::kBurstDouble: return "burst-double";
    case Choice::kRing: return "ring";
    case Choice::kRingRsa: return "ring-rsa";
    case Choice::kUlysses: return "ulysses";
    case Choice::kUsp: return "usp";
    case Choice::kAllGather: return "allgather";
    case Choice::kTpV1: return "tp-v1";
    case Choice::kTpV3: return "tp-v3";
  }
  return "?";
}

Choice parse_choice(const std::string& text, const std::string& what) {
  for (Choice c : all_choices())
    if (choice_name(c) == text) return c;
  std::string names;
  for (Choice c : all_choices()) {
    if (!names.empty()) names += '|';
    names += choice_name(c);
  }
  throw Error(what + ": expected " + names + ", got '" + text + "'");
}

algo::Strategy library_strategy(Choice choice) {
  switch (choice) {
    case Choice::kBurst:
    case Choice::kBurstDouble: return algo::Strategy::kBurst;
    case Choice::kRing: return algo::Strategy::kRing;
    case Choice::kRingRsa: return algo::Strategy::kRingRsa;
    case Choice::kUlysses: return algo::Strategy::kUlysses;
    case Choice::kUsp: return algo::Strategy::kUsp;
    case Choice::kAllGather: return algo::Strategy::kAllGather;
    case Choice::kTpV1: return algo::Strategy::kTpV1;
    case Choice::kTpV3: return algo::Strategy::kTpV3;
  }
  return algo::Strategy::kBurst;
}

CoreBytes core_bytes(Choice choice, const std::vector<std::int64_t>& lengths, int rank, const CoreShape& s) {
  const int p = static_cast<int>(lengths.size());
  BURST_CHECK(p >= 1 && rank >= 0 && rank < p, "plan: rank ", rank, " outside ", p, " ranks");
  const u64 b = as_u64(s.batch), hq = as_u64(s.heads), hkv = as_u64(s.kv_heads), d = as_u64(s.head_dim);
  const u64 e = s.element_bytes, eo = s.output_bytes;
  std::vector<u64> tokens;  // b n_j of every rank
  u64 total = 0;
  for (std::int64_t n : lengths) {
    tokens.push_back(b * as_u64(n));
    total += b * as_u64(n);
  }
  auto at = [&](int j) { return tokens[static_cast<std::size_t>((j % p + p) % p)]; };
  CoreBytes out;
  switch (choice) {
    case Choice::kBurst:
    case Choice::kBurstDouble:
    case Choice::kRing: {
      out.scheme = choice == Choice::kRing
                       ? algo::BackwardScheme::kKeyValue
                       : algo::choose_scheme(lengths, s.batch, s.heads, s.kv_heads, s.head_dim, s.element_bytes);
      const RingSends r = ring_sends(p, rank, tokens, hq, hkv, d, e, out.scheme);
      out.forward = r.forward;
      out.backward_bundle = r.bundle;
      out.backward_trailing = r.trailing;
      break;
    }
    case Choice::kAllGather: {
      // Equal blocks of the longest shard: K and V gathered; backward gathers again and
      // reduce-scatters fp32 dK, dV.
      const u64 rows = *std::max_element(tokens.begin(), tokens.end()) * hkv * d;
      out.forward = (static_cast<u64>(p) - 1) * 2 * rows * e;
      out.backward_bundle = out.forward;
      out.backward_trailing = (static_cast<u64>(p) - 1) * 2 * rows * sizeof(float);
      break;
    }
    case Choice::kRingRsa: {
      // K and V once around the ring forward; K, V and K again backward, then ring
      // all-reduces of full-length fp32 dK and dV.
      u64 shard_rows = 0;
      for (int t = 0; t + 1 < p; ++t) shard_rows += at(rank - t) * hkv * d;
      const u64 all_reduce = all_reduce_bytes(total * hkv * d, p);
      out.forward = 2 * shard_rows * e;
      out.backward_bundle = 3 * shard_rows * e;
      out.backward_trailing = 2 * all_reduce;
      break;
    }
    case Choice::kUlysses: {
      // This rank's rows of every other rank's heads go out, its heads of everyone's rows come
      // back. Forward: q, k, v out, O and lse back; backward: q, k, v, dO, lse, delta out and
      // fp32 dq, dk, dv back.
      const u64 hq_p = hq / static_cast<u64>(p), hkv_p = hkv / static_cast<u64>(p);
      const u64 rows_out = (static_cast<u64>(p) - 1) * at(rank), rows_in = total - at(rank);
      out.forward = rows_out * (hq_p + 2 * hkv_p) * d * e + rows_in * hq_p * (d * eo + 4);
      out.backward_bundle = rows_out * ((2 * hq_p + 2 * hkv_p) * d * e + 2 * hq_p * 4);
      out.backward_trailing = rows_in * (hq_p + 2 * hkv_p) * d * 4;
      break;
    }
    case Choice::kUsp: {
      // Group all-to-alls (Ulysses inside U consecutive ranks) and BurstAttention's ring over
      // the R = P / U groups' token sets with H / U heads.
      const int u = s.ulysses_degree, groups = p / u, group = rank / u;
      BURST_CHECK(u >= 1 && p % u == 0, "plan: ulysses degree ", u, " must divide ", p, " ranks");
      const u64 hq_u = hq / static_cast<u64>(u), hkv_u = hkv / static_cast<u64>(u);
      u64 others = 0;
      for (int m = group * u; m < (group + 1) * u; ++m) others += m == rank ? 0 : at(m);
      const u64 mine = at(rank) * static_cast<u64>(u - 1);
      std::vector<u64> group_tokens(static_cast<std::size_t>(groups), 0);
      for (int r = 0; r < p; ++r) group_tokens[static_cast<std::size_t>(r / u)] += at(r);
      std::vector<std::int64_t> group_lengths;
      for (u64 t : group_tokens) group_lengths.push_back(static_cast<std::int64_t>(t));
      out.scheme = algo::choose_scheme(group_lengths, 1, static_cast<std::int64_t>(hq_u),
                                       static_cast<std::int64_t>(hkv_u), s.head_dim, s.element_bytes);
      const RingSends r = ring_sends(groups, group, group_tokens, hq_u, hkv_u, d, e, out.scheme);
      out.forward = mine * (hq_u + 2 * hkv_u) * d * e + others * hq_u * (d * eo + 4) + r.forward;
      out.backward_bundle = mine * ((2 * hq_u + 2 * hkv_u) * d * e + hq_u * d * eo + hq_u * 4) + r.bundle;
      out.backward_trailing = others * (hq_u + 2 * hkv_u) * d * 4 + r.trailing;
      break;
    }
    case Choice::kTpV1:
    case Choice::kTpV3:
      break;
  }
  out.backward = out.backward_bundle + out.backward_trailing;
  return out;
}

LayerBytes layer_bytes(Choice choice, const algo::LayerShape& shape, std::int64_t batch,
                       const std::vector<std::int64_t>& lengths, int rank, std::size_t element_bytes) {
  // The layer's attention core writes an fp32 O.
  const CoreShape cs{batch, shape.heads, shape.kv_heads, shape.head_dim, element_bytes, sizeof(float), 1};
  const CoreBytes core = core_bytes(choice, lengths, rank, cs);
  const algo::LayerTraffic t = algo::expected_layer_traffic(library_strategy(choice), shape, batch, lengths, rank);
  return {core.forward + t.forward, core.backward + t.backward, t.grads};
}

int usp_degree(const ModelShape& m, const Cluster& c) {
  int best = 1;
  for (int u = 2; u <= c.ranks(); ++u) {
    if (c.ranks() % u == 0 && m.heads % u == 0 && m.kv_heads % u == 0 && c.ranks_per_node % u == 0) best = u;
  }
  return best;
}

std::string infeasible_reason(Choice choice, const ModelShape& m, const Cluster& c, Scope scope) {
  const int p = c.ranks();
  if (choice == Choice::kUlysses && (m.heads % p != 0 || m.kv_heads % p != 0)) {
    return "heads " + std::to_string(m.heads) + " and kv heads " + std::to_string(m.kv_heads) + " must split over " +
           std::to_string(p) + " ranks";
  }
  if (choice == Choice::kUsp && usp_degree(m, c) == 1) return "no Ulysses group size > 1 divides the heads and a node";
  if (is_tp(choice)) {
    if (scope == Scope::kCore) return "shards the weights: layer or model scope only";
    if (m.heads % p != 0) return "heads " + std::to_string(m.heads) + " not a multiple of " + std::to_string(p) + " ranks";
    if (m.kv_heads % p != 0 && p % m.kv_heads != 0) return "kv heads neither divide nor are a multiple of the ranks";
  }
  if (choice == Choice::kBurstDouble && c.nodes == 1) return "one node: the double ring is the single ring";
  return "";
}

Prediction predict(Choice choice, const Cluster& c, const ModelShape& m, const Workload& w) {
  Prediction pr;
  pr.choice = choice;
  pr.infeasible = infeasible_reason(choice, m, c, w.scope);
  const int p = c.ranks();
  BURST_CHECK(w.seqlen >= p, "--seqlen: ", w.seqlen, " tokens cannot shard over ", p, " ranks");
  if (!pr.infeasible.empty()) return pr;
  const std::vector<std::int64_t> lengths = shard_lengths(w.seqlen, p, w.causal);
  const int l = c.ranks_per_node;
  const bool tp = is_tp(choice);

  LayerCost layer;
  core_cost(choice, c, m, w, lengths, layer);

  if (w.scope != Scope::kCore) {
    // Projections (and the MLP for the whole model) as GEMMs over this rank's rows and heads.
    const double b = static_cast<double>(w.batch), big_n = static_cast<double>(w.seqlen);
    const double rows = tp ? big_n : big_n / p;
    const double hq_r = tp ? static_cast<double>(m.heads) / p : static_cast<double>(m.heads);
    const double g_r = tp ? tp_kv_heads(m, p) : static_cast<double>(m.kv_heads);
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
      const algo::LayerTraffic t = algo::expected_layer_traffic(library_strategy(choice), shape, w.batch, lengths, r);
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
    const Pattern pattern = choice == Choice::kTpV3 ? Pattern::kPairwise : Pattern::kRing;
    for (int i = 0; i < static_cast<int>(blocks); ++i) {
      collective(layer.forward, c, p, l, pattern, lf, 2.0 * (p - 1));
      if (w.backward) collective(layer.backward, c, p, l, pattern, lb, 2.0 * (p - 1));
    }
    layer.forward_bytes += blocks * lf;
    if (w.backward) {
      layer.backward_bytes += blocks * lb;
      if (mlp && !tp) grads += static_cast<double>(all_reduce_bytes(3 * as_u64(m.model_dim) * as_u64(m.mlp_dim), p));
      collective(layer.backward, c, p, l, Pattern::kRing, grads, 2.0 * (p - 1));
      layer.backward_bytes += grads;
    }
  }
  if (!w.backward) layer.backward_bytes = 0;

  const double layers = w.scope == Scope::kModel ? m.layers : 1;
  pr.forward_seconds = layers * layer.forward.seconds;
  pr.backward_seconds = layers * layer.backward.seconds;
  pr.compute_seconds = layers * (layer.forward.compute + layer.backward.compute);
  pr.comm_seconds = layers * (layer.forward.wire + layer.backward.wire);
  pr.exposed_seconds = pr.seconds() - pr.compute_seconds;
  pr.forward_bytes = layers * layer.forward_bytes;
  pr.backward_bytes = layers * layer.backward_bytes;
  pr.inter_bytes = layers * (layer.forward.inter_bytes + layer.backward.inter_bytes);
  pr.memory_bytes = memory_estimate(choice, c, m, w, lengths);
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

// Presets. Figures are stated assumptions, written next to each value; docs/plan.md says
// where they come from.
std::vector<std::string> cluster_preset_names() { return {"8xA100-PCIe", "4x8xA100-RoCE600", "this"}; }

Cluster cluster_preset(const std::string& name, const std::string& what) {
  Cluster c;
  c.name = name;
  // A100: 312 TFLOP/s bf16 dense peak. FlashAttention-2 reaches roughly half of it in the
  // forward and somewhat less in the backward at d = 128; large GEMMs about 70%.
  c.attention_forward_flops = 160e12;
  c.attention_backward_flops = 120e12;
  c.gemm_flops = 220e12;
  if (name == "8xA100-PCIe") {
    c.description = "1 node x 8 A100 40GB, PCIe 4.0 between the GPUs (the paper's first setup)";
    c.nodes = 1;
    c.ranks_per_node = 8;
    c.compute_slots = 8;
    c.memory_bandwidth = 1.555e12;
    c.memory_bytes = 40e9;
    // PCIe 4.0 x16 carries 32 GB/s raw per direction; eight GPUs behind shared switches and
    // the CPUs' root ports leave a ring about 12 GB/s per rank, at ~10 us per message.
    c.intra = {12e9, 10e-6};
    c.inter = c.intra;
    return c;
  }
  if (name == "4x8xA100-RoCE600") {
    c.description = "4 nodes x 8 A100 80GB, NVLink inside a node, 600 Gb/s RoCE per node between nodes";
    c.nodes = 4;
    c.ranks_per_node = 8;
    c.compute_slots = 8;
    c.memory_bandwidth = 2.0e12;
    c.memory_bytes = 80e9;
    // NVLink 3: 300 GB/s per direction per GPU; rings reach ~200 GB/s. 600 Gb/s per node is
    // 75 GB/s, shared by the node's 8 ranks: 9.4 GB/s per rank, ~10 us per message.
    c.intra = {200e9, 5e-6};
    c.inter = {600e9 / 8 / 8, 10e-6};
    return c;
  }
  throw Error(what + ": expected one of 8xA100-PCIe, 4x8xA100-RoCE600, this, got '" + name + "'");
}

std::vector<std::string> model_preset_names() { return {"llama2-7b", "llama2-13b"}; }

ModelShape model_preset(const std::string& name, const std::string& what) {
  ModelShape m;
  m.name = name;
  m.head_dim = 128;
  m.vocab = 32000;
  if (name == "llama2-7b") {
    m.layers = 32;
    m.heads = m.kv_heads = 32;
    m.model_dim = 4096;
    m.mlp_dim = 11008;
    return m;
  }
  if (name == "llama2-13b") {
    m.layers = 40;
    m.heads = m.kv_heads = 40;
    m.model_dim = 5120;
    m.mlp_dim = 13824;
    return m;
  }
  throw Error(what + ": expected llama2-7b, llama2-13b or custom, got '" + name + "'");
}

}  // namespace burst::cli::plan
