#include "block_suite.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "../support.h"
#include "burst/local_world.h"
#include "layer_suite.h"
#include "reference/block.h"

namespace burst::testing {
namespace {

using algo::Strategy;

constexpr std::int64_t kBatch = 2, kHeadDim = 8, kModelDim = 24;
constexpr double kUnit = 0x1p-24;

algo::BlockShape shape_of(const BlockCase& bc) {
  return algo::BlockShape{algo::LayerShape{kModelDim, bc.heads, bc.kv_heads, kHeadDim}, bc.mlp_dim, 1e-5};
}

kernels::MaskSpec block_mask(const BlockCase& bc) {
  kernels::MaskSpec m = mask_of(bc.mask);
  m.documents = bc.documents;
  return m;
}

algo::LayerOptions options_of(const BlockCase& bc) {
  algo::LayerOptions o;
  o.strategy = bc.strategy;
  o.attention.seqlen = bc.seqlen;
  o.attention.layout = bc.layout;
  o.attention.mask = block_mask(bc);
  o.attention.ulysses_degree = bc.ulysses_degree;
  o.attention.block_m = 16;  // several tiles per shard
  o.attention.block_n = 16;
  o.dtype = bc.dtype;
  return o;
}

struct Errors {
  double y = 0, dx = 0, dw = 0;
};

struct BlockGlobal {
  Tensor x, dy;  // [b, N, 1, D]
  std::vector<algo::BlockParameters> weights;  // every layer's, whole
  reference::BlockResult ref;
  Errors single;  // the one-rank stack's errors (burst, P = 1)
};

struct RankRun {
  Tensor y, dx;
  std::vector<algo::BlockParameters> grads;
  algo::BlockStats forward, backward;
  std::size_t saved_bytes = 0;
  std::vector<std::int64_t> positions;
  algo::HeadShard heads;
  algo::HiddenShard hidden;
};

RankRun run_stack(comm::Communicator& c, const BlockCase& bc, const BlockGlobal& g) {
  const algo::BlockShape shape = shape_of(bc);
  algo::BlockStack stack(c, shape, options_of(bc), bc.layers);
  RankRun r;
  r.positions = stack.positions();
  r.heads = stack.block(0).heads();
  r.hidden = stack.block(0).hidden();
  const std::int64_t rows = stack.rows();
  Tensor x(DType::kF32, kBatch, rows, 1, kModelDim), dy(DType::kF32, kBatch, rows, 1, kModelDim);
  algo::copy_to_shard(g.x.view(), r.positions, x.view());
  algo::copy_to_shard(g.dy.view(), r.positions, dy.view());
  std::vector<algo::BlockParameters> local;
  for (int i = 0; i < bc.layers; ++i) {
    local.push_back(algo::shard_block_parameters(g.weights[static_cast<std::size_t>(i)], shape, r.heads, r.hidden));
    r.grads.emplace_back(shape, r.heads, r.hidden);
    r.grads.back().fill_nan();
  }
  r.y = Tensor(DType::kF32, kBatch, rows, 1, kModelDim);
  r.dx = Tensor(DType::kF32, kBatch, rows, 1, kModelDim);
  r.y.fill_nan();
  r.dx.fill_nan();
  r.forward = stack.forward(local, x.view(), r.y.view());
  r.saved_bytes = stack.saved_bytes();
  r.backward = stack.backward(local, dy.view(), r.dx.view(), r.grads);
  return r;
}

Errors errors_of(const RankRun& r, const BlockGlobal& g, const BlockCase& bc) {
  const std::int64_t d = kHeadDim, qd = bc.heads * d, kvd = bc.kv_heads * d, f = bc.mlp_dim;
  Errors e;
  e.y = rows_error(r.y.view(), g.ref.y, r.positions, bc.seqlen);
  e.dx = rows_error(r.dx.view(), g.ref.dx, r.positions, bc.seqlen);
  for (std::size_t i = 0; i < r.grads.size(); ++i) {
    const algo::BlockParameters& got = r.grads[i];
    const reference::BlockGradients& want = g.ref.grads[i];
    const algo::MatrixView g1{const_cast<float*>(got.g1()), 1, kModelDim, kModelDim},
        g2{const_cast<float*>(got.g2()), 1, kModelDim, kModelDim};
    e.dw = std::max({e.dw, block_error(got.attention().wq(), want.dwq, qd, 0, r.heads.q_first * d),
                     block_error(got.attention().wk(), want.dwk, kvd, 0, r.heads.kv_first * d),
                     block_error(got.attention().wv(), want.dwv, kvd, 0, r.heads.kv_first * d),
                     block_error(got.attention().wo(), want.dwo, kModelDim, r.heads.q_first * d, 0),
                     block_error(g1, want.dg1, kModelDim, 0, 0), block_error(g2, want.dg2, kModelDim, 0, 0),
                     block_error(got.w1(), want.dw1, f, 0, r.hidden.first),
                     block_error(got.w3(), want.dw3, f, 0, r.hidden.first),
                     block_error(got.w2(), want.dw2, kModelDim, r.hidden.first, 0)});
  }
  return e;
}

std::string documents_text(const std::vector<std::int64_t>& documents) {
  std::string text = documents.empty() ? "-" : "";
  for (std::int64_t c : documents) text += std::to_string(c) + ",";
  return text;
}

const BlockGlobal& global_problem(const BlockCase& bc) {
  static std::mutex mutex;
  static std::map<std::string, std::unique_ptr<BlockGlobal>> cache;
  const std::string key = bc.describe() + documents_text(bc.documents);
  std::lock_guard lock(mutex);
  auto& slot = cache[key];
  if (slot) return *slot;
  auto g = std::make_unique<BlockGlobal>();
  const algo::BlockShape shape = shape_of(bc);
  g->x = random_tensor(DType::kF32, kBatch, bc.seqlen, 1, kModelDim, 401);
  g->dy = random_tensor(DType::kF32, kBatch, bc.seqlen, 1, kModelDim, 402);
  reference::BlockInputs in;
  in.b = kBatch;
  in.n = bc.seqlen;
  in.dim = kModelDim;
  in.heads = bc.heads;
  in.kv_heads = bc.kv_heads;
  in.head_dim = kHeadDim;
  in.mlp_dim = bc.mlp_dim;
  in.norm_eps = shape.norm_eps;
  in.mask = block_mask(bc);
  in.x = g->x.data<float>();
  for (int i = 0; i < bc.layers; ++i) {
    g->weights.push_back(algo::random_block_parameters(shape, 403 + static_cast<std::uint64_t>(i)));
    algo::Parameters& a = g->weights.back().attention();
    // As the layer tests: scores span a few units, softmax rows neither flat nor one-hot.
    for (std::size_t j = 0; j < a.count(); ++j) a.data()[j] *= 1.5f;
  }
  for (const algo::BlockParameters& w : g->weights)
    in.layers.push_back({w.attention().wq().data, w.attention().wk().data, w.attention().wv().data,
                         w.attention().wo().data, w.g1(), w.g2(), w.w1().data, w.w3().data, w.w2().data});
  g->ref = reference::block(in, g->dy.data<float>());
  BlockCase single = bc;
  single.strategy = Strategy::kBurst;
  comm::run_local_ranks(1, [&](comm::Communicator& c) { g->single = errors_of(run_stack(c, single, *g), *g, single); });
  slot = std::move(g);
  return *slot;
}

void check_bytes(comm::Communicator& c, const BlockCase& bc, const RankRun& r) {
  const algo::BlockShape shape = shape_of(bc);
  const auto plan = algo::shard_plan(bc.seqlen, c.world_size(), bc.layout, block_mask(bc));
  std::vector<std::int64_t> lengths;
  for (const auto& p : plan) lengths.push_back(static_cast<std::int64_t>(p.size()));
  const auto l = static_cast<std::uint64_t>(bc.layers);
  const algo::LayerTraffic lt = algo::expected_layer_traffic(bc.strategy, shape.attention, kBatch, lengths, c.rank());
  const algo::BlockTraffic bt = algo::expected_block_traffic(bc.strategy, shape, kBatch, lengths, c.rank());
  EXPECT_EQ(r.forward.attention.layer_bytes_sent, l * lt.forward) << "attention layer's collectives, forward";
  EXPECT_EQ(r.backward.attention.layer_bytes_sent, l * lt.backward) << "attention layer's collectives, backward";
  EXPECT_EQ(r.forward.mlp_bytes_sent, l * bt.forward) << "MLP collectives, forward";
  EXPECT_EQ(r.backward.mlp_bytes_sent, l * bt.backward) << "MLP collectives, backward";
  EXPECT_EQ(r.forward.attention.grad_bytes_sent + r.forward.grad_bytes_sent, 0u);
  EXPECT_EQ(r.backward.attention.grad_bytes_sent, l * lt.grads) << "attention weight gradients";
  EXPECT_EQ(r.backward.grad_bytes_sent, l * bt.grads) << "norm and MLP weight gradients";
  algo::StrategyOptions options;
  options.ulysses_degree = bc.ulysses_degree;
  algo::ProblemShape core;
  core.batch = kBatch;
  core.n_heads_q = bc.heads;
  core.n_heads_kv = bc.kv_heads;
  core.head_dim = kHeadDim;
  core.element_bytes = dtype_size(bc.dtype);
  core.output_bytes = sizeof(float);
  const algo::StrategyBytes want = algo::strategy_info(bc.strategy).bytes(core, lengths, c.rank(), options);
  const algo::StrategyStats &fwd = r.forward.attention.attention, &bwd = r.backward.attention.attention;
  EXPECT_EQ(fwd.bytes_sent + fwd.bytes_saved, l * want.forward) << "attention core, forward";
  EXPECT_EQ(bwd.bytes_sent + bwd.bytes_saved, l * want.backward) << "attention core, backward";
  EXPECT_EQ(r.forward.bytes_sent(), fwd.bytes_sent + l * (lt.forward + bt.forward));

  // Memory: the parameters every layer holds, and the saved activations of the longest shard.
  const algo::LayerMemory m =
      algo::block_memory(bc.strategy, shape, kBatch, lengths, bc.dtype, true, options, {}, bc.layers);
  double parameters = 0;
  for (const algo::BlockParameters& p : r.grads) parameters += static_cast<double>(p.bytes());
  EXPECT_EQ(parameters, m.parameters);
  // tp-v1 holds every token's residual rows; the others their shard's (tp-v3's gathered H2 is
  // every token's on every rank).
  const bool longest = bc.strategy == Strategy::kTpV1 ||
                       lengths[static_cast<std::size_t>(c.rank())] == *std::max_element(lengths.begin(), lengths.end());
  if (longest) {
    EXPECT_EQ(static_cast<double>(r.saved_bytes), m.saved);
  } else {
    EXPECT_LT(static_cast<double>(r.saved_bytes), m.saved);
  }
}

}  // namespace

std::string BlockCase::describe() const {
  static const char* masks[] = {"none", "causal", "window", "causal+window"};
  std::ostringstream s;  // not string concatenation: GCC 12's -Wrestrict misfires on it
  s << "block/" << algo::strategy_name(strategy) << "/" << algo::layout_name(layout) << "/"
    << masks[static_cast<int>(mask)] << "/H" << heads << "G" << kv_heads << "/N" << seqlen << "/F" << mlp_dim << "/L"
    << layers << "/" << dtype_name(dtype);
  if (strategy == Strategy::kUsp) s << "/U" << ulysses_degree;
  if (!documents.empty()) s << "/docs" << documents.size() - 1;
  return s.str();
}

void check_block_case(comm::Communicator& c, const BlockCase& bc) {
  SCOPED_TRACE("rank " + std::to_string(c.rank()) + " of " + std::to_string(c.world_size()) + ": " + bc.describe());
  const BlockGlobal& g = global_problem(bc);
  const RankRun r = run_stack(c, bc, g);
  const Errors e = errors_of(r, g, bc);

  // Tolerance: the attention layer's (layer_suite.cpp: its core, its projections' D and Hq d
  // terms, N for weight gradients) plus the MLP's dot products (D for W1 and W3, F for W2),
  // the norms' D, per layer; bf16 adds its rounding of Q, K, V and dO.
  const double s = g.ref.max_abs_score, layers = bc.layers;
  const double terms = layers * (4.0 * kModelDim + static_cast<double>(bc.heads * kHeadDim) + kHeadDim * (1 + s) +
                                 static_cast<double>(bc.seqlen + bc.mlp_dim));
  const double bf16 = bc.dtype == DType::kBF16 ? 8 * layers * 0x1p-8 : 0.0;
  const double y_tol = 8 * kUnit * terms + bf16;
  const double grad_tol = 16 * kUnit * (terms + static_cast<double>(bc.seqlen) + kHeadDim) + bf16;
  EXPECT_LE(e.y, y_tol) << "y";
  EXPECT_LE(e.dx, grad_tol) << "dx";
  EXPECT_LE(e.dw, grad_tol) << "weight gradients";
  EXPECT_LE(e.y, 4 * std::max(g.single.y, 1e-6)) << "y error grew past 4x the one-rank stack's";
  EXPECT_LE(e.dx, 4 * std::max(g.single.dx, 1e-6)) << "dx error grew past 4x the one-rank stack's";
  EXPECT_LE(e.dw, 4 * std::max(g.single.dw, 1e-6)) << "weight gradient error grew past 4x the one-rank stack's";
  if (std::getenv("BURST_TEST_VERBOSE")) {
    std::printf("%s rank %d: y %.3g (tol %.3g) dx %.3g dw %.3g (tol %.3g)\n", bc.describe().c_str(), c.rank(), e.y,
                y_tol, e.dx, e.dw, grad_tol);
  }
  check_bytes(c, bc, r);
}

}  // namespace burst::testing
