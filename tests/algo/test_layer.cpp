// The attention layer on in-process ranks: every strategy, tensor parallelism included, gives
// the one-rank layer's output and gradients (against the double reference) for P = 1..4, in
// every layout, causal or windowed, MHA and GQA, fp32 and bf16, with and without packed
// documents.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "../support.h"
#include "burst/local_world.h"
#include "layer_suite.h"

namespace burst {
namespace {

using algo::Layout;
using algo::Strategy;
using testing::LayerCase;
using testing::MaskKind;

// Heads and kv heads a strategy can split over `ranks` as a layer: the registry's rule.
bool fits(Strategy s, int ranks, std::int64_t heads, std::int64_t kv_heads) {
  algo::ProblemShape shape;
  shape.n_heads_q = heads;
  shape.n_heads_kv = kv_heads;
  return algo::strategy_info(s).cannot_run(shape, ranks, {}, true).empty();
}

class LayerStrategies : public ::testing::TestWithParam<std::tuple<int, Strategy>> {};

TEST_P(LayerStrategies, MatchOneRankLayer) {
  const auto [ranks, strategy] = GetParam();
  int cases = 0;
  for (Layout layout : {Layout::kContiguous, Layout::kZigzag, Layout::kStriped})
    for (MaskKind mask : {MaskKind::kNone, MaskKind::kCausal, MaskKind::kCausalWindow})
      for (auto [heads, kv_heads] : {std::pair<std::int64_t, std::int64_t>{4, 4}, {4, 2}, {4, 1}, {6, 3}}) {
        if (!fits(strategy, ranks, heads, kv_heads)) continue;
        LayerCase lc;
        lc.strategy = strategy;
        lc.layout = layout;
        lc.mask = mask;
        lc.heads = heads;
        lc.kv_heads = kv_heads;
        comm::run_local_ranks(ranks, [&](comm::Communicator& c) { testing::check_layer_case(c, lc); });
        ++cases;
      }
  if (cases == 0) GTEST_SKIP() << "no head count fits " << algo::strategy_name(strategy) << " on " << ranks << " ranks";
}

INSTANTIATE_TEST_SUITE_P(
    RanksStrategies, LayerStrategies,
    ::testing::Combine(::testing::Values(1, 2, 3, 4),
                       ::testing::Values(Strategy::kBurst, Strategy::kRing, Strategy::kAllGather, Strategy::kUlysses,
                                         Strategy::kRingRsa, Strategy::kTpV1, Strategy::kTpV3)),
    [](const ::testing::TestParamInfo<std::tuple<int, Strategy>>& p) {
      std::ostringstream name;
      std::string s = algo::strategy_name(std::get<1>(p.param));
      for (char& ch : s)
        if (ch == '-') ch = '_';
      name << "P" << std::get<0>(p.param) << "_" << s;
      return name.str();
    });

TEST(Layer, Usp) {
  for (int degree : {1, 2}) {
    LayerCase lc;
    lc.strategy = Strategy::kUsp;
    lc.layout = Layout::kZigzag;
    lc.ulysses_degree = degree;
    comm::run_local_ranks(4, [&](comm::Communicator& c) { testing::check_layer_case(c, lc); });
  }
}

// Packed documents: every strategy and the document-aware layouts, RoPE restarting at every
// document (testing::check_layer_documents).
class LayerDocuments : public ::testing::TestWithParam<int> {};

TEST_P(LayerDocuments, MatchReferenceAndRotateWithinDocuments) {
  comm::run_local_ranks(GetParam(), [](comm::Communicator& c) { testing::check_layer_documents(c); });
}

INSTANTIATE_TEST_SUITE_P(Ranks, LayerDocuments, ::testing::Values(1, 2, 3, 4),
                         [](const ::testing::TestParamInfo<int>& p) {
                           std::ostringstream name;  // not "P" + to_string: GCC 12's -Wrestrict misfires
                           name << "P" << p.param;
                           return name.str();
                         });

TEST(Layer, DocumentsOutliveTheCallersArray) {
  // The layer copies the boundaries, so the caller's array may go before forward: a layer
  // whose array was overwritten and freed gives bitwise what one with a live array gives.
  comm::run_local_ranks(2, [](comm::Communicator& c) {
    const std::vector<std::int64_t> boundaries{0, 3, 25, 40};
    const algo::LayerShape shape{24, 4, 2, 8};
    algo::LayerOptions o;
    o.attention.seqlen = 40;
    o.attention.layout = Layout::kDocZigzag;
    o.attention.mask.causal = true;
    o.attention.mask.documents = boundaries;
    algo::AttentionLayer kept(c, shape, o);
    auto temporary = std::make_unique<std::vector<std::int64_t>>(boundaries);
    o.attention.mask.documents = *temporary;
    algo::AttentionLayer copied(c, shape, o);
    std::fill(temporary->begin(), temporary->end(), -1);
    temporary.reset();
    ASSERT_EQ(copied.positions(), kept.positions());
    EXPECT_EQ(copied.rope_positions(), kept.rope_positions());
    const algo::Parameters w = algo::random_parameters(shape, 7);
    const Tensor global = testing::random_tensor(DType::kF32, 1, 40, 1, 24, 8);
    Tensor x(DType::kF32, 1, kept.rows(), 1, 24), y_kept(DType::kF32, 1, kept.rows(), 1, 24),
        y_copied(DType::kF32, 1, kept.rows(), 1, 24);
    algo::copy_to_shard(global.view(), kept.positions(), x.view());
    kept.forward(w, x.view(), y_kept.view());
    copied.forward(w, x.view(), y_copied.view());
    EXPECT_TRUE(testing::bitwise_equal(y_copied.view(), y_kept.view()));
  });
}

TEST(Layer, RefusesDocumentsNotEndingAtSeqlen) {
  comm::run_local_ranks(1, [](comm::Communicator& c) {
    algo::LayerOptions o;
    o.attention.seqlen = 40;
    const std::vector<std::int64_t> documents{0, 10, 30};
    o.attention.mask.documents = documents;
    try {
      algo::AttentionLayer layer(c, algo::LayerShape{24, 4, 2, 8}, o);
      ADD_FAILURE() << "documents ending at 30 accepted for 40 tokens";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("documents end at 30 but seqlen is 40"), std::string::npos) << e.what();
    }
  });
}

TEST(Layer, Bf16Core) {
  for (Strategy s : {Strategy::kBurst, Strategy::kTpV3}) {
    LayerCase lc;
    lc.strategy = s;
    lc.layout = Layout::kZigzag;
    lc.dtype = DType::kBF16;
    comm::run_local_ranks(2, [&](comm::Communicator& c) { testing::check_layer_case(c, lc); });
  }
}

TEST(Layer, WithoutRope) {
  LayerCase lc;
  lc.strategy = Strategy::kTpV1;
  lc.rope_base = 0.0;
  comm::run_local_ranks(2, [&](comm::Communicator& c) { testing::check_layer_case(c, lc); });
}

TEST(Layer, TensorParallelRefusesUnsplittableHeads) {
  comm::run_local_ranks(3, [](comm::Communicator& c) {
    algo::LayerOptions o;
    o.strategy = Strategy::kTpV3;
    o.attention.seqlen = 30;
    try {
      algo::AttentionLayer layer(c, algo::LayerShape{24, 4, 2, 8}, o);
      ADD_FAILURE() << "4 heads over 3 ranks accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("heads (4) must be a multiple of the 3 ranks"), std::string::npos) << e.what();
    }
  });
}

TEST(Layer, CoreCallsRefuseTensorParallel) {
  comm::run_local_ranks(1, [](comm::Communicator& c) {
    Tensor q(DType::kF32, 1, 8, 1, 8);
    RowStats lse(1, 1, 8);
    algo::StrategyOptions o;
    o.seqlen = 8;
    try {
      algo::strategy_forward(Strategy::kTpV1, c, q.view(), q.view(), q.view(), q.view(), lse.view(), o);
      ADD_FAILURE() << "tp-v1 ran as an attention core";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("runs only as a layer"), std::string::npos) << e.what();
    }
  });
}

}  // namespace
}  // namespace burst
