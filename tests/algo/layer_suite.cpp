#include "layer_suite.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "../support.h"
#include "burst/local_world.h"
#include "reference/layer.h"

namespace burst::testing {

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

namespace {

using algo::Strategy;

constexpr std::int64_t kBatch = 2, kHeadDim = 8, kModelDim = 24;
constexpr double kUnit = 0x1p-24;

// The boundaries as text: "-" without documents.
std::string documents_text(const std::vector<std::int64_t>& documents) {
  std::string text = documents.empty() ? "-" : "";
  for (std::int64_t c : documents) text += std::to_string(c) + ",";
  return text;
}

algo::LayerShape shape_of(const LayerCase& lc) { return algo::LayerShape{kModelDim, lc.heads, lc.kv_heads, kHeadDim}; }

bool tensor_parallel(Strategy s) { return algo::layer_only(s); }

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
  std::vector<std::int64_t> positions, rope_positions;
  algo::HeadShard heads;
};

// The case's mask; its documents point at lc.documents.
kernels::MaskSpec layer_mask(const LayerCase& lc) {
  kernels::MaskSpec m = mask_of(lc.mask);
  m.documents = lc.documents;
  return m;
}

algo::LayerOptions options_of(const LayerCase& lc) {
  algo::LayerOptions o;
  o.strategy = lc.strategy;
  o.attention.seqlen = lc.seqlen;
  o.attention.layout = lc.layout;
  o.attention.mask = layer_mask(lc);
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
  r.rope_positions = layer.rope_positions();
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
                          std::string(dtype_name(lc.dtype)) + "/" + std::to_string(lc.rope_base) + "/" +
                          documents_text(lc.documents);
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
  in.mask = layer_mask(lc);
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

// Boundaries of documents of the given lengths, back to back.
std::vector<std::int64_t> boundaries(std::initializer_list<std::int64_t> lengths) {
  std::vector<std::int64_t> c{0};
  for (std::int64_t l : lengths) c.push_back(c.back() + l);
  return c;
}

// 150 tokens: single tokens, documents shorter than 4 ranks, and three longer than a shard
// of 4 ranks (the 58-token one is [44, 102)).
constexpr std::int64_t kPackTokens = 150, kMovedFirst = 44, kMovedLength = 58;
std::vector<std::int64_t> packed_documents() { return boundaries({1, 37, 2, 3, 1, 58, 1, 29, 18}); }

// Y and dX of a case on rank 0 ([b, N, 1, D], global token order; empty on other ranks).
struct GlobalRows {
  Tensor y, dx;
};

GlobalRows run_gathered(comm::Communicator& c, const LayerCase& lc, const LayerGlobal& g) {
  const RankRun r = run_layer(c, lc, g);
  const auto plan = algo::shard_plan(lc.seqlen, c.world_size(), lc.layout, layer_mask(lc));
  GlobalRows out;
  if (c.rank() == 0) {
    out.y = Tensor(DType::kF32, kBatch, lc.seqlen, 1, kModelDim);
    out.dx = Tensor(DType::kF32, kBatch, lc.seqlen, 1, kModelDim);
  }
  const TensorView y = out.y.view(), dx = out.dx.view();
  algo::gather_rows(c, r.y.view(), plan, c.rank() == 0 ? &y : nullptr);
  algo::gather_rows(c, r.dx.view(), plan, c.rank() == 0 ? &dx : nullptr);
  return out;
}

// max |a[:, first + i] - b[:, i]| / max |b| over the rows of b.
double moved_rows_error(const TensorView& a, std::int64_t first, const TensorView& b) {
  double scale = 0, diff = 0;
  for (std::int64_t ib = 0; ib < b.b; ++ib)
    for (std::int64_t i = 0; i < b.s; ++i)
      for (std::int64_t x = 0; x < b.d; ++x) {
        const double want = b.row<float>(ib, i, 0)[x], got = a.row<float>(ib, first + i, 0)[x];
        if (!std::isfinite(got) || !std::isfinite(want)) return std::numeric_limits<double>::infinity();
        scale = std::max(scale, std::fabs(want));
        diff = std::max(diff, std::fabs(got - want));
      }
  return diff / scale;
}

// A document's rows out of the pack against the same tokens run alone (positions 0..L-1, no
// documents), with a bf16 core: Q and K are rounded to bf16 after RoPE, so rotating the
// document at its global positions would change that rounding (about 2^-9 of every element)
// and move Y and dX by ~1e-3, whereas rotating within the document gives the same Q, K, V
// and dO bit for bit and leaves only fp32 differences of the attention's summation order.
void check_moved_document(comm::Communicator& c) {
  LayerCase pack;
  pack.strategy = Strategy::kBurst;
  pack.layout = algo::Layout::kDocZigzag;
  pack.seqlen = kPackTokens;
  pack.documents = packed_documents();
  pack.dtype = DType::kBF16;
  LayerCase alone = pack;
  alone.layout = algo::Layout::kZigzag;
  alone.seqlen = kMovedLength;
  alone.documents.clear();
  SCOPED_TRACE("rank " + std::to_string(c.rank()) + " of " + std::to_string(c.world_size()) +
               ": a document moved in the pack, " + pack.describe());

  // Every rank builds the same global inputs; the document's rows are copied out of the pack.
  LayerGlobal in_pack, on_its_own;
  in_pack.x = random_tensor(DType::kF32, kBatch, kPackTokens, 1, kModelDim, 301);
  in_pack.dy = random_tensor(DType::kF32, kBatch, kPackTokens, 1, kModelDim, 302);
  in_pack.weights = algo::random_parameters(shape_of(pack), 303);
  for (std::size_t i = 0; i < in_pack.weights.count(); ++i) in_pack.weights.data()[i] *= 1.5f;
  std::vector<std::int64_t> moved(static_cast<std::size_t>(kMovedLength));
  for (std::int64_t i = 0; i < kMovedLength; ++i) moved[static_cast<std::size_t>(i)] = kMovedFirst + i;
  on_its_own.x = Tensor(DType::kF32, kBatch, kMovedLength, 1, kModelDim);
  on_its_own.dy = Tensor(DType::kF32, kBatch, kMovedLength, 1, kModelDim);
  algo::copy_to_shard(in_pack.x.view(), moved, on_its_own.x.view());
  algo::copy_to_shard(in_pack.dy.view(), moved, on_its_own.dy.view());
  on_its_own.weights = algo::shard_parameters(in_pack.weights, shape_of(pack), algo::all_heads(shape_of(pack)));

  const GlobalRows a = run_gathered(c, pack, in_pack), b = run_gathered(c, alone, on_its_own);
  if (c.rank() != 0) return;
  // Rotating within documents leaves fp32 rounding of differently ordered sums (the kernel's
  // tiles, the ring's merges; measured 2.5e-7), bounded as check_layer_case bounds Y; global
  // positions move both by 3.8e-3 here (bf16's 2^-9 through the scores), 60x this bound.
  const double tol = 8 * kUnit * (2.0 * kModelDim + static_cast<double>(pack.heads * kHeadDim) + kMovedLength);
  EXPECT_LE(moved_rows_error(a.y.view(), kMovedFirst, b.y.view()), tol) << "y";
  EXPECT_LE(moved_rows_error(a.dx.view(), kMovedFirst, b.dx.view()), tol) << "dx";
}

}  // namespace

std::string LayerCase::describe() const {
  static const char* masks[] = {"none", "causal", "window", "causal+window"};
  return "layer/" + algo::strategy_name(strategy) + "/" + algo::layout_name(layout) + "/" +
         masks[static_cast<int>(mask)] + "/H" + std::to_string(heads) + "G" + std::to_string(kv_heads) + "/N" +
         std::to_string(seqlen) + "/" + std::string(dtype_name(dtype)) +
         (strategy == Strategy::kUsp ? "/U" + std::to_string(ulysses_degree) : "") +
         (rope_base == 0.0 ? "/no-rope" : "") +
         (documents.empty() ? "" : "/docs" + std::to_string(documents.size() - 1));
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

  // RoPE rotates the Q and K rows (this rank's X rows; tp: every token) at their positions
  // within their documents. A linear walk over the boundaries, unlike the layer's search.
  std::vector<std::int64_t> rotated = r.positions;
  if (tensor_parallel(lc.strategy)) {
    rotated.resize(static_cast<std::size_t>(lc.seqlen));
    for (std::int64_t i = 0; i < lc.seqlen; ++i) rotated[static_cast<std::size_t>(i)] = i;
  }
  for (std::int64_t& p : rotated) {
    std::int64_t start = 0;
    for (std::int64_t boundary : lc.documents)
      if (boundary <= p) start = boundary;
    p -= start;
  }
  EXPECT_EQ(r.rope_positions, rotated) << "rotary positions";

  // The layer's own collectives, exactly.
  const algo::LayerShape shape = shape_of(lc);
  const auto plan = algo::shard_plan(lc.seqlen, c.world_size(), lc.layout, layer_mask(lc));
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
  EXPECT_EQ(r.backward.attention.bytes_sent + r.backward.attention.bytes_saved, want.backward) << "attention backward";
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

void check_layer_documents(comm::Communicator& c) {
  const int ranks = c.world_size();
  for (Strategy strategy : {Strategy::kBurst, Strategy::kRing, Strategy::kUsp, Strategy::kUlysses,
                            Strategy::kAllGather, Strategy::kTpV1, Strategy::kTpV3}) {
    const bool rings = strategy == Strategy::kBurst || strategy == Strategy::kRing || strategy == Strategy::kUsp;
    std::vector<algo::Layout> layouts{algo::Layout::kDocZigzag, algo::Layout::kBalanced};
    if (rings) layouts.insert(layouts.begin(), algo::Layout::kZigzag);
    for (algo::Layout layout : layouts) {
      LayerCase lc;
      lc.strategy = strategy;
      lc.layout = layout;
      lc.mask = MaskKind::kCausal;
      lc.seqlen = kPackTokens;
      lc.documents = packed_documents();
      lc.ulysses_degree = strategy == Strategy::kUsp && ranks % 2 == 0 ? 2 : 1;
      // The first head shape the strategy splits over these ranks, as the registry says.
      algo::StrategyOptions options;
      options.ulysses_degree = lc.ulysses_degree;
      options.mask = layer_mask(lc);
      bool fits = false;
      for (auto [heads, kv_heads] : {std::pair<std::int64_t, std::int64_t>{4, 2}, {6, 3}, {4, 4}}) {
        algo::ProblemShape shape;
        shape.n_heads_q = heads;
        shape.n_heads_kv = kv_heads;
        if (!algo::strategy_info(strategy).cannot_run(shape, ranks, options, true).empty()) continue;
        lc.heads = heads;
        lc.kv_heads = kv_heads;
        fits = true;
        break;
      }
      if (fits) check_layer_case(c, lc);
    }
  }
  // A window without the causal flag, burst over the balanced layout.
  LayerCase window;
  window.layout = algo::Layout::kBalanced;
  window.mask = MaskKind::kWindow;
  window.seqlen = kPackTokens;
  window.documents = packed_documents();
  check_layer_case(c, window);
  check_moved_document(c);
}

}  // namespace burst::testing
