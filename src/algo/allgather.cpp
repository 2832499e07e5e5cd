#include "algo/allgather.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "algo/common.h"
#include "burst/error.h"

namespace burst::algo {
namespace {

using comm::Communicator;
using Clock = std::chrono::steady_clock;

// Every rank's K and V (and their positions) in rank order: the all-gather moves equal blocks
// of the longest shard's size, which are then compacted to exactly N rows.
struct Gathered {
  Tensor k, v;                          // [b, N, n_heads_kv, d], rows in rank order
  std::vector<std::int64_t> positions;  // global position of each row
  std::vector<std::int64_t> offsets;    // first row of each rank
  std::int64_t longest = 0;
};

Gathered gather_keys(Communicator& comm, const detail::Plan& plan, const TensorView& k, const TensorView& v) {
  Gathered g;
  for (const auto& pos : plan.positions) {
    g.offsets.push_back(static_cast<std::int64_t>(g.positions.size()));
    g.positions.insert(g.positions.end(), pos.begin(), pos.end());
    g.longest = std::max(g.longest, static_cast<std::int64_t>(pos.size()));
  }
  const auto n_total = static_cast<std::int64_t>(g.positions.size());
  const std::size_t row = static_cast<std::size_t>(k.h * k.d) * dtype_size(k.dtype);
  // Block of one rank: its K rows then its V rows, each padded to `longest` rows per batch.
  const std::size_t half = static_cast<std::size_t>(k.b * g.longest) * row;
  AlignedBuffer mine(2 * half), all(2 * half * static_cast<std::size_t>(comm.world_size()));
  std::memset(mine.data(), 0, mine.bytes());
  for (std::int64_t ib = 0; ib < k.b; ++ib) {
    pack_rows(k.batch_slice(ib), mine.as<char>() + static_cast<std::size_t>(ib * g.longest) * row);
    pack_rows(v.batch_slice(ib), mine.as<char>() + half + static_cast<std::size_t>(ib * g.longest) * row);
  }
  // The gathered tensors exist before the all-gather, so every rank holds its largest set of
  // buffers while all of them are inside the collective: thread ranks peak together, as the
  // CLI's memory estimate assumes, rather than whenever each gets to the copy.
  g.k = Tensor(k.dtype, k.b, n_total, k.h, k.d);
  g.v = Tensor(k.dtype, k.b, n_total, k.h, k.d);
  comm.all_gather(mine.data(), all.data(), 2 * half);
  for (int r = 0; r < comm.world_size(); ++r) {
    const char* block = all.as<char>() + static_cast<std::size_t>(r) * 2 * half;
    const std::int64_t n = plan.lengths[static_cast<std::size_t>(r)];
    for (std::int64_t ib = 0; ib < k.b; ++ib) {
      const std::size_t from = static_cast<std::size_t>(ib * g.longest) * row;
      std::memcpy(g.k.view().at(ib, g.offsets[static_cast<std::size_t>(r)], 0), block + from,
                  static_cast<std::size_t>(n) * row);
      std::memcpy(g.v.view().at(ib, g.offsets[static_cast<std::size_t>(r)], 0), block + half + from,
                  static_cast<std::size_t>(n) * row);
    }
  }
  return g;
}

// The opening of both passes: the ranks' agreement check, the traffic mark, and every
// rank's K/V gathered (its time counted as exposed communication).
struct Start {
  detail::Plan plan;
  detail::TrafficMark mark;
  Gathered keys;
};

Start start(Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v, const DistributedOptions& o,
            StrategyStats& stats) {
  Start s{detail::check_and_plan(comm, q, k, v, o), {}, {}};
  s.mark = detail::mark_traffic(comm);
  const auto t0 = Clock::now();
  s.keys = gather_keys(comm, s.plan, k, v);
  stats.wait_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return s;
}

}  // namespace

StrategyStats allgather_forward(Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v,
                                const TensorView& out, const RowStatsView& lse, const DistributedOptions& o) {
  StrategyStats stats;
  const Start st = start(comm, q, k, v, o, stats);
  const detail::Plan& plan = st.plan;
  const detail::TrafficMark& mark = st.mark;
  const Gathered& g = st.keys;
  kernels::AttentionOptions kopt = detail::kernel_options(o, comm);
  kopt.q_pos.ids = plan.positions[static_cast<std::size_t>(comm.rank())].data();
  kopt.k_pos.ids = g.positions.data();
  const auto t0 = Clock::now();
  kernels::attention_forward(q, g.k.view(), g.v.view(), out, lse, kopt);
  stats.compute_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  stats.step_seconds.push_back(stats.compute_seconds);
  stats.steps_computed = 1;
  detail::add_traffic_since(comm, mark, {comm::Op::kAllGather}, stats);
  return stats;
}

StrategyStats allgather_backward(Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v,
                                 const TensorView& out, const RowStatsView& lse, const TensorView& dout,
                                 const TensorView& dq, const TensorView& dk, const TensorView& dv, const DistributedOptions& o) {
  StrategyStats stats;
  const Start st = start(comm, q, k, v, o, stats);
  const detail::Plan& plan = st.plan;
  const detail::TrafficMark& mark = st.mark;
  const Gathered& g = st.keys;

  RowStats delta(q.b, q.h, q.s);
  kernels::compute_delta(dout, out, delta.view(), o.threads);
  const auto n_total = static_cast<std::int64_t>(g.positions.size());
  // dK and dV of every key from this rank's queries, padded per rank like the gather:
  // [rank][dK rows | dV rows][b][longest] so one reduce-scatter returns each owner its sums.
  const std::int64_t row = k.h * k.d;
  const std::size_t half = static_cast<std::size_t>(k.b * g.longest * row);
  // An AlignedBuffer, as every large buffer of Burst, so the allocation statistics (and the
  // CLI's memory estimate checked against them) see it; zeroed, as padding rows are summed too.
  AlignedBuffer partial(2 * half * static_cast<std::size_t>(comm.world_size()) * sizeof(float));
  std::memset(partial.data(), 0, partial.bytes());
  Tensor dk_all(DType::kF32, k.b, n_total, k.h, k.d), dv_all(DType::kF32, k.b, n_total, k.h, k.d);
  dk_all.fill_zero();
  dv_all.fill_zero();
  detail::check_backward_tensors(q, k, out, dout, dq, dk, dv);
  for (std::int64_t ib = 0; ib < dq.b; ++ib)
    for (std::int64_t is = 0; is < dq.s; ++is)
      for (std::int64_t ih = 0; ih < dq.h; ++ih) std::fill_n(dq.row<float>(ib, is, ih), dq.d, 0.0f);
  kernels::AttentionOptions kopt = detail::kernel_options(o, comm);
  kopt.q_pos.ids = plan.positions[static_cast<std::size_t>(comm.rank())].data();
  kopt.k_pos.ids = g.positions.data();
  auto t0 = Clock::now();
  kernels::attention_backward(q, g.k.view(), g.v.view(), dout, lse, delta.view(), dq, dk_all.view(), dv_all.view(), kopt);
  stats.compute_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  stats.step_seconds.push_back(stats.compute_seconds);
  stats.steps_computed = 1;

  for (int r = 0; r < comm.world_size(); ++r) {
    float* block = partial.as<float>() + static_cast<std::size_t>(r) * 2 * half;
    const std::int64_t n = plan.lengths[static_cast<std::size_t>(r)];
    for (std::int64_t ib = 0; ib < k.b; ++ib) {
      const std::size_t to = static_cast<std::size_t>(ib * g.longest * row);
      std::memcpy(block + to, dk_all.view().at(ib, g.offsets[static_cast<std::size_t>(r)], 0),
                  static_cast<std::size_t>(n * row) * 4);
      std::memcpy(block + half + to, dv_all.view().at(ib, g.offsets[static_cast<std::size_t>(r)], 0),
                  static_cast<std::size_t>(n * row) * 4);
    }
  }
  AlignedBuffer mine(2 * half * sizeof(float));
  t0 = Clock::now();
  comm.reduce_scatter_sum(partial.as<float>(), mine.as<float>(), 2 * half);
  stats.wait_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  for (std::int64_t ib = 0; ib < k.b; ++ib) {
    const std::size_t from = static_cast<std::size_t>(ib * g.longest * row);
    unpack_rows(mine.as<float>() + from, dk.batch_slice(ib));
    unpack_rows(mine.as<float>() + half + from, dv.batch_slice(ib));
  }
  detail::add_traffic_since(comm, mark, {comm::Op::kAllGather, comm::Op::kReduceScatter}, stats);
  return stats;
}

}  // namespace burst::algo
