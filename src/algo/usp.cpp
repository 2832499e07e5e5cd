#include "algo/usp.h"

#include <chrono>
#include <memory>

#include "algo/common.h"
#include "algo/costs.h"
#include "algo/head_exchange.h"
#include "burst/error.h"

namespace burst::algo {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The two sub-communicators and plans of USP for this rank.
struct Hybrid {
  std::unique_ptr<Communicator> group;  // the U ranks of this rank's Ulysses group
  std::unique_ptr<Communicator> ring;   // one rank of every group, same index
  detail::Plan group_plan;              // the group members' token positions
  BurstOptions ring_options;            // the ring over the groups' token sets
};

Hybrid make_hybrid(Communicator& comm, const detail::Plan& plan, const TensorView& q, const TensorView& k,
                   const StrategyOptions& o) {
  const int p = comm.world_size(), u = o.ulysses_degree;
  ProblemShape shape;
  shape.n_heads_q = q.h;
  shape.n_heads_kv = k.h;
  const std::string why = costs::usp_cannot_run(shape, p, o, false);
  BURST_CHECK(why.empty(), why);
  Hybrid h;
  const int group = comm.rank() / u, index = comm.rank() % u;
  h.group = comm.split(group, index);
  h.ring = comm.split(index, group);
  for (int i = 0; i < u; ++i) {
    h.group_plan.positions.push_back(plan.positions[static_cast<std::size_t>(group * u + i)]);
    h.group_plan.lengths.push_back(plan.lengths[static_cast<std::size_t>(group * u + i)]);
  }
  h.ring_options = o;  // the ring's settings and the shared ones
  h.ring_options.positions.clear();
  for (int g = 0; g < p / u; ++g) {  // a group's tokens, in member order
    std::vector<std::int64_t> tokens;
    for (int i = 0; i < u; ++i) {
      const auto& pos = plan.positions[static_cast<std::size_t>(g * u + i)];
      tokens.insert(tokens.end(), pos.begin(), pos.end());
    }
    h.ring_options.positions.push_back(std::move(tokens));
  }
  return h;
}

// What the ranks must agree on besides the shapes: the ring's settings and the group size.
std::vector<comm::Setting> settings_of(const StrategyOptions& o) {
  std::vector<comm::Setting> s = detail::ring_settings(o);
  s.push_back({"ulysses degree", std::to_string(o.ulysses_degree)});
  return s;
}

void add_exchange_traffic(const Communicator& group, const detail::TrafficMark& mark, StrategyStats& stats) {
  detail::add_traffic_since(group, mark, {comm::Op::kAllToAll}, stats);
}

}  // namespace

StrategyStats usp_forward(Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v,
                          const TensorView& out, const RowStatsView& lse, const StrategyOptions& o) {
  const detail::Plan plan = detail::check_and_plan(comm, q, k, v, o, settings_of(o));
  Hybrid h = make_hybrid(comm, plan, q, k, o);
  HeadExchange x(*h.group, h.group_plan);
  const detail::TrafficMark mark = detail::mark_traffic(*h.group);
  auto t0 = Clock::now();
  const Tensor qh = x.to_heads(q), kh = x.to_heads(k), vh = x.to_heads(v);
  double exchange = seconds_since(t0);
  Tensor oh(out.dtype, q.b, x.n_total, q.h / o.ulysses_degree, q.d);
  RowStats lh(q.b, q.h / o.ulysses_degree, x.n_total);
  StrategyStats stats = burst_forward(*h.ring, qh.view(), kh.view(), vh.view(), oh.view(), lh.view(), h.ring_options);
  t0 = Clock::now();
  x.to_sequence(oh.view(), out);
  x.stats_to_sequence(lh.view(), lse);
  stats.wait_seconds += exchange + seconds_since(t0);
  add_exchange_traffic(*h.group, mark, stats);
  return stats;
}

StrategyStats usp_backward(Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v,
                           const TensorView& out, const RowStatsView& lse, const TensorView& dout, const TensorView& dq,
                           const TensorView& dk, const TensorView& dv, const StrategyOptions& o) {
  const detail::Plan plan = detail::check_and_plan(comm, q, k, v, o, settings_of(o));
  detail::check_backward_tensors(q, k, out, dout, dq, dk, dv);
  Hybrid h = make_hybrid(comm, plan, q, k, o);
  HeadExchange x(*h.group, h.group_plan);
  const detail::TrafficMark mark = detail::mark_traffic(*h.group);
  auto t0 = Clock::now();
  const Tensor qh = x.to_heads(q), kh = x.to_heads(k), vh = x.to_heads(v), oh = x.to_heads(out), doh = x.to_heads(dout);
  const RowStats lh = x.stats_to_heads(lse);
  double exchange = seconds_since(t0);
  const int u = o.ulysses_degree;
  Tensor dqh(DType::kF32, q.b, x.n_total, q.h / u, q.d), dkh(DType::kF32, k.b, x.n_total, k.h / u, k.d),
      dvh(DType::kF32, k.b, x.n_total, k.h / u, k.d);
  StrategyStats stats = burst_backward(*h.ring, qh.view(), kh.view(), vh.view(), oh.view(), lh.view(), doh.view(),
                                   dqh.view(), dkh.view(), dvh.view(), h.ring_options);
  t0 = Clock::now();
  x.to_sequence(dqh.view(), dq);
  x.to_sequence(dkh.view(), dk);
  x.to_sequence(dvh.view(), dv);
  stats.wait_seconds += exchange + seconds_since(t0);
  add_exchange_traffic(*h.group, mark, stats);
  return stats;
}

}  // namespace burst::algo
