// BurstAttention on in-process ranks: every (ranks, layout) pair runs the default matrix of
// masks, GQA ratios, divisible and indivisible lengths, both backward schemes and dtypes.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <sstream>
#include <random>
#include <tuple>

#include "burst_suite.h"
#include "burst/local_world.h"
#include "burst/strategy.h"

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

// Nodes of 2 ranks (Communicator::set_ranks_per_node): 2 and 3 nodes, every layout and
// mask, forward and both backward schemes over the double ring.
TEST(BurstRing, DoubleRing) {
  for (int ranks : {4, 6})
    for (Layout layout : {Layout::kContiguous, Layout::kZigzag, Layout::kStriped})
      for (MaskKind mask : {MaskKind::kNone, MaskKind::kCausal, MaskKind::kWindow})
        for (std::int64_t seqlen : {96, 101})
          for (BackwardScheme scheme : {BackwardScheme::kQuery, BackwardScheme::kKeyValue}) {
            BurstCase bc{layout, mask, 2, seqlen, scheme, DType::kF32, true};
            comm::run_local_ranks(ranks, [&](comm::Communicator& c) {
              c.set_ranks_per_node(2);
              ASSERT_EQ(c.node_count(), ranks / 2);
              testing::check_burst_case(c, bc);
            });
          }
  // A bf16 gradient wire over the double ring.
  comm::run_local_ranks(6, [](comm::Communicator& c) {
    c.set_ranks_per_node(2);
    testing::check_burst_case(c, BurstCase{Layout::kZigzag, MaskKind::kCausal, 1, 101, BackwardScheme::kQuery,
                                           DType::kF32, true, DType::kBF16});
  });
  // Nodes of unequal size cannot form the double ring: every rank says so.
  try {
    comm::run_local_ranks(5, [](comm::Communicator& c) {
      c.set_ranks_per_node(2);
      testing::check_burst_case(c, BurstCase{Layout::kContiguous, MaskKind::kNone, 1, 96, BackwardScheme::kQuery,
                                             DType::kF32, true});
    });
    ADD_FAILURE() << "no error for nodes of 2, 2 and 1 ranks";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("every node needs the same number of ranks, node 0 has 2 and node 2 has 1"),
              std::string::npos) << e.what();
  }
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

// Packed documents: burst over every layout, mask, document mix and backward scheme, with the
// ring steps skipped and the bytes sent checked against the shards' positions (check_ring_skips).
class PackedDocuments : public ::testing::TestWithParam<int> {};

TEST_P(PackedDocuments, BurstEveryLayoutMaskAndScheme) {
  const int ranks = GetParam();
  for (Layout layout : algo::layouts())
    for (testing::DocKind docs : {testing::DocKind::kMixed, testing::DocKind::kTiny, testing::DocKind::kSpanning})
      for (MaskKind mask : {MaskKind::kNone, MaskKind::kCausal, MaskKind::kCausalWindow})
        for (BackwardScheme scheme : {BackwardScheme::kQuery, BackwardScheme::kKeyValue}) {
          BurstCase bc{layout, mask, 2, 101, scheme, DType::kF32};
          bc.docs = docs;
          comm::run_local_ranks(ranks, [&](comm::Communicator& c) { testing::check_burst_case(c, bc); });
        }
}

TEST_P(PackedDocuments, OtherStrategiesBf16AndGqa) {
  const int ranks = GetParam();
  for (algo::Strategy strategy : {algo::Strategy::kRing, algo::Strategy::kAllGather, algo::Strategy::kUlysses,
                                  algo::Strategy::kUsp, algo::Strategy::kLocal, algo::Strategy::kBurst})
    for (Layout layout : {Layout::kZigzag, Layout::kDocZigzag, Layout::kBalanced, Layout::kStriped})
      for (DType dtype : {DType::kF32, DType::kBF16}) {
        if (strategy == algo::Strategy::kLocal && ranks != 1) continue;
        if (strategy == algo::Strategy::kUlysses && ranks > 2) continue;  // 2 kv heads
        if (strategy == algo::Strategy::kUsp && ranks % 2 != 0) continue;
        BurstCase bc{layout, MaskKind::kCausal, strategy == algo::Strategy::kBurst ? 4 : 2, 96,
                     BackwardScheme::kQuery, dtype};
        bc.strategy = strategy;
        bc.ulysses_degree = strategy == algo::Strategy::kUsp ? 2 : 1;
        bc.docs = testing::DocKind::kMixed;
        comm::run_local_ranks(ranks, [&](comm::Communicator& c) { testing::check_burst_case(c, bc); });
      }
}

INSTANTIATE_TEST_SUITE_P(Ranks, PackedDocuments, ::testing::Values(1, 2, 3, 4),
                         [](const ::testing::TestParamInfo<int>& p) {
                           std::string name = "P";
                           name += std::to_string(p.param);
                           return name;
                         });

// The double ring runs documents too (it skips compute, not sends).
TEST(PackedDocuments, DoubleRing) {
  for (BackwardScheme scheme : {BackwardScheme::kQuery, BackwardScheme::kKeyValue}) {
    BurstCase bc{Layout::kDocZigzag, MaskKind::kCausal, 2, 96, scheme, DType::kF32, true};
    bc.docs = testing::DocKind::kMixed;
    comm::run_local_ranks(4, [&](comm::Communicator& c) {
      c.set_ranks_per_node(2);
      testing::check_burst_case(c, bc);
    });
  }
}

// ring-rsa refuses documents on every rank, naming the strategy.
TEST(PackedDocuments, RingRsaRefuses) {
  try {
    comm::run_local_ranks(2, [](comm::Communicator& c) {
      BurstCase bc{Layout::kZigzag, MaskKind::kCausal, 2, 96, BackwardScheme::kQuery, DType::kF32};
      bc.strategy = algo::Strategy::kRingRsa;
      bc.docs = testing::DocKind::kMixed;
      testing::check_burst_case(c, bc);
    });
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ring-rsa: packed documents are not supported"), std::string::npos) << e.what();
  }
}

// The balanced layouts: every token on exactly one rank, and the work per rank (visible pairs)
// within a few rows' work of the mean, where contiguous is far from it.
TEST(Layouts, DocumentLayoutsBalanceWork) {
  for (int world : {2, 3, 4, 8})
    for (testing::DocKind docs : {testing::DocKind::kMixed, testing::DocKind::kTiny, testing::DocKind::kSpanning}) {
      const std::int64_t n = 400;
      kernels::MaskSpec mask{true, -1, -1, testing::documents_of(docs, n)};
      for (Layout layout : {Layout::kDocZigzag, Layout::kBalanced}) {
        const auto plan = algo::shard_plan(n, world, layout, mask);
        std::vector<int> owner(static_cast<std::size_t>(n), 0);
        double most = 0, least = 1e300, total = 0;
        for (const auto& shard : plan) {
          ASSERT_FALSE(shard.empty());
          ASSERT_TRUE(std::is_sorted(shard.begin(), shard.end()));
          for (std::int64_t t : shard) ++owner[static_cast<std::size_t>(t)];
          const double w = algo::visible_pairs(shard, n, mask);
          most = std::max(most, w);
          least = std::min(least, w);
          total += w;
        }
        ASSERT_EQ(std::count(owner.begin(), owner.end(), 1), n);
        EXPECT_EQ(total, algo::visible_pairs(algo::shard_positions(n, 1, 0, Layout::kContiguous), n, mask));
        // Balanced cuts land within one query row's work (at most the longest document);
        // doc-zigzag within the rounding of its chunks plus the largest short document.
        const auto bounds = testing::documents_of(docs, n);
        std::int64_t longest = 0;
        for (std::size_t d = 1; d < bounds.size(); ++d) longest = std::max(longest, bounds[d] - bounds[d - 1]);
        const auto row = static_cast<double>(longest);
        std::ostringstream trace;
        trace << algo::layout_name(layout) << " P " << world << " docs " << static_cast<int>(docs);
        SCOPED_TRACE(trace.str());
        if (layout == Layout::kBalanced) {
          EXPECT_LE(most - least, 2 * row);
        }
        EXPECT_LE(most / (total / world), layout == Layout::kBalanced ? 1.15 : 1.35);
      }
      EXPECT_EQ(algo::shard_lengths(n, world, Layout::kBalanced, mask).size(), static_cast<std::size_t>(world));
    }
  // Without documents doc-zigzag is zigzag.
  for (int world : {2, 3, 4})
    for (std::int64_t n : {world, 2 * world - 1, 2 * world + 1, 101})
      EXPECT_EQ(algo::shard_plan(n, world, Layout::kDocZigzag), algo::shard_plan(n, world, Layout::kZigzag));
}

TEST(Layouts, EveryRankHoldsATokenAndEveryTokenOneRank) {
  for (int world : {1, 2, 3, 4, 5, 8, 16})
    for (Layout layout : algo::layouts())
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
  // The balanced layout balances the queries' work, which the kv scheme computes where the
  // queries live: auto takes it there even for MHA; other layouts go by bytes.
  EXPECT_EQ(algo::choose_scheme(Layout::kBalanced, shards, 1, 8, 8, 128, 2), BackwardScheme::kKeyValue);
  EXPECT_EQ(algo::choose_scheme(Layout::kDocZigzag, shards, 1, 8, 8, 128, 2), BackwardScheme::kQuery);
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

namespace burst {
namespace {

void fill(const TensorView& t, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const auto n = static_cast<std::size_t>(t.numel());
  for (std::size_t i = 0; i < n; ++i) {
    if (t.dtype == DType::kF32) {
      static_cast<float*>(t.data)[i] = dist(rng);
    } else {
      static_cast<bf16_bits*>(t.data)[i] = float_to_bf16(dist(rng));
    }
  }
}

// Every strategy of the registry that runs on several ranks, with outputs in the inputs'
// dtype (bf16 O travels back in bf16 through Ulysses' and usp's all-to-alls): each rank's
// counted bytes against the registry's formula for that rank, unequal shards included.
TEST(Registry, BytesMatchTheCommunicatorsCounters) {
  int cases = 0;
  for (const algo::StrategyInfo& info : algo::strategies())
    for (int ranks : {1, 2, 3, 4})
      for (std::int64_t seqlen : {96, 101})
        for (auto [heads, kv_heads] : {std::pair<std::int64_t, std::int64_t>{4, 4}, {4, 2}})
          for (bool causal : {false, true})
            for (DType dtype : {DType::kF32, DType::kBF16}) {
              algo::StrategyOptions o;
              o.seqlen = seqlen;
              o.layout = causal ? Layout::kZigzag : Layout::kContiguous;
              o.mask.causal = causal;
              o.ulysses_degree = ranks % 2 == 0 ? 2 : 1;
              algo::ProblemShape shape;
              shape.n_heads_q = heads;
              shape.n_heads_kv = kv_heads;
              shape.head_dim = 16;
              shape.element_bytes = shape.output_bytes = dtype_size(dtype);
              if (!info.cannot_run(shape, ranks, o, false).empty()) continue;
              SCOPED_TRACE(std::string(info.name) + " P=" + std::to_string(ranks) + " N=" + std::to_string(seqlen) +
                           " heads " + std::to_string(heads) + "/" + std::to_string(kv_heads) +
                           (causal ? " causal " : " ") + std::string(dtype_name(dtype)));
              const std::vector<std::int64_t> lengths = algo::shard_lengths(seqlen, ranks, o.layout);
              comm::run_local_ranks(ranks, [&](comm::Communicator& c) {
                const std::int64_t n = lengths[static_cast<std::size_t>(c.rank())];
                Tensor q(dtype, 1, n, heads, 16), k(dtype, 1, n, kv_heads, 16), v(dtype, 1, n, kv_heads, 16),
                    dout(dtype, 1, n, heads, 16), out(dtype, 1, n, heads, 16);
                const auto seed = static_cast<std::uint64_t>(c.rank()) * 4;
                fill(q.view(), seed);
                fill(k.view(), seed + 1);
                fill(v.view(), seed + 2);
                fill(dout.view(), seed + 3);
                RowStats lse(1, heads, n);
                Tensor dq(DType::kF32, 1, n, heads, 16), dk(DType::kF32, 1, n, kv_heads, 16),
                    dv(DType::kF32, 1, n, kv_heads, 16);
                const algo::StrategyStats fs = info.forward(c, q.view(), k.view(), v.view(), out.view(), lse.view(), o);
                const algo::StrategyStats bs = info.backward(c, q.view(), k.view(), v.view(), out.view(), lse.view(),
                                                             dout.view(), dq.view(), dk.view(), dv.view(), o);
                const algo::StrategyBytes want = info.bytes(shape, lengths, c.rank(), o);
                EXPECT_EQ(fs.bytes_saved, 0u) << "rank " << c.rank();
                EXPECT_EQ(fs.bytes_sent, want.forward) << "rank " << c.rank() << " forward";
                EXPECT_EQ(bs.bytes_sent, want.backward) << "rank " << c.rank() << " backward";
                if (info.ring_options) {
                  EXPECT_EQ(bs.scheme, want.scheme);
                }
              });
              ++cases;
            }
  EXPECT_GT(cases, 300);
}

// The double ring's per-rank bytes are the ring's for equal shards (nodes of 2 and 3).
TEST(Registry, DoubleRingBytesMatchTheCommunicatorsCounters) {
  for (auto [ranks, per_node] : {std::pair<int, int>{4, 2}, {6, 3}, {6, 2}})
    for (bool causal : {false, true}) {
      algo::StrategyOptions o;
      o.seqlen = 96;
      o.layout = causal ? Layout::kZigzag : Layout::kContiguous;
      o.mask.causal = causal;
      o.double_ring = true;
      algo::ProblemShape shape;
      shape.n_heads_q = shape.n_heads_kv = 4;
      shape.head_dim = 16;
      const std::vector<std::int64_t> lengths = algo::shard_lengths(96, ranks, o.layout);
      comm::run_local_ranks(ranks, [&](comm::Communicator& c) {
        c.set_ranks_per_node(per_node);
        const std::int64_t n = lengths[static_cast<std::size_t>(c.rank())];
        Tensor q(DType::kF32, 1, n, 4, 16), out(DType::kF32, 1, n, 4, 16), dq(DType::kF32, 1, n, 4, 16),
            dk(DType::kF32, 1, n, 4, 16), dv(DType::kF32, 1, n, 4, 16);
        fill(q.view(), static_cast<std::uint64_t>(c.rank()));
        RowStats lse(1, 4, n);
        const algo::StrategyInfo& burst = algo::strategy_info(algo::Strategy::kBurst);
        const algo::StrategyStats fs = burst.forward(c, q.view(), q.view(), q.view(), out.view(), lse.view(), o);
        const algo::StrategyStats bs = burst.backward(c, q.view(), q.view(), q.view(), out.view(), lse.view(), q.view(),
                                                      dq.view(), dk.view(), dv.view(), o);
        const algo::StrategyBytes want = burst.bytes(shape, lengths, c.rank(), o);
        EXPECT_EQ(fs.bytes_sent, want.forward) << "P=" << ranks << " L=" << per_node << " rank " << c.rank();
        EXPECT_EQ(bs.bytes_sent, want.backward) << "P=" << ranks << " L=" << per_node << " rank " << c.rank();
      });
    }
}

// The registry's mean backward (algo::backward_bytes) is what the scheme choice compares.
TEST(Registry, SchemeChoiceIsTheCheaperMeanBackward) {
  for (int ranks : {2, 4, 8})
    for (std::int64_t kv : {8, 2}) {
      const auto lengths = algo::shard_lengths(4096, ranks, Layout::kZigzag);
      const auto scheme = algo::choose_scheme(lengths, 2, 8, kv, 64, 2);
      EXPECT_EQ(scheme, kv == 8 ? BackwardScheme::kQuery : BackwardScheme::kKeyValue);
      algo::ProblemShape shape;
      shape.batch = 2;
      shape.n_heads_q = 8;
      shape.n_heads_kv = kv;
      shape.head_dim = 64;
      shape.element_bytes = shape.output_bytes = 2;
      std::uint64_t sum = 0;
      for (int r = 0; r < ranks; ++r) {
        const algo::StrategyBytes b = algo::strategy_info(algo::Strategy::kBurst).bytes(shape, lengths, r, {});
        EXPECT_EQ(b.scheme, scheme);
        sum += b.backward;
      }
      EXPECT_EQ(sum / static_cast<std::uint64_t>(ranks), algo::backward_bytes(scheme, lengths, 2, 8, kv, 64, 2));
    }
}

// The registry: names round-trip, every entry sits at its enum, unknown names list the known.
TEST(Registry, NamesAndOrder) {
  for (const algo::StrategyInfo& info : algo::strategies()) {
    EXPECT_EQ(&algo::strategy_info(info.strategy), &info);
    EXPECT_EQ(algo::parse_strategy(std::string(info.name), "strategy"), info.strategy);
  }
  try {
    algo::find_strategy("fast", "--strategy");
    ADD_FAILURE() << "an unknown name was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--strategy: expected one of local, burst, ring"), std::string::npos)
        << e.what();
  }
}

// shard_lengths (what formulas and estimates size shards by) is the size of every shard_plan
// entry, for every layout, around rounding edges.
TEST(Layouts, ShardLengthsAreThePlansSizes) {
  for (Layout layout : {Layout::kContiguous, Layout::kZigzag, Layout::kStriped})
    for (int world = 1; world <= 8; ++world)
      for (std::int64_t n : {std::int64_t{world}, std::int64_t{world} + 1, std::int64_t{97}, std::int64_t{1025},
                             std::int64_t{4501}}) {
        const auto plan = algo::shard_plan(n, world, layout);
        const auto lengths = algo::shard_lengths(n, world, layout);
        ASSERT_EQ(lengths.size(), plan.size());
        for (std::size_t r = 0; r < plan.size(); ++r)
          EXPECT_EQ(lengths[r], static_cast<std::int64_t>(plan[r].size()))
              << algo::layout_name(layout) << " n " << n << " world " << world << " rank " << r;
      }
}

}  // namespace
}  // namespace burst
