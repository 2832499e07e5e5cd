#include "algo/common.h"

#include <array>
#include <sstream>
#include <string>

#include "burst/error.h"
#include "core/hash.h"
#include "kernels/detail.h"

namespace burst::algo::detail {

using comm::Communicator;

namespace {

std::string number_text(double x) {
  std::ostringstream os;
  os.precision(9);  // enough to tell any two floats apart
  os << x;
  return os.str();
}

// The documents as a short text that differs when the boundaries do: their count and a hash.
std::string documents_text(const kernels::MaskSpec& mask) {
  if (mask.documents.empty()) return "none";
  std::ostringstream os;
  os << mask.documents.size() - 1 << " (boundary hash " << std::hex
     << hash_bytes(mask.documents.data(), mask.documents.size() * sizeof(std::int64_t)) << ")";
  return os.str();
}

std::string side_text(std::int64_t side) { return side < 0 ? "unbounded" : std::to_string(side); }

// Everything ranks must agree on, as people read it, so a disagreement names the setting and
// both values ("rank 1 has layout striped but rank 0 has zigzag").
std::vector<comm::Setting> settings_of(const TensorView& q, const TensorView& k, const DistributedOptions& o) {
  return {{"batch", std::to_string(q.b)},
          {"n_heads_q", std::to_string(q.h)},
          {"n_heads_kv", std::to_string(k.h)},
          {"head_dim", std::to_string(q.d)},
          {"dtype", std::string(dtype_name(q.dtype))},
          {"seqlen", std::to_string(o.seqlen)},
          {"layout", o.positions.empty() ? layout_name(o.layout) : "explicit positions"},
          {"causal", o.mask.causal ? "true" : "false"},
          {"window", side_text(o.mask.window_left) + "," + side_text(o.mask.window_right)},
          {"scale", o.scale ? number_text(*o.scale) : "1/sqrt(head_dim)"},
          {"documents", documents_text(o.mask)}};
}

}  // namespace

std::vector<comm::Setting> ring_settings(const RingOptions& o) {
  return {{"backward scheme", scheme_name(o.backward_scheme)},
          {"gradient wire dtype", std::string(dtype_name(o.gradient_wire))},
          {"double ring", o.double_ring ? "on" : "off"}};
}

Plan check_and_plan(Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v,
                    const DistributedOptions& o, std::span<const comm::Setting> settings) {
  std::vector<comm::Setting> signature = settings_of(q, k, o);
  signature.insert(signature.end(), settings.begin(), settings.end());
  comm::check_agreement(comm, signature);
  // Shard lengths differ by design: checked against the layout below.
  const std::array<std::int64_t, 3> rows{q.s, k.s, v.s};
  std::vector<std::array<std::int64_t, 3>> all(static_cast<std::size_t>(comm.world_size()));
  comm.all_gather(rows.data(), all.data(), sizeof(rows));
  // This rank's q, k, v against each other, before anything is packed: the ranks agree on
  // the signature by now, so a shape error fails alike on every rank.
  kernels::AttentionOptions shapes;
  shapes.mask = o.mask;
  shapes.scale = o.scale;
  kernels::detail::check_qkv(q, k, v, shapes);
  BURST_CHECK(o.seqlen >= comm.world_size(), "seqlen: expected at least one token per rank (",
              comm.world_size(), "), got ", o.seqlen);
  if (!o.mask.documents.empty()) {
    BURST_CHECK(o.mask.documents.back() == o.seqlen, "documents: expected the last boundary to be the sequence length ",
                o.seqlen, ", got ", o.mask.documents.back());
  }
  Plan plan;
  if (o.positions.empty()) {
    plan.positions = shard_plan(o.seqlen, comm.world_size(), o.layout, o.mask);
  } else {
    BURST_CHECK(static_cast<int>(o.positions.size()) == comm.world_size(), "positions: expected one list per rank (",
                comm.world_size(), "), got ", o.positions.size());
    plan.positions = o.positions;
  }
  for (int r = 0; r < comm.world_size(); ++r) {
    const auto [q_rows, k_rows, v_rows] = all[static_cast<std::size_t>(r)];
    const auto n = static_cast<std::int64_t>(plan.positions[static_cast<std::size_t>(r)].size());
    if (o.positions.empty()) {
      BURST_CHECK(q_rows == n && k_rows == n && v_rows == n, "rank ", r, " holds q/k/v shards of ", q_rows,
                  "/", k_rows, "/", v_rows, " tokens but the ", layout_name(o.layout), " layout of ", o.seqlen,
                  " tokens over ", comm.world_size(), " ranks gives it ", n);
    } else {
      BURST_CHECK(q_rows == n && k_rows == n && v_rows == n, "rank ", r, " holds q/k/v shards of ", q_rows,
                  "/", k_rows, "/", v_rows, " tokens but its explicit positions list ", n);
    }
    plan.lengths.push_back(n);
  }
  return plan;
}

kernels::AttentionOptions kernel_options(const DistributedOptions& o, Communicator& comm) {
  kernels::AttentionOptions k;
  k.mask = o.mask;
  k.scale = o.scale;
  k.threads = o.threads;
  k.isa = o.isa;
  k.block_m = o.block_m;
  k.block_n = o.block_n;
  k.progress = [&comm] { comm.progress(); };
  k.progress_due = [&comm] { return comm.progress_due(); };
  k.emulate = o.emulate;
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
                       StrategyStats& stats) {
  for (comm::Op op : ops) {
    const auto i = static_cast<std::size_t>(op);
    stats.bytes_sent += comm.traffic().total_sent(op) - mark.sent[i];
    stats.bytes_received += comm.traffic().total_received(op) - mark.received[i];
  }
}

}  // namespace burst::algo::detail
