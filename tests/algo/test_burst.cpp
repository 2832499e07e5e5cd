// BurstAttention on in-process ranks: every (ranks, layout) pair runs the default matrix of
// masks, GQA ratios, divisible and indivisible lengths, both backward schemes and dtypes.
#include <gtest/gtest.h>

#include <sstream>
#include <tuple>

#include "burst_suite.h"
#include "comm/local_world.h"

namespace burst {
namespace {

using algo::BackwardScheme;
using algo::Layout;
using testing::BurstCase;
using testing::MaskKind;

class BurstRing : public ::testing::TestWithParam<std::tuple<int, Layout>> {};

TEST_P(BurstRing, MatchesReferenceAndFormula) {
  const auto [ranks, layout] = GetParam();
  for (MaskKind mask : {MaskKind::kNone, MaskKind::kCausal, MaskKind::kWindow, MaskKind::kCausalWindow})
    for (std::int64_t group : {1, 2})
      for (std::int64_t seqlen : {96, 101})
        for (BackwardScheme scheme : {BackwardScheme::kQuery, BackwardScheme::kKeyValue})
          for (DType dtype : {DType::kF32, DType::kBF16}) {
            BurstCase bc{layout, mask, group, seqlen, scheme, dtype};
            comm::run_local_ranks(ranks, [&](comm::Communicator& c) { testing::check_burst_case(c, bc); });
          }
}

INSTANTIATE_TEST_SUITE_P(RanksLayouts, BurstRing,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4, 5, 8),
                                            ::testing::Values(Layout::kContiguous, Layout::kZigzag, Layout::kStriped)),
                         [](const ::testing::TestParamInfo<std::tuple<int, Layout>>& p) {
                           std::ostringstream name;
                           name << "P" << std::get<0>(p.param) << "_" << algo::layout_name(std::get<1>(p.param));
                           return name.str();
                         });

TEST(BurstRing, GqaRatio4) {
  for (BackwardScheme scheme : {BackwardScheme::kQuery, BackwardScheme::kKeyValue}) {
    BurstCase bc{Layout::kZigzag, MaskKind::kCausal, 4, 101, scheme, DType::kF32};
    comm::run_local_ranks(3, [&](comm::Communicator& c) { testing::check_burst_case(c, bc); });
  }
}

TEST(BurstRing, BitwiseReproducibleAndOneRankIsTheKernel) {
  for (int ranks : {1, 3}) comm::run_local_ranks(ranks, testing::check_burst_bitwise);
}

TEST(BurstRing, DisagreeingRanksFailAlike) {
  try {
    comm::run_local_ranks(3, testing::check_burst_disagreement);
  } catch (const Error& e) {
    ADD_FAILURE() << e.what();
  }
}

TEST(BurstRing, SchemeChoiceFollowsBytes) {
  const std::vector<std::int64_t> shards(4, 1024);
  // MHA: the query bundle (Q, dO, dQ: ~3 d-wide rows per head) beats K, V, dK, dV (4 rows).
  EXPECT_EQ(algo::choose_scheme(shards, 1, 8, 8, 128, 2), BackwardScheme::kQuery);
  // GQA 8:2: the K/V side is 4x smaller.
  EXPECT_EQ(algo::choose_scheme(shards, 1, 8, 2, 128, 2), BackwardScheme::kKeyValue);
  // Burst / KV bytes for MHA, fp32 accumulators on the wire.
  const double ratio = static_cast<double>(algo::backward_bytes(BackwardScheme::kQuery, shards, 1, 8, 8, 128, 2)) /
                       static_cast<double>(algo::backward_bytes(BackwardScheme::kKeyValue, shards, 1, 8, 8, 128, 2));
  EXPECT_LT(ratio, 0.76);
}

}  // namespace
}  // namespace burst
