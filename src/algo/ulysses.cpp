#include "algo/ulysses.h"

#include <chrono>
#include <cstring>

#include "algo/common.h"
#include "algo/costs.h"
#include "algo/head_exchange.h"
#include "burst/error.h"

namespace burst::algo {
namespace {

using comm::Communicator;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The registry's rule (costs.cpp), so its message is the one planners and tools print.
void check_heads(const Communicator& comm, const TensorView& q, const TensorView& k) {
  ProblemShape shape;
  shape.n_heads_q = q.h;
  shape.n_heads_kv = k.h;
  const std::string why = costs::ulysses_cannot_run(shape, comm.world_size(), {}, false);
  BURST_CHECK(why.empty(), why);
}

}  // namespace

StrategyStats ulysses_forward(Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v,
                              const TensorView& out, const RowStatsView& lse, const DistributedOptions& o) {
  const detail::Plan plan = detail::check_and_plan(comm, q, k, v, o);
  check_heads(comm, q, k);
  StrategyStats stats;
  const detail::TrafficMark mark = detail::mark_traffic(comm);
  HeadExchange x(comm, plan);
  auto t0 = Clock::now();
  const Tensor qh = x.to_heads(q), kh = x.to_heads(k), vh = x.to_heads(v);
  stats.wait_seconds = seconds_since(t0);
  Tensor oh(out.dtype, q.b, x.n_total, q.h / comm.world_size(), q.d);
  RowStats lh(q.b, q.h / comm.world_size(), x.n_total);
  kernels::AttentionOptions kopt = detail::kernel_options(o, comm);
  kopt.q_pos.ids = x.positions.data();
  kopt.k_pos.ids = x.positions.data();
  t0 = Clock::now();
  kernels::attention_forward(qh.view(), kh.view(), vh.view(), oh.view(), lh.view(), kopt);
  stats.compute_seconds = seconds_since(t0);
  stats.step_seconds.push_back(stats.compute_seconds);
  stats.steps_computed = 1;
  t0 = Clock::now();
  x.to_sequence(oh.view(), out);
  x.stats_to_sequence(lh.view(), lse);
  stats.wait_seconds += seconds_since(t0);
  detail::add_traffic_since(comm, mark, {comm::Op::kAllToAll}, stats);
  return stats;
}

StrategyStats ulysses_backward(Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v,
                               const TensorView& out, const RowStatsView& lse, const TensorView& dout, const TensorView& dq,
                               const TensorView& dk, const TensorView& dv, const DistributedOptions& o) {
  const detail::Plan plan = detail::check_and_plan(comm, q, k, v, o);
  check_heads(comm, q, k);
  detail::check_backward_tensors(q, k, out, dout, dq, dk, dv);
  StrategyStats stats;
  const detail::TrafficMark mark = detail::mark_traffic(comm);
  HeadExchange x(comm, plan);
  RowStats delta(q.b, q.h, q.s);
  kernels::compute_delta(dout, out, delta.view(), o.threads);
  auto t0 = Clock::now();
  const Tensor qh = x.to_heads(q), kh = x.to_heads(k), vh = x.to_heads(v), doh = x.to_heads(dout);
  const RowStats lh = x.stats_to_heads(lse), dh = x.stats_to_heads(delta.view());
  stats.wait_seconds = seconds_since(t0);
  const int p = comm.world_size();
  Tensor dqh(DType::kF32, q.b, x.n_total, q.h / p, q.d), dkh(DType::kF32, k.b, x.n_total, k.h / p, k.d),
      dvh(DType::kF32, k.b, x.n_total, k.h / p, k.d);
  dqh.fill_zero();
  dkh.fill_zero();
  dvh.fill_zero();
  kernels::AttentionOptions kopt = detail::kernel_options(o, comm);
  kopt.q_pos.ids = x.positions.data();
  kopt.k_pos.ids = x.positions.data();
  t0 = Clock::now();
  kernels::attention_backward(qh.view(), kh.view(), vh.view(), doh.view(), lh.view(), dh.view(), dqh.view(),
                              dkh.view(), dvh.view(), kopt);
  stats.compute_seconds = seconds_since(t0);
  stats.step_seconds.push_back(stats.compute_seconds);
  stats.steps_computed = 1;
  t0 = Clock::now();
  x.to_sequence(dqh.view(), dq);
  x.to_sequence(dkh.view(), dk);
  x.to_sequence(dvh.view(), dv);
  stats.wait_seconds += seconds_since(t0);
  detail::add_traffic_since(comm, mark, {comm::Op::kAllToAll}, stats);
  return stats;
}

}  // namespace burst::algo
