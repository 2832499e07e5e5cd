// The transformer block on in-process ranks: a stack of two blocks under every strategy,
// tensor parallelism included, gives the reference's output and every gradient for P = 1..4,
// with the bytes of every collective and the saved activations exactly as their formulas say.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <tuple>
#include <utility>

#include "../support.h"
#include "block_suite.h"
#include "burst/local_world.h"

namespace burst {
namespace {

using algo::Layout;
using algo::Strategy;
using testing::BlockCase;
using testing::MaskKind;

bool fits(const BlockCase& bc, int ranks) {
  algo::StrategyOptions options;
  options.ulysses_degree = bc.ulysses_degree;
  const algo::BlockShape shape{algo::LayerShape{24, bc.heads, bc.kv_heads, 8}, bc.mlp_dim, 1e-5};
  return algo::block_cannot_run(bc.strategy, shape, ranks, options).empty();
}

class BlockStrategies : public ::testing::TestWithParam<std::tuple<int, Strategy>> {};

TEST_P(BlockStrategies, MatchReference) {
  const auto [ranks, strategy] = GetParam();
  int cases = 0;
  for (Layout layout : {Layout::kZigzag, Layout::kContiguous})
    for (auto [heads, kv_heads] : {std::pair<std::int64_t, std::int64_t>{4, 4}, {4, 2}, {6, 3}}) {
      BlockCase bc;
      bc.strategy = strategy;
      bc.layout = layout;
      bc.heads = heads;
      bc.kv_heads = kv_heads;
      bc.ulysses_degree = strategy == Strategy::kUsp && ranks % 2 == 0 ? 2 : 1;
      if (!fits(bc, ranks)) continue;
      comm::run_local_ranks(ranks, [&](comm::Communicator& c) { testing::check_block_case(c, bc); });
      ++cases;
    }
  if (cases == 0) GTEST_SKIP() << "no head count fits " << algo::strategy_name(strategy) << " on " << ranks << " ranks";
}

INSTANTIATE_TEST_SUITE_P(
    RanksStrategies, BlockStrategies,
    ::testing::Combine(::testing::Values(1, 2, 3, 4),
                       ::testing::Values(Strategy::kBurst, Strategy::kRing, Strategy::kAllGather, Strategy::kUlysses,
                                         Strategy::kRingRsa, Strategy::kUsp, Strategy::kTpV1, Strategy::kTpV3)),
    [](const ::testing::TestParamInfo<std::tuple<int, Strategy>>& p) {
      std::ostringstream name;
      std::string s = algo::strategy_name(std::get<1>(p.param));
      for (char& ch : s)
        if (ch == '-') ch = '_';
      name << "P" << std::get<0>(p.param) << "_" << s;
      return name.str();
    });

TEST(Block, OneLayerAndWindows) {
  for (Strategy s : {Strategy::kBurst, Strategy::kTpV3}) {
    BlockCase bc;
    bc.strategy = s;
    bc.layers = 1;
    bc.mask = MaskKind::kCausalWindow;
    comm::run_local_ranks(2, [&](comm::Communicator& c) { testing::check_block_case(c, bc); });
  }
}

TEST(Block, Bf16Core) {
  for (Strategy s : {Strategy::kBurst, Strategy::kUlysses, Strategy::kTpV1}) {
    BlockCase bc;
    bc.strategy = s;
    bc.dtype = DType::kBF16;
    comm::run_local_ranks(2, [&](comm::Communicator& c) { testing::check_block_case(c, bc); });
  }
}

TEST(Block, PackedDocuments) {
  for (Strategy s : {Strategy::kBurst, Strategy::kTpV3}) {
    BlockCase bc;
    bc.strategy = s;
    bc.layout = Layout::kDocZigzag;
    bc.heads = 6;
    bc.kv_heads = 3;
    bc.documents = {0, 1, 20, 23, 50, 61};
    comm::run_local_ranks(3, [&](comm::Communicator& c) { testing::check_block_case(c, bc); });
  }
}

TEST(Block, TensorParallelRefusesUnsplittableHidden) {
  const algo::BlockShape shape{algo::LayerShape{24, 4, 2, 8}, 50, 1e-5};
  EXPECT_NE(algo::block_cannot_run(Strategy::kTpV3, shape, 4, {}).find("mlp_dim must be a multiple of 4, got 50"),
            std::string::npos);
  EXPECT_EQ(algo::block_cannot_run(Strategy::kBurst, shape, 4, {}), "");
  comm::run_local_ranks(4, [&](comm::Communicator& c) {
    algo::LayerOptions o;
    o.strategy = Strategy::kTpV1;
    o.attention.seqlen = 40;
    try {
      algo::TransformerBlock block(c, shape, o);
      ADD_FAILURE() << "50 hidden units over 4 ranks accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("mlp_dim must be a multiple of the ranks (4), got 50"), std::string::npos)
          << e.what();
    }
  });
}

TEST(Block, RefusesMismatchedParameters) {
  comm::run_local_ranks(1, [](comm::Communicator& c) {
    const algo::BlockShape shape{algo::LayerShape{24, 4, 2, 8}, 48, 1e-5};
    algo::LayerOptions o;
    o.attention.seqlen = 16;
    algo::TransformerBlock block(c, shape, o);
    const algo::BlockShape other{algo::LayerShape{24, 4, 2, 8}, 32, 1e-5};
    const algo::BlockParameters wrong = algo::random_block_parameters(other, 1);
    Tensor x = testing::random_tensor(DType::kF32, 1, 16, 1, 24, 2), y(DType::kF32, 1, 16, 1, 24);
    try {
      block.forward(wrong, x.view(), y.view());
      ADD_FAILURE() << "an MLP of 32 hidden units accepted for 48";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("params.w1: expected 24x48, got 24x32"), std::string::npos) << e.what();
    }
  });
}

}  // namespace
}  // namespace burst
