#include "burst/block.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>

#include "algo/sequence.h"
#include "burst/error.h"

namespace burst::algo {
namespace {

using Clock = std::chrono::steady_clock;
using detail::collective;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void check_rows(const TensorView& t, const char* name, std::int64_t b, std::int64_t rows, std::int64_t dim) {
  BURST_CHECK(t.dtype == DType::kF32, name, ": expected fp32, got ", dtype_name(t.dtype));
  BURST_CHECK(t.data != nullptr, name, ": null data");
  BURST_CHECK((b < 0 || t.b == b) && t.s == rows && t.h == 1 && t.d == dim, name, ": expected [",
              b < 0 ? std::string("b") : std::to_string(b), ", ", rows, ", 1, ", dim, "], got ", t.shape_string());
  BURST_CHECK(t.stride_s == t.d && t.stride_b == t.s * t.d, name, ": rows must be dense");
}

// The rows of a dense [b, s, 1, D] tensor as one (b s) x D matrix.
MatrixView all_rows(const TensorView& t) { return MatrixView{static_cast<float*>(t.data), t.b * t.s, t.d, t.d}; }

// h = x / sqrt(mean(x^2) + eps) * g row by row; inv_rms[i] = 1 / sqrt(mean(x_i^2) + eps).
void rms_norm(const MatrixView& x, const float* g, double eps, const MatrixView& h, float* inv_rms) {
  for (std::int64_t i = 0; i < x.rows; ++i) {
    const float* xr = x.data + i * x.ld;
    double squares = 0;
    for (std::int64_t j = 0; j < x.cols; ++j) squares += static_cast<double>(xr[j]) * xr[j];
    const auto r = static_cast<float>(1.0 / std::sqrt(squares / static_cast<double>(x.cols) + eps));
    inv_rms[i] = r;
    float* hr = h.data + i * h.ld;
    for (std::int64_t j = 0; j < x.cols; ++j) hr[j] = xr[j] * r * g[j];
  }
}

// Backward of rms_norm: dx += r (dh g - xhat mean(dh g xhat)) with xhat = x r, and
// dg += sum over rows of dh xhat (summed in double, then added to dg).
void rms_norm_backward(const MatrixView& x, const float* g, const float* inv_rms, const MatrixView& dh,
                       const MatrixView& dx, float* dg) {
  std::vector<double> gain(static_cast<std::size_t>(x.cols), 0.0);
  for (std::int64_t i = 0; i < x.rows; ++i) {
    const float *xr = x.data + i * x.ld, *dhr = dh.data + i * dh.ld;
    const double r = inv_rms[i];
    double dot = 0;
    for (std::int64_t j = 0; j < x.cols; ++j) {
      const double xhat = xr[j] * r;
      gain[static_cast<std::size_t>(j)] += dhr[j] * xhat;
      dot += static_cast<double>(dhr[j]) * g[j] * xhat;
    }
    const double mean = dot / static_cast<double>(x.cols);
    float* dxr = dx.data + i * dx.ld;
    for (std::int64_t j = 0; j < x.cols; ++j)
      dxr[j] += static_cast<float>(r * (static_cast<double>(dhr[j]) * g[j] - xr[j] * r * mean));
  }
  for (std::int64_t j = 0; j < x.cols; ++j) dg[j] += static_cast<float>(gain[static_cast<std::size_t>(j)]);
}

float sigmoid(float a) { return 1.0f / (1.0f + std::exp(-a)); }

// z = silu(gate) * up, element-wise over count floats.
void swiglu(const float* gate, const float* up, float* z, std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) z[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

// From dz: dgate = dz up silu'(gate) into dz's place, dup = dz silu(gate) into dup.
void swiglu_backward(const float* gate, const float* up, float* dz, float* dup, std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    const float a = gate[i], s = sigmoid(a);
    dup[i] = dz[i] * a * s;
    dz[i] = dz[i] * up[i] * s * (1.0f + a * (1.0f - s));
  }
}

void add_rows(const MatrixView& a, const MatrixView& b, const MatrixView& out) {
  for (std::int64_t i = 0; i < out.rows; ++i)
    for (std::int64_t j = 0; j < out.cols; ++j)
      out.data[i * out.ld + j] = a.data[i * a.ld + j] + b.data[i * b.ld + j];
}

void accumulate(StrategyStats& into, const StrategyStats& s) {
  into.bytes_sent += s.bytes_sent;
  into.bytes_received += s.bytes_received;
  into.bytes_saved += s.bytes_saved;
  into.steps_computed += s.steps_computed;
  into.steps_skipped += s.steps_skipped;
  into.compute_seconds += s.compute_seconds;
  into.wait_seconds += s.wait_seconds;
  if (into.step_seconds.size() < s.step_seconds.size()) into.step_seconds.resize(s.step_seconds.size(), 0.0);
  for (std::size_t i = 0; i < s.step_seconds.size(); ++i) into.step_seconds[i] += s.step_seconds[i];
  into.scheme = s.scheme;
}

void accumulate(LayerStats& into, const LayerStats& s) {
  accumulate(into.attention, s.attention);
  into.layer_bytes_sent += s.layer_bytes_sent;
  into.grad_bytes_sent += s.grad_bytes_sent;
  into.seconds += s.seconds;
  into.attention_seconds += s.attention_seconds;
  into.projection_seconds += s.projection_seconds;
  into.collective_seconds += s.collective_seconds;
}

std::size_t tensor_bytes(const Tensor& t) {
  return static_cast<std::size_t>(t.view().numel()) * dtype_size(t.view().dtype);
}

}  // namespace

std::string BlockShape::describe() const {
  std::ostringstream s;
  s << attention.describe() << " F=" << mlp_dim;
  return s.str();
}

HiddenShard all_hidden(const BlockShape& shape) { return HiddenShard{0, shape.mlp_dim}; }

HiddenShard tensor_parallel_hidden(const BlockShape& shape, int world, int rank) {
  BURST_CHECK(world > 0 && shape.mlp_dim % world == 0, "block: tensor parallelism splits the MLP's hidden units, so ",
              "mlp_dim must be a multiple of the ranks (", world, "), got ", shape.mlp_dim);
  const std::int64_t count = shape.mlp_dim / world;
  return HiddenShard{rank * count, count};
}

std::string block_cannot_run(Strategy strategy, const BlockShape& shape, int ranks, const StrategyOptions& options) {
  ProblemShape core;
  core.n_heads_q = shape.attention.heads;
  core.n_heads_kv = shape.attention.kv_heads;
  core.head_dim = shape.attention.head_dim;
  std::string why = strategy_info(strategy).cannot_run(core, ranks, options, true);
  if (why.empty() && layer_only(strategy) && shape.mlp_dim % ranks != 0) {
    why = strategy_name(strategy);
    why += " splits the MLP's hidden units over the ranks: mlp_dim must be a multiple of ";
    why += std::to_string(ranks);
    why += ", got ";
    why += std::to_string(shape.mlp_dim);
  }
  return why;
}

BlockParameters::BlockParameters(const BlockShape& shape, const HeadShard& heads, const HiddenShard& hidden)
    : attention_(shape.attention.model_dim, heads.q_count, heads.kv_count, shape.attention.head_dim) {
  const std::int64_t dim = shape.attention.model_dim, f = hidden.count;
  BURST_CHECK(f > 0, "block parameters: hidden units must be > 0, got ", f);
  count_ = static_cast<std::size_t>(2 * dim + 3 * dim * f);
  buffer_ = AlignedBuffer(count_ * sizeof(float));
  float* p = buffer_.as<float>();
  g1_ = p;
  g2_ = p + dim;
  w1_ = MatrixView{g2_ + dim, dim, f, f};
  w3_ = MatrixView{w1_.data + dim * f, dim, f, f};
  w2_ = MatrixView{w3_.data + dim * f, f, dim, dim};
}

void BlockParameters::fill_nan() {
  attention_.fill_nan();
  std::fill_n(mlp_data(), count_, std::numeric_limits<float>::quiet_NaN());
}

BlockParameters random_block_parameters(const BlockShape& shape, std::uint64_t seed) {
  BlockParameters p(shape, all_heads(shape.attention), all_hidden(shape));
  p.attention() = random_parameters(shape.attention, seed);
  std::mt19937_64 gen(seed ^ 0x9e3779b97f4a7c15ULL);
  const std::int64_t dim = shape.attention.model_dim;
  std::normal_distribution<float> gain(1.0f, 0.1f);
  for (std::int64_t j = 0; j < dim; ++j) p.g1()[j] = gain(gen);
  for (std::int64_t j = 0; j < dim; ++j) p.g2()[j] = gain(gen);
  auto fill = [&](const MatrixView& m, std::int64_t fan_in) {
    std::normal_distribution<float> normal(0.0f, static_cast<float>(1.0 / std::sqrt(static_cast<double>(fan_in))));
    for (std::int64_t i = 0; i < m.rows * m.cols; ++i) m.data[i] = normal(gen);
  };
  fill(p.w1(), dim);
  fill(p.w3(), dim);
  fill(p.w2(), shape.mlp_dim);
  return p;
}

BlockParameters shard_block_parameters(const BlockParameters& full, const BlockShape& shape, const HeadShard& heads,
                                       const HiddenShard& hidden) {
  const std::int64_t dim = shape.attention.model_dim, f = shape.mlp_dim;
  BURST_CHECK(full.w1().cols == f && full.w2().rows == f, "shard_block_parameters: full weights have ",
              full.w1().cols, " hidden units, the shape ", f);
  BURST_CHECK(hidden.first >= 0 && hidden.count > 0 && hidden.first + hidden.count <= f,
              "shard_block_parameters: hidden units [", hidden.first, ", ", hidden.first + hidden.count,
              ") outside [0, ", f, ")");
  BlockParameters p(shape, heads, hidden);
  p.attention() = shard_parameters(full.attention(), shape.attention, heads);
  std::copy_n(full.g1(), dim, p.g1());
  std::copy_n(full.g2(), dim, p.g2());
  for (std::int64_t i = 0; i < dim; ++i) {
    std::copy_n(full.w1().data + i * f + hidden.first, hidden.count, p.w1().data + i * hidden.count);
    std::copy_n(full.w3().data + i * f + hidden.first, hidden.count, p.w3().data + i * hidden.count);
  }
  std::copy_n(full.w2().data + hidden.first * dim, hidden.count * dim, p.w2().data);
  return p;
}

BlockStats& BlockStats::operator+=(const BlockStats& other) {
  accumulate(attention, other.attention);
  mlp_bytes_sent += other.mlp_bytes_sent;
  grad_bytes_sent += other.grad_bytes_sent;
  seconds += other.seconds;
  mlp_seconds += other.mlp_seconds;
  norm_seconds += other.norm_seconds;
  collective_seconds += other.collective_seconds;
  return *this;
}

BlockTraffic expected_block_traffic(Strategy strategy, const BlockShape& shape, std::int64_t batch,
                                    const std::vector<std::int64_t>& shard_lengths, int rank) {
  const int ranks = static_cast<int>(shard_lengths.size());
  const std::int64_t dim = shape.attention.model_dim;
  const StrategyBytes own = strategy_info(strategy).layer_bytes(batch * dim, shard_lengths, rank);
  BlockTraffic t;
  t.forward = own.forward;
  t.backward = own.backward;
  if (strategy == Strategy::kTpV3) {
    t.grads = comm::all_reduce_bytes(static_cast<std::uint64_t>(2 * dim), sizeof(float), ranks);
  } else if (!layer_only(strategy)) {
    t.grads = comm::all_reduce_bytes(static_cast<std::uint64_t>(2 * dim + 3 * dim * shape.mlp_dim), sizeof(float),
                                     ranks);
  }
  return t;
}

LayerMemory block_memory(Strategy strategy, const BlockShape& shape, std::int64_t batch,
                         const std::vector<std::int64_t>& lengths, DType dtype, bool backward,
                         const StrategyOptions& options, const PassBytes& kernel, int layers) {
  BURST_CHECK(layers >= 1, "block memory: layers must be >= 1, got ", layers);
  const LayerMemory layer = layer_memory(strategy, shape.attention, batch, lengths, dtype, backward, options, kernel);
  const bool tp = layer_only(strategy), v1 = strategy == Strategy::kTpV1, v3 = strategy == Strategy::kTpV3;
  const double p = static_cast<double>(lengths.size()), b = static_cast<double>(batch), l = layers;
  double big_n = 0, n = 0;
  for (std::int64_t len : lengths) {
    big_n += static_cast<double>(len);
    n = std::max(n, static_cast<double>(len));
  }
  const double dim = static_cast<double>(shape.attention.model_dim);
  const double f = static_cast<double>(shape.mlp_dim) / (tp ? p : 1.0);
  const double row = 4 * b * dim;              // one token of the residual stream
  const double rows = v1 ? big_n : n;          // residual rows held
  const double mlp_tokens = tp ? big_n : n;    // rows the MLP runs on
  const double hidden = 4 * b * mlp_tokens * f;  // one [rows, f] MLP activation
  const double gather = v3 ? row * big_n + row * n : 0, scatter = v3 ? row * big_n + row * n * (p + 1) : 0;
  const double own_saved = 2 * row * rows + row * mlp_tokens + 2 * hidden + 2 * 4 * b * rows;
  const double saved = layer.saved + own_saved;
  auto part = [](const std::vector<MemoryPart>& parts, const std::string& name) {
    for (const MemoryPart& m : parts)
      if (m.name == name) return m.bytes;
    return 0.0;
  };
  LayerMemory m;
  m.saved = l * saved;
  m.parameters = l * (layer.parameters + 4 * (2 * dim + 3 * dim * f));
  const double between = row * rows * std::min(l - 1, 2.0);  // the stack's ping-pong buffers
  const double attention_phase = 2 * row * rows + std::max(0.0, part(layer.forward, "activations") - layer.saved);
  const double mlp_phase = row * rows + gather + hidden + row * mlp_tokens + scatter;
  m.forward = {{"X, Y rows and the stack's buffers", 2 * row * rows + between},
               {"saved activations", m.saved},
               {"block temporaries", std::max(attention_phase, mlp_phase)}};
  if (backward) {
    const double mlp_back = row * rows + gather + 2 * hidden + row * mlp_tokens + scatter;
    const double attention_back = 2 * row * rows + part(layer.backward, "backward temporaries");
    m.backward = {{"X, Y, dY, dX rows, the stack's gradient and the weight gradients", 5 * row * rows + m.parameters},
                  {"saved activations", m.saved},
                  {"block temporaries", std::max(mlp_back, attention_back)}};
  }
  m.held = 2 * row * rows + m.saved + (backward ? 2 * row * rows + m.parameters : 0);
  return m;
}

TransformerBlock::TransformerBlock(comm::Communicator& comm, const BlockShape& shape, const LayerOptions& options)
    : comm_(comm), shape_(shape), options_(options), layer_(comm, shape.attention, options) {
  BURST_CHECK(shape.mlp_dim > 0, "block: mlp_dim must be > 0, got ", shape.mlp_dim);
  BURST_CHECK(shape.norm_eps > 0 && std::isfinite(shape.norm_eps), "block: norm_eps must be a positive number, got ",
              shape.norm_eps);
  hidden_ = tensor_parallel() ? tensor_parallel_hidden(shape, comm.world_size(), comm.rank()) : all_hidden(shape);
  options_.attention.mask.documents = {};  // the layer holds the boundaries; the block needs only the plan
  if (options.strategy == Strategy::kTpV3) {
    plan_ = options.attention.positions.empty()
                ? shard_plan(options.attention.seqlen, comm.world_size(), options.attention.layout, options.attention.mask)
                : options.attention.positions;
  }
}

bool TransformerBlock::tensor_parallel() const { return layer_only(options_.strategy); }

void TransformerBlock::check_parameters(const BlockParameters& params, const char* name) const {
  const std::int64_t dim = shape_.attention.model_dim, f = hidden_.count;
  auto check = [&](const MatrixView& m, const char* what, std::int64_t rows, std::int64_t cols) {
    BURST_CHECK(m.rows == rows && m.cols == cols, name, ".", what, ": expected ", rows, "x", cols, ", got ", m.rows,
                "x", m.cols);
  };
  check(params.w1(), "w1", dim, f);
  check(params.w3(), "w3", dim, f);
  check(params.w2(), "w2", f, dim);
  BURST_CHECK(params.mlp_count() == static_cast<std::size_t>(2 * dim + 3 * dim * f), name,
              ": norm and MLP weights for D=", dim, " and ", f, " hidden units expected");
}

BlockStats TransformerBlock::forward(const BlockParameters& params, const TensorView& x, const TensorView& y) {
  const auto t0 = Clock::now();
  const std::int64_t dim = shape_.attention.model_dim, rows = layer_.rows(), f = hidden_.count;
  check_rows(x, "x", -1, rows, dim);
  check_rows(y, "y", x.b, rows, dim);
  BURST_CHECK(x.data != y.data, "block forward: y must not alias x");
  check_parameters(params, "params");
  // Ranks must agree on the MLP (the attention layer compares the rest).
  const std::array<std::int64_t, 2> mine = {shape_.mlp_dim, static_cast<std::int64_t>(shape_.norm_eps * 1e12)};
  std::vector<std::int64_t> all(mine.size() * static_cast<std::size_t>(comm_.world_size()));
  comm_.all_gather(mine.data(), all.data(), sizeof(mine));
  for (int r = 1; r < comm_.world_size(); ++r) {
    const auto* theirs = &all[static_cast<std::size_t>(r) * mine.size()];
    BURST_CHECK(theirs[0] == all[0], "block: rank ", r, " has mlp_dim ", theirs[0], " but rank 0 has ", all[0]);
    BURST_CHECK(theirs[1] == all[1], "block: rank ", r, " has a different norm_eps from rank 0's");
  }
  BlockStats stats;
  batch_ = x.b;
  const int threads = options_.attention.threads;

  // H = RMSNorm(X) g1; X2 = X + attention(H).
  auto t1 = Clock::now();
  x_ = Tensor(DType::kF32, batch_, rows, 1, dim);
  convert_rows(x, x_.view());
  inv_rms1_.resize(static_cast<std::size_t>(batch_ * rows));
  Tensor h(DType::kF32, batch_, rows, 1, dim);
  rms_norm(all_rows(x_.view()), params.g1(), shape_.norm_eps, all_rows(h.view()), inv_rms1_.data());
  stats.norm_seconds += seconds_since(t1);
  Tensor attended(DType::kF32, batch_, rows, 1, dim);
  stats.attention = layer_.forward(params.attention(), h.view(), attended.view());
  h = Tensor();

  // H2 = RMSNorm(X2) g2, gathered over the sequence for tp-v3.
  t1 = Clock::now();
  x2_ = Tensor(DType::kF32, batch_, rows, 1, dim);
  add_rows(all_rows(x_.view()), all_rows(attended.view()), all_rows(x2_.view()));
  attended = Tensor();
  inv_rms2_.resize(static_cast<std::size_t>(batch_ * rows));
  Tensor h2(DType::kF32, batch_, rows, 1, dim);
  rms_norm(all_rows(x2_.view()), params.g2(), shape_.norm_eps, all_rows(h2.view()), inv_rms2_.data());
  stats.norm_seconds += seconds_since(t1);
  if (options_.strategy == Strategy::kTpV3) {
    h2_ = Tensor(DType::kF32, batch_, options_.attention.seqlen, 1, dim);
    collective(comm_, stats.mlp_bytes_sent, stats.collective_seconds,
               [&] { detail::gather_sequence(comm_, h2.view(), plan_, h2_.view()); });
  } else {
    h2_ = std::move(h2);
  }

  // M = (silu(H2 W1) * (H2 W3)) W2 on the hidden units held.
  t1 = Clock::now();
  const MatrixView h2m = all_rows(h2_.view());
  const std::int64_t mlp_rows = h2m.rows;
  gate_ = Tensor(DType::kF32, 1, mlp_rows, 1, f);
  up_ = Tensor(DType::kF32, 1, mlp_rows, 1, f);
  matmul(h2m, false, params.w1(), false, all_rows(gate_.view()), 0.0f, threads);
  matmul(h2m, false, params.w3(), false, all_rows(up_.view()), 0.0f, threads);
  std::vector<float> z(static_cast<std::size_t>(mlp_rows * f));
  swiglu(gate_.data<float>(), up_.data<float>(), z.data(), z.size());
  Tensor m(DType::kF32, batch_, h2_.view().s, 1, dim);
  matmul(MatrixView{z.data(), mlp_rows, f, f}, false, params.w2(), false, all_rows(m.view()), 0.0f, threads);
  z = {};
  stats.mlp_seconds += seconds_since(t1);
  if (options_.strategy == Strategy::kTpV1) {
    collective(comm_, stats.mlp_bytes_sent, stats.collective_seconds,
               [&] { comm_.all_reduce_sum(m.data<float>(), static_cast<std::size_t>(m.view().numel())); });
  } else if (options_.strategy == Strategy::kTpV3) {
    Tensor mine_rows(DType::kF32, batch_, rows, 1, dim);
    collective(comm_, stats.mlp_bytes_sent, stats.collective_seconds,
               [&] { detail::reduce_scatter_sequence(comm_, m.view(), plan_, mine_rows.view()); });
    m = std::move(mine_rows);
  }

  // Y = X2 + M.
  t1 = Clock::now();
  add_rows(all_rows(x2_.view()), all_rows(m.view()), all_rows(y));
  stats.norm_seconds += seconds_since(t1);
  stats.seconds = seconds_since(t0);
  return stats;
}

BlockStats TransformerBlock::backward(const BlockParameters& params, const TensorView& dy, const TensorView& dx,
                                      BlockParameters& grads) {
  const auto t0 = Clock::now();
  BURST_CHECK(batch_ > 0, "block backward: no forward to take gradients of");
  const std::int64_t dim = shape_.attention.model_dim, rows = layer_.rows(), f = hidden_.count;
  check_rows(dy, "dy", batch_, rows, dim);
  check_rows(dx, "dx", batch_, rows, dim);
  check_parameters(params, "params");
  check_parameters(grads, "grads");
  BlockStats stats;
  const int threads = options_.attention.threads;

  // dX2 = dY (the residual) + the MLP's input gradient through the second norm.
  Tensor dx2(DType::kF32, batch_, rows, 1, dim);
  convert_rows(dy, dx2.view());
  Tensor gathered;
  MatrixView dm = all_rows(dx2.view());
  if (options_.strategy == Strategy::kTpV3) {
    gathered = Tensor(DType::kF32, batch_, options_.attention.seqlen, 1, dim);
    collective(comm_, stats.mlp_bytes_sent, stats.collective_seconds,
               [&] { detail::gather_sequence(comm_, dx2.view(), plan_, gathered.view()); });
    dm = all_rows(gathered.view());
  }
  auto t1 = Clock::now();
  const MatrixView h2m = all_rows(h2_.view());
  const std::int64_t mlp_rows = h2m.rows;
  std::vector<float> z(static_cast<std::size_t>(mlp_rows * f)), dz(z.size());
  const MatrixView zm{z.data(), mlp_rows, f, f}, dzm{dz.data(), mlp_rows, f, f};
  swiglu(gate_.data<float>(), up_.data<float>(), z.data(), z.size());
  matmul(zm, true, dm, false, grads.w2(), 0.0f, threads);  // dW2 = Z^T dM
  matmul(dm, false, params.w2(), true, dzm, 0.0f, threads);  // dZ = dM W2^T
  gathered = Tensor();
  swiglu_backward(gate_.data<float>(), up_.data<float>(), dz.data(), z.data(), z.size());  // dz: dgate, z: dup
  matmul(h2m, true, dzm, false, grads.w1(), 0.0f, threads);
  matmul(h2m, true, zm, false, grads.w3(), 0.0f, threads);
  Tensor dh2(DType::kF32, batch_, h2_.view().s, 1, dim);
  matmul(dzm, false, params.w1(), true, all_rows(dh2.view()), 0.0f, threads);
  matmul(zm, false, params.w3(), true, all_rows(dh2.view()), 1.0f, threads);
  z = {};
  dz = {};
  stats.mlp_seconds += seconds_since(t1);
  if (options_.strategy == Strategy::kTpV1) {
    collective(comm_, stats.mlp_bytes_sent, stats.collective_seconds,
               [&] { comm_.all_reduce_sum(dh2.data<float>(), static_cast<std::size_t>(dh2.view().numel())); });
  } else if (options_.strategy == Strategy::kTpV3) {
    Tensor mine_rows(DType::kF32, batch_, rows, 1, dim);
    collective(comm_, stats.mlp_bytes_sent, stats.collective_seconds,
               [&] { detail::reduce_scatter_sequence(comm_, dh2.view(), plan_, mine_rows.view()); });
    dh2 = std::move(mine_rows);
  }
  t1 = Clock::now();
  std::fill_n(grads.g1(), dim, 0.0f);
  std::fill_n(grads.g2(), dim, 0.0f);
  rms_norm_backward(all_rows(x2_.view()), params.g2(), inv_rms2_.data(), all_rows(dh2.view()), all_rows(dx2.view()),
                    grads.g2());
  dh2 = Tensor();
  stats.norm_seconds += seconds_since(t1);

  // dX = dX2 + the attention layer's input gradient through the first norm.
  Tensor dh(DType::kF32, batch_, rows, 1, dim);
  stats.attention = layer_.backward(params.attention(), dx2.view(), dh.view(), grads.attention());
  t1 = Clock::now();
  rms_norm_backward(all_rows(x_.view()), params.g1(), inv_rms1_.data(), all_rows(dh.view()), all_rows(dx2.view()),
                    grads.g1());
  convert_rows(dx2.view(), dx);
  stats.norm_seconds += seconds_since(t1);

  // The norm and MLP weight gradients, summed over the ranks that saw other tokens.
  if (options_.strategy == Strategy::kTpV3) {
    collective(comm_, stats.grad_bytes_sent, stats.collective_seconds,
               [&] { comm_.all_reduce_sum(grads.mlp_data(), static_cast<std::size_t>(2 * dim)); });
  } else if (!tensor_parallel()) {
    collective(comm_, stats.grad_bytes_sent, stats.collective_seconds,
               [&] { comm_.all_reduce_sum(grads.mlp_data(), grads.mlp_count()); });
  }
  stats.seconds = seconds_since(t0);
  return stats;
}

std::size_t TransformerBlock::saved_bytes() const {
  return layer_.saved_bytes() + tensor_bytes(x_) + tensor_bytes(x2_) + tensor_bytes(h2_) + tensor_bytes(gate_) +
         tensor_bytes(up_) + (inv_rms1_.size() + inv_rms2_.size()) * sizeof(float);
}

BlockStack::BlockStack(comm::Communicator& comm, const BlockShape& shape, const LayerOptions& options, int layers) {
  BURST_CHECK(layers >= 1, "block stack: layers must be >= 1, got ", layers);
  blocks_.reserve(static_cast<std::size_t>(layers));
  for (int i = 0; i < layers; ++i) blocks_.emplace_back(comm, shape, options);
}

BlockStats BlockStack::forward(const std::vector<BlockParameters>& params, const TensorView& x, const TensorView& y) {
  BURST_CHECK(params.size() == blocks_.size(), "block stack: ", blocks_.size(), " layers but ", params.size(),
              " parameter sets");
  BlockStats total;
  // Between blocks the residual stream ping-pongs through two buffers.
  std::array<Tensor, 2> between;
  TensorView in = x;
  for (std::size_t i = 0; i < blocks_.size(); ++i) {
    TensorView out = y;
    if (i + 1 < blocks_.size()) {
      Tensor& t = between[i % 2];
      if (t.view().data == nullptr) t = Tensor(DType::kF32, x.b, x.s, 1, x.d);
      out = t.view();
    }
    total += blocks_[i].forward(params[i], in, out);
    in = out;
  }
  return total;
}

BlockStats BlockStack::backward(const std::vector<BlockParameters>& params, const TensorView& dy, const TensorView& dx,
                                std::vector<BlockParameters>& grads) {
  BURST_CHECK(params.size() == blocks_.size() && grads.size() == blocks_.size(), "block stack: ", blocks_.size(),
              " layers but ", params.size(), " parameter sets and ", grads.size(), " gradient sets");
  BlockStats total;
  // The gradient flows back in place: each block reads dY from `grad` and writes dX there.
  Tensor grad(DType::kF32, dy.b, dy.s, 1, dy.d);
  convert_rows(dy, grad.view());
  for (std::size_t i = blocks_.size(); i-- > 0;) total += blocks_[i].backward(params[i], grad.view(), grad.view(), grads[i]);
  convert_rows(grad.view(), dx);
  return total;
}

std::size_t BlockStack::saved_bytes() const {
  std::size_t sum = 0;
  for (const TransformerBlock& b : blocks_) sum += b.saved_bytes();
  return sum;
}

}  // namespace burst::algo
