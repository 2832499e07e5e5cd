#include "burst/layer.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>

#include "algo/common.h"
#include "algo/sequence.h"
#include "algo/costs.h"
#include "burst/error.h"
#include "burst/kernels.h"
#include "core/hash.h"
#include "kernels/detail.h"

namespace burst::algo {
namespace {

using detail::collective;
using detail::gather_sequence;
using detail::reduce_scatter_sequence;

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void check_activation(const TensorView& t, const char* name, std::int64_t b, std::int64_t rows, std::int64_t dim) {
  BURST_CHECK(t.dtype == DType::kF32, name, ": expected fp32, got ", dtype_name(t.dtype));
  BURST_CHECK(t.data != nullptr, name, ": null data");
  BURST_CHECK((b < 0 || t.b == b) && t.s == rows && t.h == 1 && t.d == dim, name, ": expected [",
              b < 0 ? std::string("b") : std::to_string(b), ", ", rows, ", 1, ", dim, "], got ", t.shape_string());
}

// The rotary position of each token at `positions`: its position within its document (global
// position minus the document's first), so a packed document is rotated as if it stood alone.
std::vector<std::int64_t> rotary_positions(const kernels::MaskSpec& mask, const std::vector<std::int64_t>& positions) {
  std::vector<std::int64_t> rotary(positions.size());
  for (std::size_t i = 0; i < positions.size(); ++i) {
    const std::int64_t p = positions[i];
    rotary[i] = mask.documents.empty() ? p : p - mask.documents[static_cast<std::size_t>(mask.document_of(p))];
  }
  return rotary;
}

void check_matrix(const MatrixView& m, const char* name, std::int64_t rows, std::int64_t cols) {
  BURST_CHECK(m.rows == rows && m.cols == cols, name, ": expected ", rows, "x", cols, ", got ", m.rows, "x", m.cols);
}

}  // namespace

std::string LayerShape::describe() const {
  std::ostringstream s;
  s << "D=" << model_dim << " heads=" << heads << " kv_heads=" << kv_heads << " d=" << head_dim;
  return s.str();
}

HeadShard all_heads(const LayerShape& shape) { return HeadShard{0, shape.heads, 0, shape.kv_heads, 1}; }

HeadShard tensor_parallel_heads(const LayerShape& shape, int world, int rank) {
  const std::int64_t p = world;
  const std::string why = costs::tensor_parallel_reason(shape.heads, shape.kv_heads, world);
  BURST_CHECK(why.empty(), why);
  HeadShard h;
  h.q_count = shape.heads / p;
  h.q_first = rank * h.q_count;
  if (shape.kv_heads % p == 0) {
    h.kv_count = shape.kv_heads / p;
    h.kv_first = rank * h.kv_count;
  } else {
    h.kv_count = 1;
    h.kv_sharers = static_cast<int>(p / shape.kv_heads);
    h.kv_first = rank / h.kv_sharers;
  }
  return h;
}

Parameters::Parameters(std::int64_t model_dim, std::int64_t q_heads, std::int64_t kv_heads, std::int64_t head_dim) {
  BURST_CHECK(model_dim > 0 && q_heads > 0 && kv_heads > 0 && head_dim > 0, "parameters: sizes must be positive, got D=",
              model_dim, " heads=", q_heads, " kv_heads=", kv_heads, " d=", head_dim);
  const std::int64_t qd = q_heads * head_dim, kvd = kv_heads * head_dim;
  count_ = static_cast<std::size_t>(model_dim * (2 * qd + 2 * kvd));
  buffer_ = AlignedBuffer(count_ * sizeof(float));
  float* p = buffer_.as<float>();
  wq_ = MatrixView{p, model_dim, qd, qd};
  wk_ = MatrixView{wq_.data + model_dim * qd, model_dim, kvd, kvd};
  wv_ = MatrixView{wk_.data + model_dim * kvd, model_dim, kvd, kvd};
  wo_ = MatrixView{wv_.data + model_dim * kvd, qd, model_dim, model_dim};
}

void Parameters::fill_nan() { std::fill(data(), data() + count_, std::numeric_limits<float>::quiet_NaN()); }

Parameters random_parameters(const LayerShape& shape, std::uint64_t seed) {
  Parameters p(shape.model_dim, shape.heads, shape.kv_heads, shape.head_dim);
  std::mt19937_64 gen(seed);
  auto fill = [&](const MatrixView& m, std::int64_t fan_in) {
    std::normal_distribution<float> normal(0.0f, static_cast<float>(1.0 / std::sqrt(static_cast<double>(fan_in))));
    for (std::int64_t i = 0; i < m.rows * m.cols; ++i) m.data[i] = normal(gen);
  };
  fill(p.wq(), shape.model_dim);
  fill(p.wk(), shape.model_dim);
  fill(p.wv(), shape.model_dim);
  fill(p.wo(), shape.heads * shape.head_dim);
  return p;
}

Parameters shard_parameters(const Parameters& full, const LayerShape& shape, const HeadShard& h) {
  const std::int64_t d = shape.head_dim, dim = shape.model_dim;
  Parameters p(dim, h.q_count, h.kv_count, d);
  auto columns = [&](const MatrixView& from, const MatrixView& to, std::int64_t first_head) {
    for (std::int64_t i = 0; i < dim; ++i)
      std::copy_n(from.data + i * from.ld + first_head * d, to.cols, to.data + i * to.ld);
  };
  columns(full.wq(), p.wq(), h.q_first);
  columns(full.wk(), p.wk(), h.kv_first);
  columns(full.wv(), p.wv(), h.kv_first);
  std::copy_n(full.wo().data + h.q_first * d * full.wo().ld, p.wo().rows * p.wo().cols, p.wo().data);
  return p;
}

LayerTraffic expected_layer_traffic(Strategy strategy, const LayerShape& shape, std::int64_t batch,
                                    const std::vector<std::int64_t>& shard_lengths, int rank) {
  const int ranks = static_cast<int>(shard_lengths.size());
  const StrategyInfo& info = strategy_info(strategy);
  const StrategyBytes own = info.layer_bytes(batch * shape.model_dim, shard_lengths, rank);
  LayerTraffic t;
  t.forward = own.forward;
  t.backward = own.backward;
  // The weight gradients are summed over the ranks sharing a weight: every rank for sequence
  // parallelism, the replicas of a key/value head under tensor parallelism.
  if (info.layer_only) {
    const HeadShard h = tensor_parallel_heads(shape, ranks, rank);
    t.grads = comm::all_reduce_bytes(static_cast<std::uint64_t>(2 * shape.model_dim * h.kv_count * shape.head_dim),
                                     sizeof(float), h.kv_sharers);
  } else {
    const Parameters sizes_only(1, shape.heads, shape.kv_heads, shape.head_dim);
    t.grads = comm::all_reduce_bytes(sizes_only.count() * static_cast<std::uint64_t>(shape.model_dim), sizeof(float),
                                     ranks);
  }
  return t;
}

AttentionLayer::AttentionLayer(comm::Communicator& comm, const LayerShape& shape, const LayerOptions& options)
    : comm_(comm), shape_(shape), options_(options) {
  BURST_CHECK(shape.model_dim > 0, "layer: model_dim must be > 0, got ", shape.model_dim);
  BURST_CHECK(shape.heads > 0 && shape.kv_heads > 0 && shape.heads % shape.kv_heads == 0,
              "layer: heads (", shape.heads, ") must be a positive multiple of kv_heads (", shape.kv_heads, ")");
  BURST_CHECK(shape.head_dim > 0 && shape.head_dim <= kernels::kMaxHeadDim, "layer: head_dim must be in [1, ",
              kernels::kMaxHeadDim, "], got ", shape.head_dim);
  BURST_CHECK(options.rope_base == 0.0 || shape.head_dim % 2 == 0,
              "layer: rotary embedding needs an even head_dim, got ", shape.head_dim);
  const std::int64_t n = options.attention.seqlen;
  const int ranks = comm.world_size();
  BURST_CHECK(n >= ranks, "layer: seqlen (", n, ") must be at least the number of ranks (", ranks, ")");
  // The layer's own copy of the document boundaries, so the caller's array may go away.
  const kernels::MaskSpec& mask = options_.attention.mask;
  documents_.assign(mask.documents.begin(), mask.documents.end());
  options_.attention.mask.documents = documents_;
  kernels::detail::check_documents(mask);
  BURST_CHECK(documents_.empty() || documents_.back() == n, "layer: documents end at ", documents_.back(),
              " but seqlen is ", n);
  // doc-zigzag and balanced cut the shards by the mask's work, documents included.
  plan_ = options.attention.positions.empty() ? shard_plan(n, ranks, options.attention.layout, mask)
                                              : options.attention.positions;
  BURST_CHECK(static_cast<int>(plan_.size()) == ranks, "layer: positions name ", plan_.size(), " ranks, expected ",
              ranks);
  std::vector<std::int64_t> everything(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) everything[static_cast<std::size_t>(i)] = i;
  if (tensor_parallel()) {
    heads_ = tensor_parallel_heads(shape, ranks, comm.rank());
    attention_positions_ = everything;
    positions_ = options.strategy == Strategy::kTpV1 ? everything : plan_[static_cast<std::size_t>(comm.rank())];
    // Collective on every rank (the sharing is the same everywhere).
    if (heads_.kv_sharers > 1) kv_group_ = comm.split(static_cast<int>(heads_.kv_first), comm.rank());
  } else {
    heads_ = all_heads(shape);
    positions_ = plan_[static_cast<std::size_t>(comm.rank())];
    attention_positions_ = positions_;
  }
  rope_positions_ = rotary_positions(mask, attention_positions_);
}

bool AttentionLayer::tensor_parallel() const { return layer_only(options_.strategy); }

void AttentionLayer::check_inputs(const Parameters& params, const TensorView& x, const char* x_name) const {
  const std::int64_t d = shape_.head_dim, dim = shape_.model_dim;
  check_matrix(params.wq(), "wq", dim, heads_.q_count * d);
  check_matrix(params.wk(), "wk", dim, heads_.kv_count * d);
  check_matrix(params.wv(), "wv", dim, heads_.kv_count * d);
  check_matrix(params.wo(), "wo", heads_.q_count * d, dim);
  check_activation(x, x_name, -1, rows(), dim);
  BURST_CHECK(x.b > 0, x_name, ": batch must be > 0, got ", x.b);
  // Every rank must run the same problem: compare a signature with rank 0's, so a
  // disagreement fails alike on every rank rather than as a mismatched transfer.
  // The documents enter as a hash of their boundaries (tensor parallelism runs no strategy
  // call, whose own check would compare them).
  const auto documents_hash = documents_.empty() ? std::int64_t{0}
                                                 : static_cast<std::int64_t>(hash_bytes(
                                                       documents_.data(), documents_.size() * sizeof(std::int64_t)));
  const std::array<std::int64_t, 13> mine = {static_cast<std::int64_t>(options_.strategy), dim, shape_.heads,
                                            shape_.kv_heads, d, options_.attention.seqlen,
                                            static_cast<std::int64_t>(options_.attention.layout), x.b,
                                            options_.attention.mask.causal ? 1 : 0, options_.attention.mask.window_left,
                                            options_.attention.mask.window_right,
                                            static_cast<std::int64_t>(options_.dtype), documents_hash};
  const char* names[] = {"strategy", "model_dim", "heads",       "kv_heads",     "head_dim", "seqlen",
                         "layout",   "batch",     "causal",      "window_left",  "window_right", "dtype",
                         "documents (boundary hash)"};
  std::vector<std::int64_t> all(mine.size() * static_cast<std::size_t>(comm_.world_size()));
  comm_.all_gather(mine.data(), all.data(), sizeof(mine));
  for (int r = 1; r < comm_.world_size(); ++r)
    for (std::size_t i = 0; i < mine.size(); ++i) {
      const std::int64_t theirs = all[static_cast<std::size_t>(r) * mine.size() + i];
      BURST_CHECK(theirs == all[i], "layer: rank ", r, " has ", names[i], " ", theirs, " but rank 0 has ", all[i]);
    }
}

void AttentionLayer::project(const Parameters& params, LayerStats& stats) {
  const auto t0 = Clock::now();
  const std::int64_t n = x_.view().s, d = shape_.head_dim;
  const int threads = options_.attention.threads;
  Tensor q(DType::kF32, batch_, n, heads_.q_count, d), k(DType::kF32, batch_, n, heads_.kv_count, d),
      v(DType::kF32, batch_, n, heads_.kv_count, d);
  for (std::int64_t ib = 0; ib < batch_; ++ib) {
    const MatrixView xb = batch_matrix(x_.view(), ib);
    matmul(xb, false, params.wq(), false, batch_matrix(q.view(), ib), 0.0f, threads);
    matmul(xb, false, params.wk(), false, batch_matrix(k.view(), ib), 0.0f, threads);
    matmul(xb, false, params.wv(), false, batch_matrix(v.view(), ib), 0.0f, threads);
  }
  if (options_.rope_base != 0.0) {
    rotary_embedding(q.view(), rope_positions_, options_.rope_base, false, threads);
    rotary_embedding(k.view(), rope_positions_, options_.rope_base, false, threads);
  }
  if (options_.dtype == DType::kF32) {
    q_ = std::move(q);
    k_ = std::move(k);
    v_ = std::move(v);
  } else {
    q_ = Tensor(options_.dtype, batch_, n, heads_.q_count, d);
    k_ = Tensor(options_.dtype, batch_, n, heads_.kv_count, d);
    v_ = Tensor(options_.dtype, batch_, n, heads_.kv_count, d);
    convert_rows(q.view(), q_.view());
    convert_rows(k.view(), k_.view());
    convert_rows(v.view(), v_.view());
  }
  stats.projection_seconds += seconds_since(t0);
}

void AttentionLayer::attention_forward(LayerStats& stats) {
  const auto t0 = Clock::now();
  const std::int64_t n = x_.view().s;
  out_ = Tensor(DType::kF32, batch_, n, heads_.q_count, shape_.head_dim);
  lse_ = RowStats(batch_, heads_.q_count, n);
  if (tensor_parallel()) {
    kernels::attention_forward(q_.view(), k_.view(), v_.view(), out_.view(), lse_.view(),
                               detail::kernel_options(options_.attention, comm_));
  } else {
    stats.attention = strategy_forward(options_.strategy, comm_, q_.view(), k_.view(), v_.view(), out_.view(),
                                       lse_.view(), options_.attention);
  }
  stats.attention_seconds += seconds_since(t0);
}

void AttentionLayer::attention_backward(const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv,
                                        LayerStats& stats) {
  const auto t0 = Clock::now();
  if (tensor_parallel()) {
    RowStats delta(batch_, heads_.q_count, x_.view().s);
    kernels::compute_delta(dout.view(), out_.view(), delta.view(), options_.attention.threads);
    dq.fill_zero();
    dk.fill_zero();
    dv.fill_zero();
    kernels::attention_backward(q_.view(), k_.view(), v_.view(), dout.view(), lse_.view(), delta.view(), dq.view(),
                                dk.view(), dv.view(), detail::kernel_options(options_.attention, comm_));
  } else {
    stats.attention = strategy_backward(options_.strategy, comm_, q_.view(), k_.view(), v_.view(), out_.view(),
                                        lse_.view(), dout.view(), dq.view(), dk.view(), dv.view(), options_.attention);
  }
  stats.attention_seconds += seconds_since(t0);
}

LayerStats AttentionLayer::forward(const Parameters& params, const TensorView& x, const TensorView& y) {
  const auto t0 = Clock::now();
  check_inputs(params, x, "x");
  check_activation(y, "y", x.b, rows(), shape_.model_dim);
  LayerStats stats;
  batch_ = x.b;
  const auto n = static_cast<std::int64_t>(attention_positions_.size());
  x_ = Tensor(DType::kF32, batch_, n, 1, shape_.model_dim);
  if (options_.strategy == Strategy::kTpV3) {
    collective(comm_, stats.layer_bytes_sent, stats.collective_seconds, [&] { gather_sequence(comm_, x, plan_, x_.view()); });
  } else {
    convert_rows(x, x_.view());
  }
  project(params, stats);
  attention_forward(stats);

  // Y = O Wo; tensor parallelism sums the ranks' head blocks.
  const auto t1 = Clock::now();
  Tensor partial;
  const TensorView& target = tensor_parallel() ? (partial = Tensor(DType::kF32, batch_, n, 1, shape_.model_dim)).view() : y;
  for (std::int64_t ib = 0; ib < batch_; ++ib)
    matmul(batch_matrix(out_.view(), ib), false, params.wo(), false, batch_matrix(target, ib), 0.0f,
           options_.attention.threads);
  stats.projection_seconds += seconds_since(t1);
  if (options_.strategy == Strategy::kTpV1) {
    collective(comm_, stats.layer_bytes_sent, stats.collective_seconds, [&] {
      comm_.all_reduce_sum(partial.data<float>(), static_cast<std::size_t>(partial.view().numel()));
    });
    convert_rows(partial.view(), y);
  } else if (options_.strategy == Strategy::kTpV3) {
    collective(comm_, stats.layer_bytes_sent, stats.collective_seconds,
               [&] { reduce_scatter_sequence(comm_, partial.view(), plan_, y); });
  }
  stats.seconds = seconds_since(t0);
  return stats;
}

LayerStats AttentionLayer::backward(const Parameters& params, const TensorView& dy, const TensorView& dx,
                                    Parameters& grads) {
  const auto t0 = Clock::now();
  BURST_CHECK(batch_ > 0, "layer backward: no forward to take gradients of");
  check_inputs(params, dy, "dy");
  check_activation(dy, "dy", batch_, rows(), shape_.model_dim);
  check_activation(dx, "dx", batch_, rows(), shape_.model_dim);
  check_matrix(grads.wq(), "grads.wq", params.wq().rows, params.wq().cols);
  check_matrix(grads.wk(), "grads.wk", params.wk().rows, params.wk().cols);
  check_matrix(grads.wv(), "grads.wv", params.wv().rows, params.wv().cols);
  check_matrix(grads.wo(), "grads.wo", params.wo().rows, params.wo().cols);
  LayerStats stats;
  const std::int64_t n = x_.view().s, d = shape_.head_dim;
  const int threads = options_.attention.threads;

  // dY over the rows this rank's heads cover.
  Tensor gathered;
  TensorView dy_rows = dy;
  if (options_.strategy == Strategy::kTpV3) {
    gathered = Tensor(DType::kF32, batch_, n, 1, shape_.model_dim);
    collective(comm_, stats.layer_bytes_sent, stats.collective_seconds, [&] { gather_sequence(comm_, dy, plan_, gathered.view()); });
    dy_rows = gathered.view();
  }

  // dWo = O^T dY, dO = dY Wo^T.
  auto t1 = Clock::now();
  Tensor dout32(DType::kF32, batch_, n, heads_.q_count, d);
  for (std::int64_t ib = 0; ib < batch_; ++ib) {
    const MatrixView dyb = batch_matrix(dy_rows, ib);
    matmul(batch_matrix(out_.view(), ib), true, dyb, false, grads.wo(), ib == 0 ? 0.0f : 1.0f, threads);
    matmul(dyb, false, params.wo(), true, batch_matrix(dout32.view(), ib), 0.0f, threads);
  }
  Tensor dout_converted;
  if (options_.dtype != DType::kF32) {
    dout_converted = Tensor(options_.dtype, batch_, n, heads_.q_count, d);
    convert_rows(dout32.view(), dout_converted.view());
  }
  stats.projection_seconds += seconds_since(t1);

  Tensor dq(DType::kF32, batch_, n, heads_.q_count, d), dk(DType::kF32, batch_, n, heads_.kv_count, d),
      dv(DType::kF32, batch_, n, heads_.kv_count, d);
  attention_backward(options_.dtype == DType::kF32 ? dout32 : dout_converted, dq, dk, dv, stats);

  // Back through RoPE and the input projections.
  t1 = Clock::now();
  if (options_.rope_base != 0.0) {
    rotary_embedding(dq.view(), rope_positions_, options_.rope_base, true, threads);
    rotary_embedding(dk.view(), rope_positions_, options_.rope_base, true, threads);
  }
  Tensor partial;
  const TensorView& dx_rows =
      tensor_parallel() ? (partial = Tensor(DType::kF32, batch_, n, 1, shape_.model_dim)).view() : dx;
  for (std::int64_t ib = 0; ib < batch_; ++ib) {
    const MatrixView xb = batch_matrix(x_.view(), ib), dxb = batch_matrix(dx_rows, ib);
    const float beta = ib == 0 ? 0.0f : 1.0f;
    matmul(xb, true, batch_matrix(dq.view(), ib), false, grads.wq(), beta, threads);
    matmul(xb, true, batch_matrix(dk.view(), ib), false, grads.wk(), beta, threads);
    matmul(xb, true, batch_matrix(dv.view(), ib), false, grads.wv(), beta, threads);
    matmul(batch_matrix(dq.view(), ib), false, params.wq(), true, dxb, 0.0f, threads);
    matmul(batch_matrix(dk.view(), ib), false, params.wk(), true, dxb, 1.0f, threads);
    matmul(batch_matrix(dv.view(), ib), false, params.wv(), true, dxb, 1.0f, threads);
  }
  stats.projection_seconds += seconds_since(t1);

  if (options_.strategy == Strategy::kTpV1) {
    collective(comm_, stats.layer_bytes_sent, stats.collective_seconds, [&] {
      comm_.all_reduce_sum(partial.data<float>(), static_cast<std::size_t>(partial.view().numel()));
    });
    convert_rows(partial.view(), dx);
  } else if (options_.strategy == Strategy::kTpV3) {
    collective(comm_, stats.layer_bytes_sent, stats.collective_seconds,
               [&] { reduce_scatter_sequence(comm_, partial.view(), plan_, dx); });
  }

  // Weight gradients: summed over the ranks that hold the same weights.
  if (!tensor_parallel()) {
    collective(comm_, stats.grad_bytes_sent, stats.collective_seconds, [&] { comm_.all_reduce_sum(grads.data(), grads.count()); });
  } else if (kv_group_) {
    // wk and wv are adjacent in the buffer: one all-reduce over the key/value head's replicas.
    const auto count = static_cast<std::size_t>(grads.wk().rows * grads.wk().cols * 2);
    collective(*kv_group_, stats.grad_bytes_sent, stats.collective_seconds, [&] { kv_group_->all_reduce_sum(grads.wk().data, count); });
  }
  stats.seconds = seconds_since(t0);
  return stats;
}

std::size_t AttentionLayer::saved_bytes() const {
  auto bytes = [](const Tensor& t) {
    return static_cast<std::size_t>(t.view().numel()) * dtype_size(t.view().dtype);
  };
  return bytes(x_) + bytes(q_) + bytes(k_) + bytes(v_) + bytes(out_) +
         static_cast<std::size_t>(lse_.view().b * lse_.view().h * lse_.view().s) * sizeof(float);
}

}  // namespace burst::algo
