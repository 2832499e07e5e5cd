#include "layer_suite.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <mutex>

#include "../support.h"
#include "burst/local_world.h"
#include "reference/layer.h"

namespace burst::testing {
namespace {

using algo::Strategy;

constexpr std::int64_t kBatch = 2, kHeadDim = 8, kModelDim = 24;
constexpr double kUnit = 0x1p-24;

algo::LayerShape shape_of(const LayerCase& lc) { return algo::LayerShape{kModelDim, lc.heads, lc.kv_heads, kHeadDim}; }

bool tensor_parallel(Strategy s) { return algo::layer_only(s); }

// Rows `positions` of a [b, rows, 1, D] tensor against the reference's [b, N, D], normwise
// relative to the whole reference tensor; +inf on a non-finite value.
double rows_error(const TensorView& got, const std::vector<double>& ref, const std::vector<std::int64_t>& positions,
                  std::int64_t n_global) {
  double scale = 0, diff = 0;
  for (double x : ref) scale = std::max(scale, std::fabs(x));
  for (std::int64_t ib = 0; ib < got.b; ++ib)
    for (std::size_t i = 0; i < positions.size(); ++i)
      for (std::int64_t x = 0; x < got.d; ++x) {
        const double g = got.row<float>(ib, static_cast<std::int64_t>(i), 0)[x];
        if (!std::isfinite(g)) return std::numeric_limits<double>::infinity();
        diff = std::max(diff, std::fabs(g - ref[static_cast<std::size_t>((ib * n_global + positions[i]) * got.d + x)]));
      }
  return diff / scale;
}

// A rank's block of a weight gradient against the reference's full matrix: element (i, j)
// of the block is (row0 + i, col0 + j) of the full matrix of `full_cols` columns.
double block_error(const algo::MatrixView& got, const std::vector<double>& ref, std::int64_t full_cols,
                   std::int64_t row0, std::int64_t col0) {
  double scale = 0, diff = 0;
  for (double x : ref) scale = std::max(scale, std::fabs(x));
  for (std::int64_t i = 0; i < got.rows; ++i)
    for (std::int64_t j = 0; j < got.cols; ++j) {
      const double g = got.data[i * got.ld + j];
      if (!std::isfinite(g)) return std::numeric_limits<double>::infinity();
      diff = std::max(diff, std::fabs(g - ref[static_cast<std::size_t>((row0 + i) * full_cols + col0 + j)]));
    }
  return diff / scale;
}

struct Errors {
  double y = 0, dx = 0, dw = 0;
};

struct LayerGlobal {
  Tensor x, dy;  // [b, N, 1, D]
  algo::Parameters weights;
  reference::LayerResult ref;
  Errors single;  // the one-rank layer's errors (burst, P = 1)
};

struct RankRun {
  Tensor y, dx;
  algo::Parameters grads;
  algo::LayerStats forward, backward;
  std::size_t saved_bytes = 0;
  std::vector<std::int64_t> positions;
  algo::HeadShard heads;
};

algo::LayerOptions options_of(const LayerCase& lc) {
  algo::LayerOptions o;
  o.strategy = lc.strategy;
  o.attention.seqlen = lc.seqlen;
  o.attention.layout = lc.layout;
  o.attention.mask = mask_of(lc.mask);
  o.attention.ulysses_degree = lc.ulysses_degree;
  o.attention.block_m = 16;  // several tiles per shard
  o.attention.block_n = 16;
  o.dtype = lc.dtype;
  o.rope_base = lc.rope_base;
  return o;
}

RankRun run_layer(comm::Communicator& c, const LayerCase& lc, const LayerGlobal& g) {
  const algo::LayerShape shape = shape_of(lc);
  algo::AttentionLayer layer(c, shape, options_of(lc));
  RankRun r;
  r.positions = layer.positions();
  r.heads = layer.heads();
  const std::int64_t rows = layer.rows();
  Tensor x(DType::kF32, kBatch, rows, 1, kModelDim), dy(DType::kF32, kBatch, rows, 1, kModelDim);
  algo::copy_to_shard(g.x.view(), r.positions, x.view());
  algo::copy_to_shard(g.dy.view(), r.positions, dy.view());
  const algo::Parameters local =
      tensor_parallel(lc.strategy) ? algo::shard_parameters(g.weights, shape, r.heads)
                                   : algo::shard_parameters(g.weights, shape, algo::all_heads(shape));
  r.y = Tensor(DType::kF32, kBatch, rows, 1, kModelDim);
  r.dx = Tensor(DType::kF32, kBatch, rows, 1, kModelDim);
  r.grads = algo::Parameters(kModelDim, r.heads.q_count, r.heads.kv_count, kHeadDim);
  r.y.fill_nan();
  r.dx.fill_nan();
  r.grads.fill_nan();
  r.forward = layer.forward(local, x.view(), r.y.view());
  r.saved_bytes = layer.saved_bytes();
  r.backward = layer.backward(local, dy.view(), r.dx.view(), r.grads);
  return r;
}

Errors errors_of(const RankRun& r, const LayerGlobal& g, const LayerCase& lc) {
  const std::int64_t d = kHeadDim, qd = lc.heads * d, kvd = lc.kv_heads * d;
  Errors e;
  e.y = rows_error(r.y.view(), g.ref.y, r.positions, lc.seqlen);
  e.dx = rows_error(r.dx.view(), g.ref.dx, r.positions, lc.seqlen);
  e.dw = std::max({block_error(r.grads.wq(), g.ref.dwq, qd, 0, r.heads.q_first * d),
                   block_error(r.grads.wk(), g.ref.dwk, kvd, 0, r.heads.kv_first * d),
                   block_error(r.grads.wv(), g.ref.dwv, kvd, 0, r.heads.kv_first * d),
                   block_error(r.grads.wo(), g.ref.dwo, kModelDim, r.heads.q_first * d, 0)});
  return e;
}

const LayerGlobal& global_problem(const LayerCase& lc) {
  static std::mutex mutex;
  static std::map<std::string, std::unique_ptr<LayerGlobal>> cache;
  const std::string key = std::to_string(static_cast<int>(lc.mask)) + "/" + std::to_string(lc.heads) + "/" +
                          std::to_string(lc.kv_heads) + "/" + std::to_string(lc.seqlen) + "/" +
                          std::string(dtype_name(lc.dtype)) + "/" + std::to_string(lc.rope_base);
  std::lock_guard lock(mutex);
  auto& slot = cache[key];
  if (slot) return *slot;
  auto g = std::make_unique<LayerGlobal>();
  const algo::LayerShape shape = shape_of(lc);
  g->x = random_tensor(DType::kF32, kBatch, lc.seqlen, 1, kModelDim, 201);
  g->dy = random_tensor(DType::kF32, kBatch, lc.seqlen, 1, kModelDim, 202);
  // Weights scaled up so scores span a few units: softmax rows are neither flat nor one-hot.
  g->weights = algo::random_parameters(shape, 203);
  for (std::size_t i = 0; i < g->weights.count(); ++i) g->weights.data()[i] *= 1.5f;
  reference::LayerInputs in;
  in.b = kBatch;
  in.n = lc.seqlen;
  in.dim = kModelDim;
  in.heads = lc.heads;
  in.kv_heads = lc.kv_heads;
  in.head_dim = kHeadDim;
  in.rope_base = lc.rope_base;
  in.mask = mask_of(lc.mask);
  in.x = g->x.data<float>();
  in.wq = g->weights.wq().data;
  in.wk = g->weights.wk().data;
  in.wv = g->weights.wv().data;
  in.wo = g->weights.wo().data;
  g->ref = reference::layer(in, g->dy.data<float>());
  LayerCase single = lc;
  single.strategy = Strategy::kBurst;
  comm::run_local_ranks(1, [&](comm::Communicator& c) { g->single = errors_of(run_layer(c, single, *g), *g, single); });
  slot = std::move(g);
  return *slot;
}

}  // namespace

std::string LayerCase::describe() const {
  static const char* masks[] = {"none", "causal", "window", "causal+window"};
  return "layer/" + algo::strategy_name(strategy) + "/" + algo::layout_name(layout) + "/" +
         masks[static_cast<int>(mask)] + "/H" + std::to_string(heads) + "G" + std::to_string(kv_heads) + "/N" +
         std::to_string(seqlen) + "/" + std::string(dtype_name(dtype)) +
         (strategy == Strategy::kUsp ? "/U" + std::to_string(ulysses_degree) : "") +
         (rope_base == 0.0 ? "/no-rope" : "");
}

void check_layer_case(comm::Communicator& c, const LayerCase& lc) {
  SCOPED_TRACE("rank " + std::to_string(c.rank()) + " of " + std::to_string(c.world_size()) + ": " + lc.describe());
  const LayerGlobal& g = global_problem(lc);
  const RankRun r = run_layer(c, lc, g);
  const Errors e = errors_of(r, g, lc);

  // Tolerance (docs/numerics.md, extended to the layer): the attention core's terms plus one
  // unit per term of the projections' dot products (D for Q, K, V and dX's sums, Hq d for Y),
  // and N for the weight gradients' sums over tokens; bf16 adds its rounding of Q, K, V, dO.
  const double s = g.ref.max_abs_score;
  const double terms = 2.0 * kModelDim + static_cast<double>(lc.heads * kHeadDim) + kHeadDim * (1 + s) +
                       static_cast<double>(lc.seqlen);
  const double bf16 = lc.dtype == DType::kBF16 ? 8 * 0x1p-8 : 0.0;
  const double y_tol = 8 * kUnit * terms + bf16;
  const double grad_tol = 16 * kUnit * (terms + static_cast<double>(lc.seqlen) + kHeadDim) + bf16;
  EXPECT_LE(e.y, y_tol) << "y";
  EXPECT_LE(e.dx, grad_tol) << "dx";
  EXPECT_LE(e.dw, grad_tol) << "weight gradients";
  EXPECT_LE(e.y, 4 * std::max(g.single.y, 1e-6)) << "y error grew past 4x the one-rank layer's";
  EXPECT_LE(e.dx, 4 * std::max(g.single.dx, 1e-6)) << "dx error grew past 4x the one-rank layer's";
  EXPECT_LE(e.dw, 4 * std::max(g.single.dw, 1e-6)) << "weight gradient error grew past 4x the one-rank layer's";

  // The layer's own collectives, exactly.
  const algo::LayerShape shape = shape_of(lc);
  const auto plan = algo::shard_plan(lc.seqlen, c.world_size(), lc.layout);
  std::vector<std::int64_t> lengths;
  for (const auto& p : plan) lengths.push_back(static_cast<std::int64_t>(p.size()));
  const algo::LayerTraffic t = algo::expected_layer_traffic(lc.strategy, shape, kBatch, lengths, c.rank());
  EXPECT_EQ(r.forward.layer_bytes_sent, t.forward);
  EXPECT_EQ(r.backward.layer_bytes_sent, t.backward);
  EXPECT_EQ(r.forward.grad_bytes_sent, 0u);
  EXPECT_EQ(r.backward.grad_bytes_sent, t.grads);
  // The attention core's: the registry's formula (the layer's O is fp32).
  algo::StrategyOptions options;
  options.ulysses_degree = lc.ulysses_degree;
  algo::ProblemShape core;
  core.batch = kBatch;
  core.n_heads_q = lc.heads;
  core.n_heads_kv = lc.kv_heads;
  core.head_dim = kHeadDim;
  core.element_bytes = dtype_size(lc.dtype);
  core.output_bytes = sizeof(float);
  const algo::StrategyBytes want = algo::strategy_info(lc.strategy).bytes(core, lengths, c.rank(), options);
  EXPECT_EQ(r.forward.attention.bytes_sent + r.forward.attention.bytes_saved, want.forward) << "attention forward";
  EXPECT_EQ(r.backward.attention.bytes_sent, want.backward) << "attention backward";
  if (tensor_parallel(lc.strategy)) {
    EXPECT_EQ(r.forward.attention.bytes_sent + r.backward.attention.bytes_sent, 0u) << "tp attention is local";
  }

  // Memory: the registry's parameters (the heads held) and saved activations (X, tp: every
  // token; the Q, K, V the core reads, fp32 O and lse) against what the layer holds.
  const algo::LayerMemory m = algo::layer_memory(lc.strategy, shape, kBatch, lengths, lc.dtype, true, options, {});
  EXPECT_EQ(static_cast<double>(r.grads.bytes()), m.parameters);
  // The formula sizes a rank by the longest shard (an upper bound for the others).
  const bool longest = tensor_parallel(lc.strategy) ||
                       lengths[static_cast<std::size_t>(c.rank())] == *std::max_element(lengths.begin(), lengths.end());
  if (longest) {
    EXPECT_EQ(static_cast<double>(r.saved_bytes), m.saved);
  } else {
    EXPECT_LT(static_cast<double>(r.saved_bytes), m.saved);
  }
}

}  // namespace burst::testing
