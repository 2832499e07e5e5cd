// BurstAttention on in-process ranks: every (ranks, layout) pair runs the default matrix of
// masks, GQA ratios, divisible and indivisible lengths, both backward schemes and dtypes.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <sstream>
#include <tuple>

#include "burst_suite.h"
#include "burst/local_world.h"

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

// Nodes of 2 ranks (BURST_RANKS_PER_NODE): 2 and 3 nodes, every layout and mask, forward
// and both backward schemes over the double ring.
TEST(BurstRing, DoubleRing) {
  setenv("BURST_RANKS_PER_NODE", "2", 1);
  for (int ranks : {4, 6})
    for (Layout layout : {Layout::kContiguous, Layout::kZigzag, Layout::kStriped})
      for (MaskKind mask : {MaskKind::kNone, MaskKind::kCausal, MaskKind::kWindow})
        for (std::int64_t seqlen : {96, 101})
          for (BackwardScheme scheme : {BackwardScheme::kQuery, BackwardScheme::kKeyValue}) {
            BurstCase bc{layout, mask, 2, seqlen, scheme, DType::kF32, true};
            comm::run_local_ranks(ranks, [&](comm::Communicator& c) {
              ASSERT_EQ(c.node_count(), ranks / 2);
              testing::check_burst_case(c, bc);
            });
          }
  // A bf16 gradient wire over the double ring.
  comm::run_local_ranks(6, [](comm::Communicator& c) {
    testing::check_burst_case(c, BurstCase{Layout::kZigzag, MaskKind::kCausal, 1, 101, BackwardScheme::kQuery,
                                           DType::kF32, true, DType::kBF16});
  });
  // Nodes of unequal size cannot form the double ring: every rank says so.
  try {
    comm::run_local_ranks(5, [](comm::Communicator& c) {
      testing::check_burst_case(c, BurstCase{Layout::kContiguous, MaskKind::kNone, 1, 96, BackwardScheme::kQuery,
                                             DType::kF32, true});
    });
    ADD_FAILURE() << "no error for nodes of 2, 2 and 1 ranks";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("every node needs the same number of ranks, node 0 has 2 and node 2 has 1"),
              std::string::npos) << e.what();
  }
  unsetenv("BURST_RANKS_PER_NODE");
}

TEST(BurstRing, Bf16GradientWire) {
  for (int ranks : {2, 4})
    for (BackwardScheme scheme : {BackwardScheme::kQuery, BackwardScheme::kKeyValue}) {
      BurstCase bc{Layout::kZigzag, MaskKind::kCausal, 2, 101, scheme, DType::kF32, false, DType::kBF16};
      comm::run_local_ranks(ranks, [&](comm::Communicator& c) { testing::check_burst_case(c, bc); });
    }
}

// The other strategies on the same checks: ring (K/V-passing backward), all-gather and the
// materialised ring-rsa.
TEST(Strategies, RingAllGatherRsaMatchReferenceAndFormula) {
  for (algo::Strategy strategy : {algo::Strategy::kRing, algo::Strategy::kAllGather, algo::Strategy::kRingRsa})
    for (int ranks : {1, 2, 3, 4, 5})
      for (Layout layout : {Layout::kContiguous, Layout::kZigzag, Layout::kStriped})
        for (MaskKind mask : {MaskKind::kNone, MaskKind::kCausal, MaskKind::kWindow})
          for (std::int64_t seqlen : {96, 101})
            for (DType dtype : {DType::kF32, DType::kBF16}) {
              BurstCase bc{layout, mask, 2, seqlen, BackwardScheme::kQuery, dtype};
              bc.strategy = strategy;
              comm::run_local_ranks(ranks, [&](comm::Communicator& c) { testing::check_burst_case(c, bc); });
            }
}

// Ulysses needs the heads divisible by P: 2 kv heads (GQA 2:1, 4 query heads) at P = 1, 2.
TEST(Strategies, UlyssesMatchesReferenceAndFormula) {
  for (int ranks : {1, 2})
    for (Layout layout : {Layout::kContiguous, Layout::kZigzag, Layout::kStriped})
      for (MaskKind mask : {MaskKind::kNone, MaskKind::kCausal, MaskKind::kWindow})
        for (std::int64_t seqlen : {96, 101})
          for (DType dtype : {DType::kF32, DType::kBF16}) {
            BurstCase bc{layout, mask, 2, seqlen, BackwardScheme::kQuery, dtype};
            bc.strategy = algo::Strategy::kUlysses;
            comm::run_local_ranks(ranks, [&](comm::Communicator& c) { testing::check_burst_case(c, bc); });
          }
  // 2 kv heads over 4 ranks: refused by name on every rank, K/V heads are not replicated.
  try {
    comm::run_local_ranks(4, [](comm::Communicator& c) {
      BurstCase bc{Layout::kContiguous, MaskKind::kNone, 2, 96, BackwardScheme::kQuery, DType::kF32};
      bc.strategy = algo::Strategy::kUlysses;
      testing::check_burst_case(c, bc);
    });
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ulysses: n_heads_kv must be divisible by the 4 ranks, got 2"),
              std::string::npos) << e.what();
  }
}

// USP: (ranks, Ulysses degree) from pure ring (U = 1) and pure Ulysses (U = P) to hybrids.
TEST(Strategies, UspMatchesReference) {
  for (auto [ranks, degree] : {std::pair{2, 1}, {2, 2}, {4, 2}, {4, 1}, {6, 2}})
    for (Layout layout : {Layout::kContiguous, Layout::kZigzag, Layout::kStriped})
      for (MaskKind mask : {MaskKind::kNone, MaskKind::kCausal, MaskKind::kWindow})
        for (std::int64_t seqlen : {96, 101})
          for (BackwardScheme scheme : {BackwardScheme::kQuery, BackwardScheme::kKeyValue}) {
            BurstCase bc{layout, mask, 2, seqlen, scheme, DType::kF32};
            bc.strategy = algo::Strategy::kUsp;
            bc.ulysses_degree = degree;
            comm::run_local_ranks(ranks, [&](comm::Communicator& c) { testing::check_burst_case(c, bc); });
          }
  BurstCase bc{Layout::kZigzag, MaskKind::kCausal, 2, 101, BackwardScheme::kQuery, DType::kBF16};
  bc.strategy = algo::Strategy::kUsp;
  bc.ulysses_degree = 2;
  comm::run_local_ranks(4, [&](comm::Communicator& c) { testing::check_burst_case(c, bc); });
}

// Sequences barely longer than the ranks (N = P .. 2P + 1, where zigzag's 2P chunks cannot
// all be filled): every strategy, layout and mask gives the exact result, every rank holding
// at least one token.
TEST(Strategies, EveryLengthFromOneTokenPerRank) {
  struct Run {
    algo::Strategy strategy;
    BackwardScheme scheme;
    std::vector<int> ranks;
    int ulysses_degree = 1;
  };
  const Run runs[] = {
      {algo::Strategy::kBurst, BackwardScheme::kQuery, {2, 3, 4, 8}},
      {algo::Strategy::kBurst, BackwardScheme::kKeyValue, {2, 3, 4, 8}},
      {algo::Strategy::kRing, BackwardScheme::kQuery, {2, 3, 8}},
      {algo::Strategy::kAllGather, BackwardScheme::kQuery, {2, 3, 8}},
      {algo::Strategy::kRingRsa, BackwardScheme::kQuery, {2, 3, 8}},
      {algo::Strategy::kUlysses, BackwardScheme::kQuery, {2}},  // heads divisible by P
      {algo::Strategy::kUsp, BackwardScheme::kQuery, {4}, 2},
  };
  for (const Run& run : runs)
    for (int ranks : run.ranks)
      for (Layout layout : {Layout::kContiguous, Layout::kZigzag, Layout::kStriped})
        for (MaskKind mask : {MaskKind::kNone, MaskKind::kCausal})
          for (std::int64_t seqlen : {ranks, ranks + 1, 2 * ranks - 1, 2 * ranks + 1}) {
            BurstCase bc{layout, mask, 2, seqlen, run.scheme, DType::kF32};
            bc.strategy = run.strategy;
            bc.ulysses_degree = run.ulysses_degree;
            comm::run_local_ranks(ranks, [&](comm::Communicator& c) { testing::check_burst_case(c, bc); });
          }
}

TEST(Layouts, EveryRankHoldsATokenAndEveryTokenOneRank) {
  for (int world : {1, 2, 3, 4, 5, 8, 16})
    for (Layout layout : {Layout::kContiguous, Layout::kZigzag, Layout::kStriped})
      for (std::int64_t n = world; n <= 4 * world + 3; ++n) {
        std::vector<int> owner(static_cast<std::size_t>(n), -1);
        for (int r = 0; r < world; ++r) {
          const auto pos = algo::shard_positions(n, world, r, layout);
          ASSERT_FALSE(pos.empty()) << algo::layout_name(layout) << " n " << n << " P " << world << " rank " << r;
          ASSERT_TRUE(std::is_sorted(pos.begin(), pos.end()));
          for (std::int64_t t : pos) {
            ASSERT_EQ(owner[static_cast<std::size_t>(t)], -1) << "token " << t << " held twice";
            owner[static_cast<std::size_t>(t)] = r;
          }
        }
        ASSERT_EQ(std::count(owner.begin(), owner.end(), -1), 0) << algo::layout_name(layout) << " n " << n;
      }
}

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

namespace burst {
namespace {

// v shaped unlike k: refused by name on every rank before anything is packed or sent.
TEST(BurstRing, MismatchedValueShapeFailsOnEveryRank) {
  std::atomic<int> refused{0};
  comm::run_local_ranks(2, [&](comm::Communicator& c) {
    Tensor q(DType::kF32, 1, 8, 4, 16), k(DType::kF32, 1, 8, 2, 16), v(DType::kF32, 1, 8, 1, 16);
    Tensor out(DType::kF32, 1, 8, 4, 16);
    RowStats lse(1, 4, 8);
    algo::BurstOptions o;
    o.seqlen = 16;
    try {
      algo::burst_forward(c, q.view(), k.view(), v.view(), out.view(), lse.view(), o);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("v"), std::string::npos) << e.what();
      ++refused;
    }
  });
  EXPECT_EQ(refused.load(), 2);
}

}  // namespace
}  // namespace burst
