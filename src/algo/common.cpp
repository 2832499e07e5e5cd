#include "algo/common.h"

#include <bit>

#include "core/error.h"
#include "kernels/detail.h"

namespace burst::algo::detail {

using comm::Communicator;

namespace {

// Everything ranks must agree on, gathered once so every rank checks every rank and all of
// them fail with the same message when something disagrees.
struct Signature {
  std::int64_t b, q_rows, k_rows, v_rows, n_heads_q, n_heads_kv, d, dtype, seqlen, layout, causal,
      window_left, window_right, scale_bits, scheme, gradient_wire, double_ring;
};
constexpr const char* kFieldNames[] = {"batch", "query rows", "key rows", "value rows", "n_heads_q",
                                       "n_heads_kv", "head_dim", "dtype", "seqlen", "layout",
                                       "causal", "window left", "window right", "scale", "backward scheme",
                                       "gradient wire dtype", "double ring"};
constexpr std::size_t kFields = sizeof(kFieldNames) / sizeof(kFieldNames[0]);
static_assert(sizeof(Signature) == kFields * sizeof(std::int64_t));

Signature signature_of(const TensorView& q, const TensorView& k, const TensorView& v,
                       const BurstOptions& o) {
  const float scale = o.scale ? *o.scale : 0.0f;
  return {q.b, q.s, k.s, v.s, q.h, k.h, q.d, static_cast<std::int64_t>(q.dtype), o.seqlen,
          static_cast<std::int64_t>(o.layout), o.mask.causal, o.mask.window_left, o.mask.window_right,
          std::bit_cast<std::int32_t>(scale), static_cast<std::int64_t>(o.backward_scheme),
          static_cast<std::int64_t>(o.gradient_wire), o.double_ring};
}

}  // namespace

Plan check_and_plan(Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v,
                    const BurstOptions& o) {
  const Signature mine = signature_of(q, k, v, o);
  std::vector<Signature> all(static_cast<std::size_t>(comm.world_size()));
  comm.all_gather(&mine, all.data(), sizeof(Signature));
  const auto* first = reinterpret_cast<const std::int64_t*>(&all[0]);
  for (int r = 1; r < comm.world_size(); ++r) {
    const auto* other = reinterpret_cast<const std::int64_t*>(&all[static_cast<std::size_t>(r)]);
    for (std::size_t f = 0; f < kFields; ++f) {
      if (f == 1 || f == 2 || f == 3) continue;  // shard lengths differ by design; checked below
      BURST_CHECK(other[f] == first[f], "ranks disagree: rank ", r, " has ", kFieldNames[f], " ",
                  other[f], " but rank 0 has ", first[f]);
    }
  }
  // This rank's q, k, v against each other, before anything is packed: the ranks agree on
  // the signature by now, so a shape error fails alike on every rank.
  kernels::AttentionOptions shapes;
  shapes.mask = o.mask;
  shapes.scale = o.scale;
  kernels::detail::check_qkv(q, k, v, shapes);
  BURST_CHECK(o.seqlen >= comm.world_size(), "seqlen: expected at least one token per rank (",
              comm.world_size(), "), got ", o.seqlen);
  Plan plan;
  if (o.positions.empty()) {
    plan.positions = shard_plan(o.seqlen, comm.world_size(), o.layout);
  } else {
    BURST_CHECK(static_cast<int>(o.positions.size()) == comm.world_size(), "positions: expected one list per rank (",
                comm.world_size(), "), got ", o.positions.size());
    plan.positions = o.positions;
  }
  for (int r = 0; r < comm.world_size(); ++r) {
    const Signature& s = all[static_cast<std::size_t>(r)];
    const auto n = static_cast<std::int64_t>(plan.positions[static_cast<std::size_t>(r)].size());
    if (o.positions.empty()) {
      BURST_CHECK(s.q_rows == n && s.k_rows == n && s.v_rows == n, "rank ", r, " holds q/k/v shards of ", s.q_rows,
                  "/", s.k_rows, "/", s.v_rows, " tokens but the ", layout_name(o.layout), " layout of ", o.seqlen,
                  " tokens over ", comm.world_size(), " ranks gives it ", n);
    } else {
      BURST_CHECK(s.q_rows == n && s.k_rows == n && s.v_rows == n, "rank ", r, " holds q/k/v shards of ", s.q_rows,
                  "/", s.k_rows, "/", s.v_rows, " tokens but its explicit positions list ", n);
    }
    plan.lengths.push_back(n);
  }
  return plan;
}

kernels::AttentionOptions kernel_options(const BurstOptions& o, Communicator& comm) {
  kernels::AttentionOptions k;
  k.mask = o.mask;
  k.scale = o.scale;
  k.threads = o.threads;
  k.isa = o.isa;
  k.block_m = o.block_m;
  k.block_n = o.block_n;
  k.progress = [&comm] { comm.progress(); };
  return k;
}

void check_backward_tensors(const TensorView& q, const TensorView& k, const TensorView& out, const TensorView& dout,
                            const TensorView& dq, const TensorView& dk, const TensorView& dv) {
  kernels::detail::check_same_shape(dout, "dout", q, "q");
  kernels::detail::check_dtype(dout, "dout", q.dtype);
  kernels::detail::check_same_shape(out, "out", q, "q");
  kernels::detail::check_same_shape(dq, "dq", q, "q");
  kernels::detail::check_same_shape(dk, "dk", k, "k");
  kernels::detail::check_same_shape(dv, "dv", k, "k");
  for (auto [t, name] : {std::pair{&dq, "dq"}, {&dk, "dk"}, {&dv, "dv"}}) kernels::detail::check_dtype(*t, name, DType::kF32);
}

TrafficMark mark_traffic(const Communicator& comm) {
  TrafficMark m;
  for (std::size_t op = 0; op < comm::kOpCount; ++op) {
    m.sent[op] = comm.traffic().total_sent(static_cast<comm::Op>(op));
    m.received[op] = comm.traffic().total_received(static_cast<comm::Op>(op));
  }
  return m;
}

void add_traffic_since(const Communicator& comm, const TrafficMark& mark, std::initializer_list<comm::Op> ops,
                       RingStats& stats) {
  for (comm::Op op : ops) {
    const auto i = static_cast<std::size_t>(op);
    stats.bytes_sent += comm.traffic().total_sent(op) - mark.sent[i];
    stats.bytes_received += comm.traffic().total_received(op) - mark.received[i];
  }
}

}  // namespace burst::algo::detail
