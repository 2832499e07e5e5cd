// BurstAttention on MPI ranks (ctest label `mpi`, 2 and 4 ranks): the matrix of the
// in-process test for every layout, mask, scheme and dtype, GQA 1 and 2.
#include <gtest/gtest.h>

#include "burst_suite.h"
#include "decode_suite.h"
#include "block_suite.h"
#include "layer_suite.h"
#include "burst/world.h"
#include "../comm/mpi_gtest_main.h"

namespace burst {
namespace {

using algo::BackwardScheme;
using algo::Layout;
using testing::BurstCase;
using testing::MaskKind;

TEST(BurstMpi, MatchesReferenceAndFormula) {
  for (Layout layout : {Layout::kContiguous, Layout::kZigzag, Layout::kStriped})
    for (MaskKind mask : {MaskKind::kNone, MaskKind::kCausal, MaskKind::kWindow, MaskKind::kCausalWindow})
      for (std::int64_t group : {1, 2})
        for (BackwardScheme scheme : {BackwardScheme::kQuery, BackwardScheme::kKeyValue})
          for (DType dtype : {DType::kF32, DType::kBF16})
            testing::check_burst_case(testing::mpi_world(), BurstCase{layout, mask, group, 101, scheme, dtype});
}

// Run with BURST_RANKS_PER_NODE set (ctest burst_mpi_double_ring): nodes of 2 MPI ranks.
TEST(BurstMpi, DoubleRing) {
  if (testing::mpi_world().node_count() < 2) GTEST_SKIP() << "one node: set BURST_RANKS_PER_NODE";
  for (Layout layout : {Layout::kContiguous, Layout::kZigzag})
    for (BackwardScheme scheme : {BackwardScheme::kQuery, BackwardScheme::kKeyValue})
      testing::check_burst_case(testing::mpi_world(),
                                BurstCase{layout, MaskKind::kCausal, 2, 96, scheme, DType::kF32, true});
}

TEST(BurstMpi, OtherStrategies) {
  const bool ulysses_fits = 2 % testing::mpi_world().world_size() == 0;  // 2 kv heads
  for (algo::Strategy strategy :
       {algo::Strategy::kRing, algo::Strategy::kAllGather, algo::Strategy::kUlysses, algo::Strategy::kRingRsa})
    for (Layout layout : {Layout::kContiguous, Layout::kZigzag, Layout::kStriped})
      for (MaskKind mask : {MaskKind::kNone, MaskKind::kCausal, MaskKind::kWindow}) {
        if (strategy == algo::Strategy::kUlysses && !ulysses_fits) continue;
        BurstCase bc{layout, mask, 2, 101, BackwardScheme::kQuery, DType::kF32};
        bc.strategy = strategy;
        testing::check_burst_case(testing::mpi_world(), bc);
      }
}

// Packed documents across processes: burst on every layout and both schemes (skips and bytes
// against the formula), and the other strategies on the document layouts.
TEST(BurstMpi, PackedDocuments) {
  const int p = testing::mpi_world().world_size();
  for (Layout layout : algo::layouts())
    for (testing::DocKind docs : {testing::DocKind::kMixed, testing::DocKind::kTiny})
      for (BackwardScheme scheme : {BackwardScheme::kQuery, BackwardScheme::kKeyValue}) {
        BurstCase bc{layout, MaskKind::kCausal, 2, 101, scheme, DType::kF32};
        bc.docs = docs;
        testing::check_burst_case(testing::mpi_world(), bc);
      }
  for (algo::Strategy strategy : {algo::Strategy::kRing, algo::Strategy::kAllGather, algo::Strategy::kUlysses,
                                  algo::Strategy::kUsp})
    for (Layout layout : {Layout::kDocZigzag, Layout::kBalanced}) {
      if (strategy == algo::Strategy::kUlysses && 2 % p != 0) continue;  // 2 kv heads
      BurstCase bc{layout, MaskKind::kCausalWindow, 2, 101, BackwardScheme::kQuery, DType::kBF16};
      bc.strategy = strategy;
      bc.ulysses_degree = strategy == algo::Strategy::kUsp ? 2 : 1;
      bc.docs = testing::DocKind::kMixed;
      testing::check_burst_case(testing::mpi_world(), bc);
    }
}

// Long-context inference: prefill, decode steps and chunks on MPI ranks, every strategy.
TEST(BurstMpi, Decode) {
  for (algo::DecodeStrategy s :
       {algo::DecodeStrategy::kBurst, algo::DecodeStrategy::kTensorParallel, algo::DecodeStrategy::kRing})
    for (std::int64_t group : {1, 2}) {
      testing::DecodeCase dc;
      dc.strategy = s;
      dc.group = group;
      dc.window = group == 2 ? 20 : -1;
      testing::check_decode_case(testing::mpi_world(), dc);
    }
  testing::DecodeCase chunks;
  chunks.chunk = 5;
  chunks.steps = 4;
  chunks.dtype = DType::kBF16;
  testing::check_decode_case(testing::mpi_world(), chunks);
}

TEST(BurstMpi, Usp) {
  const int ranks = testing::mpi_world().world_size();
  for (int degree : {1, 2}) {
    if (ranks % degree != 0) continue;
    BurstCase bc{Layout::kZigzag, MaskKind::kCausal, 2, 101, BackwardScheme::kQuery, DType::kF32};
    bc.strategy = algo::Strategy::kUsp;
    bc.ulysses_degree = degree;
    testing::check_burst_case(testing::mpi_world(), bc);
  }
}

// The attention layer: every strategy, tensor parallelism included, against the reference.
TEST(BurstMpi, Layer) {
  const int ranks = testing::mpi_world().world_size();
  for (algo::Strategy strategy : {algo::Strategy::kBurst, algo::Strategy::kRing, algo::Strategy::kAllGather,
                                  algo::Strategy::kUlysses, algo::Strategy::kRingRsa, algo::Strategy::kUsp,
                                  algo::Strategy::kTpV1, algo::Strategy::kTpV3})
    for (auto [heads, kv_heads] : {std::pair<std::int64_t, std::int64_t>{4, 4}, {4, 2}}) {
      testing::LayerCase lc;
      lc.ulysses_degree = strategy == algo::Strategy::kUsp ? 2 : 1;
      algo::ProblemShape shape;  // what the registry says the layer can split
      shape.n_heads_q = heads;
      shape.n_heads_kv = kv_heads;
      algo::StrategyOptions options;
      options.ulysses_degree = lc.ulysses_degree;
      if (!algo::strategy_info(strategy).cannot_run(shape, ranks, options, true).empty()) continue;
      lc.strategy = strategy;
      lc.layout = Layout::kZigzag;
      lc.heads = heads;
      lc.kv_heads = kv_heads;
      testing::check_layer_case(testing::mpi_world(), lc);
    }
}

// The layer on packed documents: RoPE restarts at every document (layer_suite.h).
TEST(BurstMpi, LayerDocuments) { testing::check_layer_documents(testing::mpi_world()); }

// The transformer block (two layers): every strategy against the reference, with its bytes.
TEST(BurstMpi, Block) {
  const int ranks = testing::mpi_world().world_size();
  for (algo::Strategy strategy : {algo::Strategy::kBurst, algo::Strategy::kRing, algo::Strategy::kAllGather,
                                  algo::Strategy::kUlysses, algo::Strategy::kRingRsa, algo::Strategy::kUsp,
                                  algo::Strategy::kTpV1, algo::Strategy::kTpV3}) {
    testing::BlockCase bc;
    bc.strategy = strategy;
    bc.ulysses_degree = strategy == algo::Strategy::kUsp ? 2 : 1;
    algo::StrategyOptions options;
    options.ulysses_degree = bc.ulysses_degree;
    const algo::BlockShape shape{algo::LayerShape{24, bc.heads, bc.kv_heads, 8}, bc.mlp_dim, 1e-5};
    if (!algo::block_cannot_run(strategy, shape, ranks, options).empty()) continue;
    testing::check_block_case(testing::mpi_world(), bc);
  }
}

TEST(BurstMpi, BitwiseReproducible) { testing::check_burst_bitwise(testing::mpi_world()); }
TEST(BurstMpi, DisagreeingRanksFailAlike) { testing::check_burst_disagreement(testing::mpi_world()); }

}  // namespace
}  // namespace burst

int main(int argc, char** argv) { return burst::testing::run_mpi_tests(argc, argv, std::chrono::seconds(60)); }
