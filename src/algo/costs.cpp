#include "algo/costs.h"

#include <algorithm>

#include "burst/error.h"
#include "burst/layer.h"

namespace burst::algo {
namespace {

using u64 = std::uint64_t;

u64 as_u64(std::int64_t x) { return static_cast<u64>(x); }

// Bytes of one problem's tensors, for `tokens` rows (doubles: memory estimates).
struct Sizes {
  double b = 1, hq = 1, hkv = 1, d = 1;
  double e = 4, eo = 4, wire = 4;  // bytes of an element of q/k/v/dO, of out, of wire partials
  explicit Sizes(const ProblemShape& s, const StrategyOptions& o)
      : b(static_cast<double>(s.batch)), hq(static_cast<double>(s.n_heads_q)), hkv(static_cast<double>(s.n_heads_kv)),
        d(static_cast<double>(s.head_dim)), e(static_cast<double>(s.element_bytes)),
        eo(static_cast<double>(s.output_bytes)), wire(static_cast<double>(dtype_size(o.gradient_wire))) {}
  double q(double tokens, double elem) const { return b * tokens * hq * d * elem; }
  double kv(double tokens, double elem) const { return b * tokens * hkv * d * elem; }
  double stats(double tokens) const { return 4 * b * hq * tokens; }
};

double longest(const std::vector<std::int64_t>& lengths) {
  return static_cast<double>(*std::max_element(lengths.begin(), lengths.end()));
}
double total(const std::vector<std::int64_t>& lengths) {
  double sum = 0;
  for (std::int64_t n : lengths) sum += static_cast<double>(n);
  return sum;
}

// A ring rank's sends: at step t rank `me` passes on the shard of origin me - t (P - 1 hops
// for every origin's shard) and, backward, the trailing accumulator of origin me - t (P hops:
// the last takes it home). `tokens` holds b n_j of every ring rank.
struct RingSends {
  u64 forward = 0, bundle = 0, trailing = 0;
};
RingSends ring_sends(const std::vector<u64>& tokens, int me, u64 hq, u64 hkv, u64 d, u64 e, u64 wire,
                     BackwardScheme scheme) {
  const int ranks = static_cast<int>(tokens.size());
  RingSends s;
  for (int t = 0; t < ranks; ++t) {
    const u64 n = tokens[static_cast<std::size_t>((me - t + ranks) % ranks)];
    if (t + 1 < ranks) s.forward += n * 2 * hkv * d * e;
    if (scheme == BackwardScheme::kQuery) {
      if (t + 1 < ranks) s.bundle += n * hq * (2 * d * e + 8);  // Q, dO; delta and lse fp32
      if (ranks > 1) s.trailing += n * hq * d * wire;           // dQ
    } else {
      if (t + 1 < ranks) s.bundle += n * 2 * hkv * d * e;  // K, V
      if (ranks > 1) s.trailing += n * 2 * hkv * d * wire;  // dK, dV
    }
  }
  return s;
}

std::vector<u64> batch_tokens(const std::vector<std::int64_t>& lengths, std::int64_t batch) {
  std::vector<u64> tokens;
  for (std::int64_t n : lengths) tokens.push_back(as_u64(batch) * as_u64(n));
  return tokens;
}

BackwardScheme resolved(const StrategyOptions& o, const std::vector<std::int64_t>& lengths, const ProblemShape& s,
                        std::int64_t hq, std::int64_t hkv) {
  if (o.backward_scheme != BackwardScheme::kAuto) return o.backward_scheme;
  return choose_scheme(o.layout, lengths, s.batch, hq, hkv, s.head_dim, s.element_bytes);
}

StrategyBytes ring_bytes_with(BackwardScheme scheme, const ProblemShape& s, const std::vector<std::int64_t>& lengths,
                              int rank, const StrategyOptions& o) {
  StrategyBytes out;
  out.scheme = scheme;
  const RingSends r = ring_sends(batch_tokens(lengths, s.batch), rank, as_u64(s.n_heads_q), as_u64(s.n_heads_kv),
                                 as_u64(s.head_dim), s.element_bytes, dtype_size(o.gradient_wire), scheme);
  out.forward = out.ring_forward = r.forward;
  out.backward_bundle = out.ring_bundle = r.bundle;
  out.backward_trailing = out.ring_trailing = r.trailing;
  out.backward = r.bundle + r.trailing;
  return out;
}

// The ring over usp's groups: its token sets (a group's members' tokens) and heads.
struct UspRing {
  int degree = 1, groups = 1, group = 0;
  std::vector<std::int64_t> lengths;  // tokens of every group
  ProblemShape shape;                 // heads / degree
};
UspRing usp_ring(const ProblemShape& s, const std::vector<std::int64_t>& lengths, int rank,
                 const StrategyOptions& o) {
  const int p = static_cast<int>(lengths.size());
  UspRing u;
  u.degree = o.ulysses_degree;
  BURST_CHECK(u.degree >= 1 && p % u.degree == 0, "ulysses_degree: expected a divisor of the ", p, " ranks, got ",
              u.degree);
  u.groups = p / u.degree;
  u.group = rank / u.degree;
  u.lengths.assign(static_cast<std::size_t>(u.groups), 0);
  for (int r = 0; r < p; ++r) u.lengths[static_cast<std::size_t>(r / u.degree)] += lengths[static_cast<std::size_t>(r)];
  u.shape = s;
  u.shape.n_heads_q = s.n_heads_q / u.degree;
  u.shape.n_heads_kv = s.n_heads_kv / u.degree;
  return u;
}

}  // namespace

// The mean of every rank's ring sends. Their sum is exact without visiting the ranks: every
// origin's bundle makes P - 1 hops and its accumulator P (none on one rank), which is what
// ring_sends adds up rank by rank (O(P) here, where summing ring_sends was O(P^2) and made
// the planner's large clusters slow).
std::uint64_t backward_bytes(BackwardScheme scheme, const std::vector<std::int64_t>& lengths, std::int64_t b,
                             std::int64_t hq, std::int64_t hkv, std::int64_t d, std::size_t e, std::size_t wire) {
  const std::vector<u64> tokens = batch_tokens(lengths, b);
  const u64 p = tokens.size();
  u64 all = 0;
  for (u64 n : tokens) all += n;
  const u64 bundle = scheme == BackwardScheme::kQuery ? as_u64(hq) * (2 * as_u64(d) * e + 8) : 2 * as_u64(hkv) * as_u64(d) * e;
  const u64 trailing = scheme == BackwardScheme::kQuery ? as_u64(hq) * as_u64(d) * wire : 2 * as_u64(hkv) * as_u64(d) * wire;
  const u64 sum = p > 1 ? all * ((p - 1) * bundle + p * trailing) : 0;
  return sum / std::max<u64>(1, p);
}

BackwardScheme choose_scheme(const std::vector<std::int64_t>& lengths, std::int64_t b, std::int64_t hq,
                             std::int64_t hkv, std::int64_t d, std::size_t e) {
  return backward_bytes(BackwardScheme::kKeyValue, lengths, b, hq, hkv, d, e) <
                 backward_bytes(BackwardScheme::kQuery, lengths, b, hq, hkv, d, e)
             ? BackwardScheme::kKeyValue
             : BackwardScheme::kQuery;
}

BackwardScheme choose_scheme(Layout layout, const std::vector<std::int64_t>& lengths, std::int64_t b, std::int64_t hq,
                             std::int64_t hkv, std::int64_t d, std::size_t e) {
  if (layout == Layout::kBalanced) return BackwardScheme::kKeyValue;
  return choose_scheme(lengths, b, hq, hkv, d, e);
}

namespace costs {

// ---- what the problem must allow ----------------------------------------------------------

std::string local_cannot_run(const ProblemShape&, int ranks, const StrategyOptions&, bool) {
  return ranks == 1 ? "" : "strategy local runs on one rank, got " + std::to_string(ranks) + " ranks";
}

std::string any_cannot_run(const ProblemShape&, int, const StrategyOptions&, bool) { return ""; }

std::string ring_rsa_cannot_run(const ProblemShape&, int, const StrategyOptions& o, bool) {
  if (o.mask.has_documents())
    return "ring-rsa: packed documents are not supported (its materialised score rows are masked by position "
           "only); use burst or ring, which also skip the steps whose documents do not meet";
  return "";
}

// K/V heads are not replicated: both head counts must split over the ranks.
std::string ulysses_cannot_run(const ProblemShape& s, int ranks, const StrategyOptions&, bool) {
  if (s.n_heads_q % ranks != 0)
    return "ulysses: n_heads_q must be divisible by the " + std::to_string(ranks) + " ranks, got " +
           std::to_string(s.n_heads_q);
  if (s.n_heads_kv % ranks != 0)
    return "ulysses: n_heads_kv must be divisible by the " + std::to_string(ranks) + " ranks, got " +
           std::to_string(s.n_heads_kv) + " (K/V heads are not replicated; use burst or ring)";
  return "";
}

std::string usp_cannot_run(const ProblemShape& s, int ranks, const StrategyOptions& o, bool) {
  const int u = o.ulysses_degree;
  if (u < 1 || ranks % u != 0)
    return "ulysses_degree: expected a divisor of the " + std::to_string(ranks) + " ranks, got " + std::to_string(u);
  if (s.n_heads_q % u != 0 || s.n_heads_kv % u != 0)
    return "ulysses_degree: n_heads_q (" + std::to_string(s.n_heads_q) + ") and n_heads_kv (" +
           std::to_string(s.n_heads_kv) + ") must be divisible by " + std::to_string(u);
  return "";
}

std::string tensor_parallel_reason(std::int64_t hq, std::int64_t hkv, int ranks) {
  const std::int64_t p = ranks;
  if (hq % p != 0)
    return "tensor parallelism: heads (" + std::to_string(hq) + ") must be a multiple of the " + std::to_string(p) +
           " ranks";
  if (hkv % p != 0 && p % hkv != 0)
    return "tensor parallelism: kv_heads (" + std::to_string(hkv) + ") must divide or be a multiple of the " +
           std::to_string(p) + " ranks";
  return "";
}

std::string tp_cannot_run(const ProblemShape& s, int ranks, const StrategyOptions&, bool as_layer) {
  if (!as_layer) return "shards the layer's weights by heads, so it runs only as a layer (AttentionLayer; burst run --layer)";
  return tensor_parallel_reason(s.n_heads_q, s.n_heads_kv, ranks);
}

// ---- bytes --------------------------------------------------------------------------------

StrategyBytes no_bytes(const ProblemShape&, const std::vector<std::int64_t>&, int, const StrategyOptions&) {
  return {};
}

// The K/V ring forward; backward the scheme asked for, or the cheaper one.
StrategyBytes burst_bytes(const ProblemShape& s, const std::vector<std::int64_t>& lengths, int rank,
                          const StrategyOptions& o) {
  return ring_bytes_with(resolved(o, lengths, s, s.n_heads_q, s.n_heads_kv), s, lengths, rank, o);
}

StrategyBytes ring_bytes(const ProblemShape& s, const std::vector<std::int64_t>& lengths, int rank,
                         const StrategyOptions& o) {
  return ring_bytes_with(BackwardScheme::kKeyValue, s, lengths, rank, o);
}

// K and V once around the ring forward; K, V and K again backward, then ring all-reduces of
// full-length fp32 dK and dV.
StrategyBytes ring_rsa_bytes(const ProblemShape& s, const std::vector<std::int64_t>& lengths, int rank,
                             const StrategyOptions&) {
  const std::vector<u64> tokens = batch_tokens(lengths, s.batch);
  const int p = static_cast<int>(tokens.size());
  const u64 row = as_u64(s.n_heads_kv * s.head_dim);
  u64 shard_rows = 0, all = 0;
  for (int t = 0; t + 1 < p; ++t) shard_rows += tokens[static_cast<std::size_t>((rank - t + p) % p)] * row;
  for (u64 n : tokens) all += n * row;
  StrategyBytes out;
  out.forward = out.ring_forward = 2 * shard_rows * s.element_bytes;
  out.backward_bundle = out.ring_bundle = 3 * shard_rows * s.element_bytes;
  out.backward_trailing = 2 * comm::all_reduce_bytes(all, sizeof(float), p);
  out.backward = out.backward_bundle + out.backward_trailing;
  return out;
}

// This rank's rows of every other rank's heads go out, its heads of everyone's rows come back.
// Forward: q, k, v out, O and lse back; backward: q, k, v, dO, lse, delta out and fp32 dq, dk,
// dv back.
StrategyBytes ulysses_bytes(const ProblemShape& s, const std::vector<std::int64_t>& lengths, int rank,
                            const StrategyOptions&) {
  const std::vector<u64> tokens = batch_tokens(lengths, s.batch);
  const auto p = static_cast<u64>(tokens.size());
  u64 all = 0;
  for (u64 n : tokens) all += n;
  const u64 mine = tokens[static_cast<std::size_t>(rank)], d = as_u64(s.head_dim), e = s.element_bytes;
  const u64 hq = as_u64(s.n_heads_q) / p, hkv = as_u64(s.n_heads_kv) / p;
  const u64 rows_out = (p - 1) * mine, rows_in = all - mine;
  StrategyBytes out;
  out.forward = rows_out * (hq + 2 * hkv) * d * e + rows_in * hq * (d * s.output_bytes + 4);
  out.backward_bundle = rows_out * ((2 * hq + 2 * hkv) * d * e + 2 * hq * 4);
  out.backward_trailing = rows_in * (hq + 2 * hkv) * d * 4;
  out.backward = out.backward_bundle + out.backward_trailing;
  return out;
}

// Group all-to-alls (Ulysses inside U consecutive ranks) around BurstAttention's ring over
// the P / U groups' token sets with H / U heads. Forward: q, k, v to the group's other members
// (their heads of this rank's rows), O and lse back; backward: q, k, v, dO, out and lse
// there, fp32 dq, dk, dv back.
StrategyBytes usp_bytes(const ProblemShape& s, const std::vector<std::int64_t>& lengths, int rank,
                        const StrategyOptions& o) {
  const UspRing ring = usp_ring(s, lengths, rank, o);
  const std::vector<u64> tokens = batch_tokens(lengths, s.batch);
  const int u = ring.degree;
  u64 others = 0;  // rows of the group's other members
  for (int m = ring.group * u; m < (ring.group + 1) * u; ++m) others += m == rank ? 0 : tokens[static_cast<std::size_t>(m)];
  const u64 mine = tokens[static_cast<std::size_t>(rank)] * static_cast<u64>(u - 1);  // rows this rank sends
  const u64 hq = as_u64(ring.shape.n_heads_q), hkv = as_u64(ring.shape.n_heads_kv), d = as_u64(s.head_dim);
  const u64 e = s.element_bytes, eo = s.output_bytes;
  const StrategyBytes r = ring_bytes_with(
      resolved(o, ring.lengths, ring.shape, ring.shape.n_heads_q, ring.shape.n_heads_kv), ring.shape,
      ring.lengths, ring.group, o);
  StrategyBytes out = r;
  out.forward = mine * (hq + 2 * hkv) * d * e + others * hq * (d * eo + 4) + r.forward;
  out.backward_bundle = mine * ((2 * hq + 2 * hkv) * d * e + hq * d * eo + hq * 4) + r.backward_bundle;
  out.backward_trailing = others * (hq + 2 * hkv) * d * 4 + r.backward_trailing;
  out.backward = out.backward_bundle + out.backward_trailing;
  return out;
}

// Ring all-gathers of equal blocks (the longest shard's K and V) over P - 1 steps; the
// backward gathers again and reduce-scatters fp32 dK, dV blocks of the same rows.
StrategyBytes allgather_bytes(const ProblemShape& s, const std::vector<std::int64_t>& lengths, int,
                              const StrategyOptions&) {
  const std::vector<u64> tokens = batch_tokens(lengths, s.batch);
  const u64 rows = *std::max_element(tokens.begin(), tokens.end()) * as_u64(s.n_heads_kv * s.head_dim);
  const u64 steps = tokens.size() - 1;
  StrategyBytes out;
  out.forward = steps * 2 * rows * s.element_bytes;
  out.backward_bundle = out.forward;
  out.backward_trailing = steps * 2 * rows * sizeof(float);
  out.backward = out.backward_bundle + out.backward_trailing;
  return out;
}

// ---- memory -------------------------------------------------------------------------------
// Each strategy's allocations beyond the caller's tensors, phase by phase as src/algo/*.cpp
// makes them (every AlignedBuffer of more than a few kilobytes); tests/faults/memory.sh
// holds `burst run`'s estimate built on them within 1.0-1.1x of the measured peak.

PassBytes input_bytes(const ProblemShape& shape, double tokens) {
  const Sizes z(shape, StrategyOptions{});
  const double kv_tokens = shape.seqlen_k > 0 ? static_cast<double>(shape.seqlen_k) : tokens;
  const double forward = z.q(tokens, z.e) + 2 * z.kv(kv_tokens, z.e);  // q, k, v
  return {forward, forward + z.q(tokens, z.e)};                        // dO
}

PassBytes output_bytes(const ProblemShape& shape, double tokens) {
  const Sizes z(shape, StrategyOptions{});
  const double kv_tokens = shape.seqlen_k > 0 ? static_cast<double>(shape.seqlen_k) : tokens;
  const double forward = z.q(tokens, z.eo) + z.stats(tokens);                       // out, lse
  return {forward, forward + z.q(tokens, 4) + 2 * z.kv(kv_tokens, 4)};              // dq, dk, dv
}

// One kernel call on the rank's whole problem (local, and tensor parallelism's heads):
// backward adds delta.
PassBytes local_workspace(const ProblemShape& s, const std::vector<std::int64_t>& lengths, const StrategyOptions& o,
                          const PassBytes& kernel) {
  const Sizes z(s, o);
  return {kernel.forward, z.stats(longest(lengths)) + kernel.backward};
}

namespace {

// BurstAttention's buffers (algo/burst.cpp). Forward: two K/V messages in flight (four on the
// double ring) and an fp32 running state when O is not fp32. Backward: delta, the stationary
// side's accumulators, this rank's bundle, two travelling bundles (four on the double ring),
// the home accumulator, the step's contribution and its wire copies in and out (three more on
// the double ring: to home, and two from away, one arriving while the other is added).
double ring_forward_workspace(const Sizes& z, double n, const StrategyOptions& o, const PassBytes& kernel) {
  return (o.double_ring ? 4 : 2) * 2 * z.kv(n, z.e) + (z.eo != 4 ? z.q(n, 4) : 0) + kernel.forward;
}
double ring_backward_workspace(const Sizes& z, double n, BackwardScheme scheme, const StrategyOptions& o,
                               const PassBytes& kernel) {
  const double travelling = o.double_ring ? 4 : 2, wires = o.double_ring ? 5 : 2;
  if (scheme == BackwardScheme::kQuery) {
    const double bundle = 2 * z.q(n, z.e) + 2 * z.stats(n), acc = z.q(n, 4), wire = z.q(n, z.wire);
    return z.stats(n) + 2 * z.kv(n, 4) + bundle + acc + travelling * bundle + acc + wires * wire + kernel.backward;
  }
  const double bundle = 2 * z.kv(n, z.e), acc = 2 * z.kv(n, 4), wire = 2 * z.kv(n, z.wire);
  return z.stats(n) + z.q(n, 4) + bundle + acc + travelling * bundle + acc + wires * wire + kernel.backward;
}

}  // namespace

PassBytes burst_workspace(const ProblemShape& s, const std::vector<std::int64_t>& lengths, const StrategyOptions& o,
                          const PassBytes& kernel) {
  const Sizes z(s, o);
  const double n = longest(lengths);
  const BackwardScheme scheme = resolved(o, lengths, s, s.n_heads_q, s.n_heads_kv);
  return {ring_forward_workspace(z, n, o, kernel), ring_backward_workspace(z, n, scheme, o, kernel)};
}

PassBytes ring_workspace(const ProblemShape& s, const std::vector<std::int64_t>& lengths, const StrategyOptions& o,
                         const PassBytes& kernel) {
  const Sizes z(s, o);
  const double n = longest(lengths);
  return {ring_forward_workspace(z, n, o, kernel),
          ring_backward_workspace(z, n, BackwardScheme::kKeyValue, o, kernel)};
}

// Score rows [b, h, n, N] fp32 (two in the backward: P and dS), one K or V shard pass (two
// buffers), the fp32 accumulator, and full-length fp32 dK/dV.
PassBytes ring_rsa_workspace(const ProblemShape& s, const std::vector<std::int64_t>& lengths, const StrategyOptions& o,
                             const PassBytes&) {
  const Sizes z(s, o);
  const double n = longest(lengths), all = total(lengths);
  const double scores = 4 * z.b * z.hq * n * all, pass = 2 * z.kv(n, z.e);
  return {scores + z.q(n, 4) + pass, z.stats(n) + 2 * scores + 2 * z.kv(all, 4) + z.q(n, 4) + pass};
}

// Head shards (b, N, h/P, d) of everything; each all-to-all adds a send and a receive buffer.
PassBytes ulysses_workspace(const ProblemShape& s, const std::vector<std::int64_t>& lengths, const StrategyOptions& o,
                            const PassBytes& kernel) {
  const Sizes z(s, o);
  const double p = static_cast<double>(lengths.size()), n = longest(lengths), all = total(lengths);
  const double qh = z.q(all, z.e) / p, kvh = z.kv(all, z.e) / p, oh = z.q(all, z.eo) / p;
  const double lh = z.stats(all) / p, qfh = z.q(all, 4) / p, kvfh = z.kv(all, 4) / p;
  const double held = z.stats(n) + 2 * qh + 2 * kvh;
  return {std::max(qh + 3 * kvh + z.kv(n, z.e), qh + 2 * kvh + oh + lh + std::max(kernel.forward, oh + z.q(n, z.eo))),
          std::max(held + qh + z.q(n, z.e), held + 2 * lh + qfh + 2 * kvfh + std::max(kernel.backward, qfh + z.q(n, 4)))};
}

// Head shards of the Ulysses group (its U ranks' tokens, h/U heads), then BurstAttention over
// the ring of groups on them. A degree that does not divide the ranks sizes the plain ring:
// the run refuses it with its own message (usp_cannot_run).
PassBytes usp_workspace(const ProblemShape& s, const std::vector<std::int64_t>& lengths, const StrategyOptions& o,
                        const PassBytes& kernel) {
  StrategyOptions valid = o;
  if (!usp_cannot_run(s, static_cast<int>(lengths.size()), o, false).empty()) valid.ulysses_degree = 1;
  const UspRing ring = usp_ring(s, lengths, 0, valid);
  const Sizes z(s, o), g(ring.shape, o);
  const double n = longest(lengths), ng = longest(ring.lengths);
  const double qg = g.q(ng, z.e), kvg = g.kv(ng, z.e), og = g.q(ng, z.eo);
  const double lg = g.stats(ng), qfg = g.q(ng, 4), kvfg = g.kv(ng, 4);
  const PassBytes inner = burst_workspace(ring.shape, ring.lengths, o, kernel);
  const double held = 2 * qg + 2 * kvg + og;
  return {std::max(qg + 3 * kvg + z.kv(n, z.e), qg + 2 * kvg + og + lg + std::max(inner.forward, og + z.q(n, z.eo))),
          std::max(held + qg + z.q(n, z.e), held + lg + qfg + 2 * kvfg + std::max(inner.backward, qfg + z.q(n, 4)))};
}

// Padded blocks (this rank's and everyone's) beside the gathered K/V while gathering;
// backward: full-length fp32 dK/dV, their per-rank padded copy and this rank's sums.
PassBytes allgather_workspace(const ProblemShape& s, const std::vector<std::int64_t>& lengths, const StrategyOptions& o,
                              const PassBytes& kernel) {
  const Sizes z(s, o);
  const double p = static_cast<double>(lengths.size()), n = longest(lengths), all = total(lengths);
  const double gathered = 2 * z.kv(all, z.e), blocks = 2 * z.kv(n, z.e) * (p + 1);
  return {std::max(blocks + gathered, gathered + kernel.forward),
          std::max(blocks + gathered, gathered + z.stats(n) + 2 * z.kv(n, 4) * p + 2 * z.kv(all, 4) +
                                          std::max(kernel.backward, 2 * z.kv(n, 4)))};
}

// ---- the layer's collectives --------------------------------------------------------------

StrategyBytes no_layer_bytes(std::int64_t, const std::vector<std::int64_t>&, int) { return {}; }

// All-reduces of Y (forward) and dX (backward) over the whole sequence.
StrategyBytes tp_v1_layer_bytes(std::int64_t row_floats, const std::vector<std::int64_t>& lengths, int) {
  u64 tokens = 0;
  for (std::int64_t n : lengths) tokens += as_u64(n);
  StrategyBytes out;
  out.forward = out.backward =
      comm::all_reduce_bytes(tokens * as_u64(row_floats), sizeof(float), static_cast<int>(lengths.size()));
  return out;
}

// Forward: all-gather X ((P - 1) n_r rows out) and reduce-scatter Y (N - n_r rows out);
// backward the same for dY and dX.
StrategyBytes tp_v3_layer_bytes(std::int64_t row_floats, const std::vector<std::int64_t>& lengths, int rank) {
  u64 tokens = 0;
  for (std::int64_t n : lengths) tokens += as_u64(n);
  const u64 mine = as_u64(lengths[static_cast<std::size_t>(rank)]), p = lengths.size();
  StrategyBytes out;
  out.forward = out.backward = ((p - 1) * mine + (tokens - mine)) * as_u64(row_floats) * sizeof(float);
  return out;
}

}  // namespace costs

// The layer's rows and activations (layer.cpp), with the attention core's workspace on this
// rank's heads: tensor parallelism runs one local kernel call over every token.
LayerMemory layer_memory(Strategy strategy, const LayerShape& shape, std::int64_t batch,
                         const std::vector<std::int64_t>& lengths, DType dtype, bool backward,
                         const StrategyOptions& options, const PassBytes& kernel) {
  const StrategyInfo& info = strategy_info(strategy);
  const bool tp = info.layer_only, v1 = strategy == Strategy::kTpV1, v3 = strategy == Strategy::kTpV3;
  const double p = static_cast<double>(lengths.size()), b = static_cast<double>(batch);
  const double big_n = total(lengths), n = longest(lengths), e = static_cast<double>(dtype_size(dtype));
  const double dim = static_cast<double>(shape.model_dim), d = static_cast<double>(shape.head_dim);
  ProblemShape core;  // the attention core of this rank: its heads; the layer keeps an fp32 O
  core.batch = batch;
  const HeadShard heads = tp ? tensor_parallel_heads(shape, static_cast<int>(lengths.size()), 0) : all_heads(shape);
  core.n_heads_q = heads.q_count;
  core.n_heads_kv = heads.kv_count;
  core.head_dim = shape.head_dim;
  core.element_bytes = dtype_size(dtype);
  core.output_bytes = sizeof(float);
  const std::vector<std::int64_t> core_lengths = tp ? std::vector<std::int64_t>{static_cast<std::int64_t>(big_n)} : lengths;
  const PassBytes w = info.workspace(core, core_lengths, options, kernel);
  const double hr = static_cast<double>(core.n_heads_q), gr = static_cast<double>(core.n_heads_kv);
  const double tokens = tp ? big_n : n;  // rows the heads cover
  const double rows = v1 ? big_n : n;    // rows of X and Y held
  const double row = 4 * b * dim;        // one token of X, Y, dY or dX
  const double x_rows = row * tokens;
  const double qkv32 = 4 * b * tokens * (hr + 2 * gr) * d, qkv = e / 4 * qkv32;
  const double out = 4 * b * tokens * hr * d, lse = 4 * b * hr * tokens;
  const double gather = v3 ? row * big_n + row * n : 0;       // tp-v3's all-gather of X
  const double scatter = v3 ? row * big_n + row * n * p : 0;  // tp-v3's reduce-scatter of Y
  const double partial = tp ? row * tokens : 0;               // Y or dX before summing
  const double saved = x_rows + qkv + out + lse;
  LayerMemory m;
  m.saved = saved;
  m.parameters = 4 * dim * (2 * hr + 2 * gr) * d;
  const double grads = m.parameters;
  m.forward = {{"X, Y rows", 2 * row * rows},
               {"activations", std::max({x_rows + gather, x_rows + qkv32 + (e != 4 ? qkv : 0), saved + w.forward,
                                         saved + partial + scatter})}};
  if (backward) {
    const double gathered = v3 ? row * big_n : 0;  // the forward's gathered X, kept
    const double dout = 4 * b * tokens * hr * d * (e != 4 ? 1 + e / 4 : 1), dqkv = qkv32;
    m.backward = {{"X, Y, dY, dX rows and gradients", 4 * row * rows + grads},
                  {"saved activations", saved},
                  {"backward temporaries",
                   std::max(gathered + gather, gathered + dout + dqkv + std::max(w.backward, partial + scatter))}};
  }
  m.held = 2 * row * rows + saved + grads + (backward ? 2 * row * rows : 0);
  return m;
}

}  // namespace burst::algo
