#include "burst/burst_attention.h"

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <sstream>

#include "burst/error.h"
#include "algo/common.h"
#include "kernels/detail.h"

namespace burst::algo {
namespace {

using comm::Communicator;
using detail::Plan;
using detail::check_and_plan;
using detail::add_traffic_since;
using detail::mark_traffic;
using detail::kernel_options;
using comm::Request;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Message tags: kind * kTagSpan + step.
constexpr int kTagSpan = 4096;
constexpr int kTagBundle = 1;
constexpr int kTagPartial = 2;
constexpr int kTagHome = 3;
int tag(int kind, int step) { return kind * kTagSpan + step % kTagSpan; }

// ---- helpers ------------------------------------------------------------------------------

// A shard's positions as runs [first, last] of consecutive positions. Query runs also end
// at document boundaries: the keys a query run sees then form one run of positions, from its
// first query's first key to its last query's last key (MaskSpec::key_range). Key runs are
// sorted, so a binary search tells whether any key lies in such a run.
struct Span {
  std::int64_t first, last;
};

std::vector<Span> query_runs(const kernels::MaskSpec& mask, const std::vector<std::int64_t>& q) {
  std::vector<Span> runs;
  for (std::size_t i = 0; i < q.size();) {
    std::size_t j = i;
    const std::int64_t end = mask.documents.empty()
                                 ? std::numeric_limits<std::int64_t>::max()
                                 : mask.documents[static_cast<std::size_t>(mask.document_of(q[i])) + 1];
    while (j + 1 < q.size() && q[j + 1] == q[j] + 1 && q[j + 1] < end) ++j;
    runs.push_back({q[i], q[j]});
    i = j + 1;
  }
  return runs;
}

std::vector<Span> key_runs(const std::vector<std::int64_t>& positions) {
  std::vector<std::int64_t> sorted;
  if (!std::is_sorted(positions.begin(), positions.end())) {
    sorted = positions;
    std::sort(sorted.begin(), sorted.end());
  }
  const std::vector<std::int64_t>& k = sorted.empty() ? positions : sorted;
  std::vector<Span> runs;
  for (const std::int64_t x : k) {
    if (!runs.empty() && x <= runs.back().last + 1) {
      runs.back().last = std::max(runs.back().last, x);
    } else {
      runs.push_back({x, x});
    }
  }
  return runs;
}

// Whether any query of the shard with runs `q` sees any key of the shard with runs `k`,
// exactly.
bool runs_interact(const kernels::MaskSpec& mask, const std::vector<Span>& q, const std::vector<Span>& k) {
  for (const Span& run : q) {
    const std::int64_t first = mask.key_range(run.first).first, last = mask.key_range(run.last).last;
    if (last < first) continue;
    // The first key run that ends at or after `first`: a key in [first, last] lies in it if any does.
    const auto it = std::lower_bound(k.begin(), k.end(), first, [](const Span& s, std::int64_t x) { return s.last < x; });
    if (it != k.end() && it->first <= last) return true;
  }
  return false;
}

// meets[i][j]: whether rank i's queries see some key of rank j. Each shard is reduced to its
// runs once, so the P^2 tests cost P^2 x runs x log(runs), not P^2 x shard length: zigzag
// shards have two runs, contiguous ones one.
std::vector<std::vector<bool>> interaction_matrix(const kernels::MaskSpec& mask,
                                                  const std::vector<std::vector<std::int64_t>>& positions) {
  const std::size_t p = positions.size();
  std::vector<std::vector<bool>> meets(p, std::vector<bool>(p, true));
  if (!mask.masks_anything()) return meets;
  std::vector<std::vector<Span>> queries, keys;
  for (const std::vector<std::int64_t>& pos : positions) {
    queries.push_back(query_runs(mask, pos));
    keys.push_back(key_runs(pos));
  }
  for (std::size_t i = 0; i < p; ++i)
    for (std::size_t j = 0; j < p; ++j) meets[i][j] = runs_interact(mask, queries[i], keys[j]);
  return meets;
}

// The last ring step at which some rank needs origin j's travelling shard, where
// needed(j, i) says whether rank i does: 0 when only j itself or nobody does.
int last_step_of(int j, int p, const std::function<bool(int, int)>& needed) {
  for (int t = p - 1; t > 0; --t)
    if (needed(j, (j + t) % p)) return t;
  return 0;
}

// Waits for requests, adding the time to the exposed-communication total.
void wait_timed(std::span<Request> requests, Communicator& comm, StrategyStats& stats) {
  const auto t0 = Clock::now();
  comm::wait_all(requests, comm.deadline());
  stats.wait_seconds += seconds_since(t0);
}

// ---- the travelling pipeline of both backward schemes -------------------------------------

// Partial sums cross the wire in `wire` precision and are added in fp32.
void add_from_wire(const AlignedBuffer& src, DType wire, float* c, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    c[i] = (wire == DType::kF32 ? src.as<const float>()[i] : bf16_to_float(src.as<const bf16_bits>()[i])) + c[i];
  }
}

void to_wire(const float* c, DType wire, AlignedBuffer& dst, std::size_t n) {
  if (wire == DType::kF32) {
    std::memcpy(dst.data(), c, n * 4);
    return;
  }
  for (std::size_t i = 0; i < n; ++i) dst.as<bf16_bits>()[i] = float_to_bf16(c[i]);
}

// At step t rank r holds the bundle of origin j = r - t: it computes j's contribution into
// `contrib` (zeroed), adds the partial sum of j's accumulator received from r - 1 (which
// handled j one step earlier) and sends the sum to r + 1. Bundles are sent before the
// compute (they run one step ahead), accumulators after it. A bundle travels only as far as
// the last rank that needs it (last_step: all P - 1 hops without a mask); that rank sends
// the accumulator, complete, straight home (with no mask: the left neighbour of home after a
// full circle). Accumulators are summed in the fixed order j, j + 1, ...: results are
// bitwise reproducible.
struct Travel {
  std::function<std::size_t(int)> bundle_bytes;  // travelling inputs of origin j
  std::function<std::size_t(int)> acc_floats;    // accumulator of origin j (fp32)
  std::function<bool(int)> interacts;            // whether this rank's compute for j is needed
  // The last ring step (0..P-1, 0 = home) at which a rank needs origin j's bundle; 0 when
  // only home does or none does.
  std::function<int(int)> last_step;
  std::function<void(int, const char*, float*)> compute;  // adds j's contribution into contrib
};

// Runs one ring step's kernel work when the shards can meet (else counts a skipped step),
// adding its time to the step statistics.
template <class Work>
void timed_step(StrategyStats& stats, bool needed, Work&& work) {
  const auto t0 = Clock::now();
  if (needed) {
    work();
    ++stats.steps_computed;
  } else {
    ++stats.steps_skipped;
  }
  const double took = seconds_since(t0);
  stats.compute_seconds += took;
  stats.step_seconds.push_back(took);
}

// Zeroes contrib and adds origin j's contribution of this rank into it.
void compute_step(const Travel& spec, int j, const char* bundle, float* contrib, std::size_t acc, StrategyStats& stats) {
  std::fill_n(contrib, acc, 0.0f);
  timed_step(stats, spec.interacts(j), [&] { spec.compute(j, bundle, contrib); });
}

// Where this rank's accumulator lands when it comes home: `home` itself (fp32, free until
// then), or with a bf16 wire its second half, widened in place afterwards (float i is written
// at byte 4i, below the bf16 value it reads at byte 2n + 2i and every one after it).
void* home_landing(float* home, std::size_t n, DType wire) {
  return wire == DType::kF32 ? static_cast<void*>(home) : static_cast<void*>(reinterpret_cast<bf16_bits*>(home) + n);
}
void widen_home(float* home, std::size_t n, DType wire) {
  if (wire == DType::kF32) return;
  const bf16_bits* src = reinterpret_cast<const bf16_bits*>(home) + n;
  for (std::size_t i = 0; i < n; ++i) home[i] = bf16_to_float(src[i]);
}

void travel(Communicator& comm, const Travel& spec, const void* own_bundle, float* home, DType wire,
            StrategyStats& stats) {
  const std::size_t wire_bytes = dtype_size(wire);
  const int p = comm.world_size(), r = comm.rank();
  const int right = (r + 1) % p, left = (r - 1 + p) % p;
  std::size_t max_bundle = 0, max_acc = 0;
  for (int j = 0; j < p; ++j) {
    max_bundle = std::max(max_bundle, spec.bundle_bytes(j));
    max_acc = std::max(max_acc, spec.acc_floats(j));
  }
  AlignedBuffer bundles[2] = {AlignedBuffer(max_bundle), AlignedBuffer(max_bundle)};
  AlignedBuffer contrib(max_acc * 4), incoming(max_acc * wire_bytes), outgoing(max_acc * wire_bytes);
  std::memcpy(bundles[0].data(), own_bundle, spec.bundle_bytes(r));
  // This rank's accumulator comes back from the last rank its bundle reaches, posted now:
  // that rank may send it long before this one's own steps are over.
  const std::size_t own_acc = spec.acc_floats(r);
  const int own_last = spec.last_step(r);
  Request home_in;
  if (own_last > 0) {
    home_in = comm.irecv(home_landing(home, own_acc, wire), own_acc * wire_bytes, (r + own_last) % p, tag(kTagHome, 0));
  }
  Request pending_out;  // the send of `outgoing` in flight (to the right, or home)
  int cur = 0;
  for (int t = 0; t < p; ++t) {
    const int j = (r - t + p) % p;
    const int last = spec.last_step(j);
    const std::size_t acc = spec.acc_floats(j);
    // Step t: compute on the bundle of rank j while receiving the one of rank j - 1.
    Request moves[2];
    if (t + 1 < p) {
      const int next = (r - t - 1 + p) % p;
      if (t + 1 <= spec.last_step(next)) {
        moves[0] = comm.irecv(bundles[1 - cur].data(), spec.bundle_bytes(next), left, tag(kTagBundle, t));
      }
      if (t < last) {
        moves[1] = comm.isend(bundles[cur].data(), spec.bundle_bytes(j), right, tag(kTagBundle, t));
      } else {
        stats.bytes_saved += spec.bundle_bytes(j);
      }
    }
    // The accumulator's hops: every step without a mask (P - 1 hops and home), else up to
    // `last` and home.
    const bool holds = t <= last;
    if (p > 1 && (!holds || last == 0)) stats.bytes_saved += acc * wire_bytes;
    if (holds) {
      Request partial_in;
      if (t > 0) partial_in = comm.irecv(incoming.data(), acc * wire_bytes, left, tag(kTagPartial, t - 1));
      float* c = contrib.as<float>();
      compute_step(spec, j, bundles[cur].as<const char>(), c, acc, stats);
      if (t > 0) {
        wait_timed({&partial_in, 1}, comm, stats);
        add_from_wire(incoming, wire, c, acc);
      }
      if (t == 0 && last == 0) {
        std::memcpy(home, c, acc * 4);  // only home needs its own bundle: complete here
      } else {
        // On to the right, or, from the last rank that needs the bundle, straight home.
        wait_timed({&pending_out, 1}, comm, stats);
        to_wire(c, wire, outgoing, acc);
        pending_out = t < last ? comm.isend(outgoing.data(), acc * wire_bytes, right, tag(kTagPartial, t))
                               : comm.isend(outgoing.data(), acc * wire_bytes, j, tag(kTagHome, 0));
      }
    } else {
      ++stats.steps_skipped;  // the bundle never reaches this rank
      stats.step_seconds.push_back(0.0);
    }
    wait_timed(moves, comm, stats);
    cur = 1 - cur;
  }
  wait_timed({&pending_out, 1}, comm, stats);
  if (own_last > 0) {
    wait_timed({&home_in, 1}, comm, stats);
    widen_home(home, own_acc, wire);
  }
}

// Ranks grouped by node for the topology-aware double ring: I nodes of L ranks, an
// intra-node communicator per node and an inter-node one per local index.
struct DoubleRing {
  int nodes = 0, per_node = 0, node = 0, local = 0;
  std::vector<std::vector<int>> ranks_of;  // ranks of each node, ascending
  std::unique_ptr<Communicator> intra, inter;

  // Rank (of the parent communicator) with local index l on node n, both taken cyclically.
  int rank_at(int n, int l) const {
    return ranks_of[static_cast<std::size_t>((n % nodes + nodes) % nodes)]
                   [static_cast<std::size_t>((l % per_node + per_node) % per_node)];
  }
  int intra_right() const { return (local + 1) % per_node; }
  int intra_left() const { return (local - 1 + per_node) % per_node; }
  int inter_right() const { return (node + 1) % nodes; }
  int inter_left() const { return (node - 1 + nodes) % nodes; }
};

DoubleRing make_double_ring(Communicator& comm) {
  DoubleRing d;
  const auto& node_of = comm.node_of_rank();
  d.nodes = comm.node_count();
  d.ranks_of.resize(static_cast<std::size_t>(d.nodes));
  for (int r = 0; r < comm.world_size(); ++r) d.ranks_of[static_cast<std::size_t>(node_of[static_cast<std::size_t>(r)])].push_back(r);
  d.per_node = static_cast<int>(d.ranks_of[0].size());
  for (int n = 0; n < d.nodes; ++n) {
    BURST_CHECK(static_cast<int>(d.ranks_of[static_cast<std::size_t>(n)].size()) == d.per_node,
                "double ring: every node needs the same number of ranks, node 0 has ", d.per_node, " and node ", n,
                " has ", d.ranks_of[static_cast<std::size_t>(n)].size());
  }
  d.node = node_of[static_cast<std::size_t>(comm.rank())];
  const auto& mine = d.ranks_of[static_cast<std::size_t>(d.node)];
  d.local = static_cast<int>(std::find(mine.begin(), mine.end(), comm.rank()) - mine.begin());
  d.intra = comm.split(d.node, d.local);
  d.inter = comm.split(d.local, d.node);
  return d;
}

void add_traffic(const DoubleRing& d, StrategyStats& stats) {
  stats.bytes_sent += d.intra->traffic().total_sent(comm::Op::kPointToPoint) + d.inter->traffic().total_sent(comm::Op::kPointToPoint);
  stats.bytes_received += d.intra->traffic().total_received(comm::Op::kPointToPoint) +
                          d.inter->traffic().total_received(comm::Op::kPointToPoint);
}

// The forward over the double ring. Outer step u: this rank holds the outer shard of the rank
// with its local index on node (n - u); it first posts the inter-node hop (outer shard to the
// same local index on node n + 1, the next one from node n - 1), then runs an intra-node
// ring of L steps over the outer shards of its node, so the slow hop hides behind L intra
// steps. Every rank sends P - 1 shards, as in the single ring.
void double_ring_forward(Communicator& comm, const std::function<std::size_t(int)>& half_bytes,
                         AlignedBuffer (&buffers)[2], const std::function<void(int, char*)>& compute_on,
                         StrategyStats& stats) {
  const DoubleRing d = make_double_ring(comm);
  std::size_t max_bytes = 0;
  for (int j = 0; j < comm.world_size(); ++j) max_bytes = std::max(max_bytes, 2 * half_bytes(j));
  AlignedBuffer inner[2] = {AlignedBuffer(max_bytes), AlignedBuffer(max_bytes)};
  int outer = 0;
  for (int u = 0; u < d.nodes; ++u) {
    Request hop[2];
    if (u + 1 < d.nodes) {
      hop[0] = d.inter->irecv(buffers[1 - outer].data(), 2 * half_bytes(d.rank_at(d.node - u - 1, d.local)),
                              d.inter_left(), tag(kTagBundle, u));
      hop[1] = d.inter->isend(buffers[outer].data(), 2 * half_bytes(d.rank_at(d.node - u, d.local)),
                              d.inter_right(), tag(kTagBundle, u));
    }
    // Intra step s: compute on the outer shard of local index (local - s) of this outer step
    // while passing it to the right and receiving the next from the left.
    int cur = 0;
    for (int s = 0; s < d.per_node; ++s) {
      const int origin = d.rank_at(d.node - u, d.local - s);
      char* held = s == 0 ? buffers[outer].as<char>() : inner[cur].as<char>();
      Request moves[2];
      if (s + 1 < d.per_node) {
        moves[0] = d.intra->irecv(inner[1 - cur].data(), 2 * half_bytes(d.rank_at(d.node - u, d.local - s - 1)),
                                  d.intra_left(), tag(kTagBundle, s));
        moves[1] = d.intra->isend(held, 2 * half_bytes(origin), d.intra_right(), tag(kTagBundle, s));
      }
      compute_on(origin, held);
      wait_timed(moves, *d.intra, stats);
      cur = 1 - cur;
    }
    wait_timed(hop, *d.inter, stats);
    outer = 1 - outer;
  }
  add_traffic(d, stats);
}

// The backward pipeline over the double ring. Bundles follow the forward's double-ring path.
// The accumulator of a bundle trails it along its node's intra ring; the node's last rank
// sends the node's partial sum straight home, and home adds the I node partials in the fixed
// order of the outer steps. A node partial is sent at the end of an outer step, across nodes
// from the second on: home adds it at the end of the next outer step, so it crosses while
// that step computes, and only the last one is waited for. Per rank: P - 1 bundle sends and
// P accumulator sends, as in the single ring; memory independent of P.
void travel_double_ring(Communicator& comm, const Travel& spec, const void* own_bundle, float* home, DType wire,
                        StrategyStats& stats) {
  const DoubleRing d = make_double_ring(comm);
  const std::size_t wire_bytes = dtype_size(wire);
  std::size_t max_bundle = 0, max_acc = 0;
  for (int j = 0; j < comm.world_size(); ++j) {
    max_bundle = std::max(max_bundle, spec.bundle_bytes(j));
    max_acc = std::max(max_acc, spec.acc_floats(j));
  }
  AlignedBuffer outer_buf[2] = {AlignedBuffer(max_bundle), AlignedBuffer(max_bundle)};
  AlignedBuffer inner[2] = {AlignedBuffer(max_bundle), AlignedBuffer(max_bundle)};
  AlignedBuffer contrib(max_acc * 4), incoming(max_acc * wire_bytes), outgoing(max_acc * wire_bytes),
      to_home(max_acc * wire_bytes);
  std::memcpy(outer_buf[0].data(), own_bundle, spec.bundle_bytes(comm.rank()));
  const std::size_t own_acc = spec.acc_floats(comm.rank());
  AlignedBuffer from_away[2] = {AlignedBuffer(own_acc * wire_bytes), AlignedBuffer(own_acc * wire_bytes)};
  std::fill_n(home, own_acc, 0.0f);
  Request pending_partial, pending_home, home_in[2];
  // Adds the node partial of outer step u to home, once it has arrived.
  const auto add_home = [&](int u) {
    const auto k = static_cast<std::size_t>(u % 2);
    wait_timed({&home_in[k], 1}, comm, stats);
    add_from_wire(from_away[k], wire, home, own_acc);
  };
  int outer = 0;
  for (int u = 0; u < d.nodes; ++u) {
    Request hop[2];
    if (u + 1 < d.nodes) {
      hop[0] = d.inter->irecv(outer_buf[1 - outer].data(), spec.bundle_bytes(d.rank_at(d.node - u - 1, d.local)),
                              d.inter_left(), tag(kTagBundle, u));
      hop[1] = d.inter->isend(outer_buf[outer].data(), spec.bundle_bytes(d.rank_at(d.node - u, d.local)),
                              d.inter_right(), tag(kTagBundle, u));
    }
    // This outer step, node n + u handles this rank's bundle; its rank before this one's
    // local index is the last to add to it and sends the node's partial sum here.
    home_in[u % 2] = comm.irecv(from_away[u % 2].data(), own_acc * wire_bytes, d.rank_at(d.node + u, d.local - 1),
                                tag(kTagHome, u));
    int cur = 0;
    for (int s = 0; s < d.per_node; ++s) {
      const int origin = d.rank_at(d.node - u, d.local - s);
      const std::size_t acc = spec.acc_floats(origin);
      char* held = s == 0 ? outer_buf[outer].as<char>() : inner[cur].as<char>();
      Request moves[2];
      if (s + 1 < d.per_node) {
        moves[0] = d.intra->irecv(inner[1 - cur].data(), spec.bundle_bytes(d.rank_at(d.node - u, d.local - s - 1)),
                                  d.intra_left(), tag(kTagBundle, s));
        moves[1] = d.intra->isend(held, spec.bundle_bytes(origin), d.intra_right(), tag(kTagBundle, s));
      }
      Request partial_in;
      if (s > 0) partial_in = d.intra->irecv(incoming.data(), acc * wire_bytes, d.intra_left(), tag(kTagPartial, s - 1));
      float* c = contrib.as<float>();
      compute_step(spec, origin, held, c, acc, stats);
      if (s > 0) {
        wait_timed({&partial_in, 1}, *d.intra, stats);
        add_from_wire(incoming, wire, c, acc);
      }
      if (s + 1 < d.per_node) {
        wait_timed({&pending_partial, 1}, *d.intra, stats);
        to_wire(c, wire, outgoing, acc);
        pending_partial = d.intra->isend(outgoing.data(), acc * wire_bytes, d.intra_right(), tag(kTagPartial, s));
      } else {
        wait_timed({&pending_home, 1}, comm, stats);
        to_wire(c, wire, to_home, acc);
        pending_home = comm.isend(to_home.data(), acc * wire_bytes, origin, tag(kTagHome, u));
      }
      wait_timed(moves, *d.intra, stats);
      cur = 1 - cur;
    }
    if (u > 0) add_home(u - 1);
    wait_timed(hop, *d.inter, stats);
    outer = 1 - outer;
  }
  add_home(d.nodes - 1);
  Request last[2] = {std::move(pending_partial), std::move(pending_home)};
  wait_timed(last, comm, stats);
  add_traffic(d, stats);
}

// The backward pipeline over the ring the options ask for.
void run_travel(Communicator& comm, const Travel& spec, const void* own_bundle, float* home, const BurstOptions& o,
                StrategyStats& stats) {
  if (o.double_ring && comm.node_count() > 1) {
    travel_double_ring(comm, spec, own_bundle, home, o.gradient_wire, stats);
  } else {
    travel(comm, spec, own_bundle, home, o.gradient_wire, stats);
  }
}

}  // namespace

std::string scheme_name(BackwardScheme scheme) {
  switch (scheme) {
    case BackwardScheme::kAuto: return "auto";
    case BackwardScheme::kQuery: return "q";
    case BackwardScheme::kKeyValue: return "kv";
  }
  return "?";
}

BackwardScheme parse_scheme(const std::string& text, const std::string& what) {
  for (BackwardScheme s : {BackwardScheme::kAuto, BackwardScheme::kQuery, BackwardScheme::kKeyValue}) {
    if (text == scheme_name(s)) return s;
  }
  fail(what, ": expected auto, q or kv, got '", text, "'");
}

StrategyStats burst_forward(Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v,
                            const TensorView& out, const RowStatsView& lse, const BurstOptions& o) {
  const Plan plan = check_and_plan(comm, q, k, v, o, detail::ring_settings(o));
  const int p = comm.world_size(), r = comm.rank();
  const int right = (r + 1) % p, left = (r - 1 + p) % p;
  StrategyStats stats;
  const detail::TrafficMark mark = mark_traffic(comm);

  // K and V of origin o travel as one message: K [b, n_o, hkv, d] then V, dense.
  const std::size_t e = dtype_size(k.dtype);
  auto half_bytes = [&](int origin) {
    return static_cast<std::size_t>(k.b * plan.lengths[static_cast<std::size_t>(origin)] * k.h * k.d) * e;
  };
  std::size_t max_bytes = 0;
  for (int j = 0; j < p; ++j) max_bytes = std::max(max_bytes, 2 * half_bytes(j));
  AlignedBuffer buffers[2] = {AlignedBuffer(max_bytes), AlignedBuffer(max_bytes)};
  pack_rows(k, buffers[0].data());
  pack_rows(v, buffers[0].as<char>() + half_bytes(r));

  // The running state is fp32: `out` itself when it is fp32.
  Tensor state_storage;
  TensorView state = out;
  if (out.dtype != DType::kF32) {
    state_storage = Tensor(DType::kF32, out.b, out.s, out.h, out.d);
    state = state_storage.view();
  }
  kernels::init_forward_state(state, lse);

  // meets[i][j]: rank i's queries see some key of rank j. A shard is forwarded only while a
  // later rank on its way needs it (sliding windows, packed documents).
  const std::vector<std::vector<bool>> meets = interaction_matrix(o.mask, plan.positions);
  auto needs = [&](int origin, int i) { return static_cast<bool>(meets[static_cast<std::size_t>(i)][static_cast<std::size_t>(origin)]); };
  auto forwarded_after = [&](int origin, int t) {  // does the shard leave rank origin + t?
    return t < last_step_of(origin, p, needs);
  };

  kernels::AttentionOptions kopt = kernel_options(o, comm);
  kopt.q_pos.ids = plan.positions[static_cast<std::size_t>(r)].data();
  // Continues the running state with the K/V shard of rank j held in `base`.
  auto compute_on = [&](int j, char* base) {
    timed_step(stats, needs(j, r), [&] {
      const std::int64_t n = plan.lengths[static_cast<std::size_t>(j)];
      const TensorView kj = dense_view(base, k.dtype, k.b, n, k.h, k.d);
      const TensorView vj = dense_view(base + half_bytes(j), k.dtype, k.b, n, k.h, k.d);
      kopt.k_pos.ids = plan.positions[static_cast<std::size_t>(j)].data();
      kernels::attention_forward_continue(q, kj, vj, state, lse, kopt);
    });
  };

  if (o.double_ring && comm.node_count() > 1) {
    double_ring_forward(comm, half_bytes, buffers, compute_on, stats);
  } else {
    int cur = 0;
    for (int t = 0; t < p; ++t) {
      const int j = (r - t + p) % p;
      // Step t: compute on the K/V shard of rank j = r - t while receiving the one of rank
      // j - 1 from the left and passing this one to the right.
      Request moves[2];
      if (t + 1 < p) {
        const int next = (r - t - 1 + p) % p;
        if (forwarded_after(next, t)) {
          moves[0] = comm.irecv(buffers[1 - cur].data(), 2 * half_bytes(next), left, tag(kTagBundle, t));
        }
        if (forwarded_after(j, t)) {
          moves[1] = comm.isend(buffers[cur].data(), 2 * half_bytes(j), right, tag(kTagBundle, t));
        } else {
          stats.bytes_saved += 2 * half_bytes(j);
        }
      }
      compute_on(j, buffers[cur].as<char>());
      wait_timed(moves, comm, stats);
      cur = 1 - cur;
    }
  }
  if (out.dtype != DType::kF32) {
    for (std::int64_t ib = 0; ib < out.b; ++ib)
      for (std::int64_t is = 0; is < out.s; ++is)
        for (std::int64_t ih = 0; ih < out.h; ++ih) {
          const float* src = state.row<const float>(ib, is, ih);
          bf16_bits* dst = out.row<bf16_bits>(ib, is, ih);
          for (std::int64_t x = 0; x < out.d; ++x) dst[x] = float_to_bf16(src[x]);
        }
  }
  add_traffic_since(comm, mark, {comm::Op::kPointToPoint}, stats);
  return stats;
}

StrategyStats burst_backward(Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v,
                             const TensorView& out, const RowStatsView& lse, const TensorView& dout,
                             const TensorView& dq, const TensorView& dk, const TensorView& dv,
                             const BurstOptions& o) {
  const Plan plan = check_and_plan(comm, q, k, v, o, detail::ring_settings(o));
  detail::check_backward_tensors(q, k, out, dout, dq, dk, dv);

  const int r = comm.rank();
  StrategyStats stats;
  const detail::TrafficMark mark = mark_traffic(comm);
  const std::size_t e = dtype_size(q.dtype);
  const std::int64_t b = q.b, hq = q.h, hkv = k.h, d = q.d;
  stats.scheme = o.backward_scheme == BackwardScheme::kAuto ? choose_scheme(o.layout, plan.lengths, b, hq, hkv, d, e)
                                                            : o.backward_scheme;
  BURST_CHECK(o.gradient_wire == DType::kF32 || o.gradient_wire == DType::kBF16,
              "gradient_wire: expected fp32 or bf16");

  RowStats delta(b, hq, q.s);
  kernels::compute_delta(dout, out, delta.view(), o.threads);
  kernels::AttentionOptions kopt = kernel_options(o, comm);
  auto n_of = [&](int j) { return plan.lengths[static_cast<std::size_t>(j)]; };
  auto pos_of = [&](int j) { return plan.positions[static_cast<std::size_t>(j)].data(); };
  const std::vector<std::vector<bool>> meets = interaction_matrix(o.mask, plan.positions);
  auto interacts = [&](int qrank, int krank) {
    return static_cast<bool>(meets[static_cast<std::size_t>(qrank)][static_cast<std::size_t>(krank)]);
  };
  const int p = comm.world_size();

  if (stats.scheme == BackwardScheme::kQuery) {
    // Bundle of origin j: Q_j, dO_j [b, n_j, hq, d] (input dtype), then delta_j, lse_j
    // [b, hq, n_j] fp32. K, V stay; dK, dV accumulate here; dQ_j travels behind its bundle.
    auto rows = [&](int j) { return static_cast<std::size_t>(b * n_of(j) * hq * d) * e; };
    auto stats_bytes = [&](int j) { return static_cast<std::size_t>(b * hq * n_of(j)) * 4; };
    Travel spec;
    spec.bundle_bytes = [&](int j) { return 2 * rows(j) + 2 * stats_bytes(j); };
    spec.acc_floats = [&](int j) { return static_cast<std::size_t>(b * n_of(j) * hq * d); };
    spec.interacts = [&](int j) { return interacts(j, r); };
    spec.last_step = [&](int j) { return last_step_of(j, p, interacts); };
    Tensor dk_acc(DType::kF32, b, k.s, hkv, d), dv_acc(DType::kF32, b, k.s, hkv, d);
    dk_acc.fill_zero();
    dv_acc.fill_zero();
    spec.compute = [&](int j, const char* bundle, float* contrib) {
      const std::int64_t n = n_of(j);
      const TensorView qj = dense_view(const_cast<char*>(bundle), q.dtype, b, n, hq, d);
      const TensorView doj = dense_view(const_cast<char*>(bundle) + rows(j), q.dtype, b, n, hq, d);
      auto* stats_base = reinterpret_cast<float*>(const_cast<char*>(bundle) + 2 * rows(j));
      kopt.q_pos.ids = pos_of(j);
      kopt.k_pos.ids = pos_of(r);
      kernels::attention_backward(qj, k, v, doj, dense_stats(stats_base + b * hq * n, b, hq, n),
                                  dense_stats(stats_base, b, hq, n), dense_view(contrib, DType::kF32, b, n, hq, d),
                                  dk_acc.view(), dv_acc.view(), kopt);
    };
    AlignedBuffer own(spec.bundle_bytes(r));
    pack_rows(q, own.data());
    pack_rows(dout, own.as<char>() + rows(r));
    pack_stats(delta.view(), reinterpret_cast<float*>(own.as<char>() + 2 * rows(r)));
    pack_stats(lse, reinterpret_cast<float*>(own.as<char>() + 2 * rows(r) + stats_bytes(r)));
    Tensor dq_home(DType::kF32, b, q.s, hq, d);
    run_travel(comm, spec, own.data(), dq_home.data<float>(), o, stats);
    unpack_rows(dq_home.data<float>(), dq);
    unpack_rows(dk_acc.data<float>(), dk);
    unpack_rows(dv_acc.data<float>(), dv);
  } else {
    // Bundle of origin j: K_j, V_j [b, n_j, hkv, d]. Q, dO stay; dQ accumulates here; dK_j,
    // dV_j travel behind their bundle.
    auto half = [&](int j) { return static_cast<std::size_t>(b * n_of(j) * hkv * d) * e; };
    Travel spec;
    spec.bundle_bytes = [&](int j) { return 2 * half(j); };
    spec.acc_floats = [&](int j) { return static_cast<std::size_t>(2 * b * n_of(j) * hkv * d); };
    spec.interacts = [&](int j) { return interacts(r, j); };
    spec.last_step = [&](int j) { return last_step_of(j, p, [&](int origin, int i) { return interacts(i, origin); }); };
    Tensor dq_acc(DType::kF32, b, q.s, hq, d);
    dq_acc.fill_zero();
    spec.compute = [&](int j, const char* bundle, float* contrib) {
      const std::int64_t n = n_of(j);
      const TensorView kj = dense_view(const_cast<char*>(bundle), k.dtype, b, n, hkv, d);
      const TensorView vj = dense_view(const_cast<char*>(bundle) + half(j), k.dtype, b, n, hkv, d);
      kopt.q_pos.ids = pos_of(r);
      kopt.k_pos.ids = pos_of(j);
      kernels::attention_backward(q, kj, vj, dout, lse, delta.view(), dq_acc.view(),
                                  dense_view(contrib, DType::kF32, b, n, hkv, d),
                                  dense_view(contrib + b * n * hkv * d, DType::kF32, b, n, hkv, d), kopt);
    };
    AlignedBuffer own(spec.bundle_bytes(r));
    pack_rows(k, own.data());
    pack_rows(v, own.as<char>() + half(r));
    AlignedBuffer home(spec.acc_floats(r) * 4);
    run_travel(comm, spec, own.data(), home.as<float>(), o, stats);
    unpack_rows(home.data(), dk);
    unpack_rows(home.as<float>() + b * k.s * hkv * d, dv);
    unpack_rows(dq_acc.data<float>(), dq);
  }
  add_traffic_since(comm, mark, {comm::Op::kPointToPoint}, stats);
  return stats;
}

}  // namespace burst::algo
