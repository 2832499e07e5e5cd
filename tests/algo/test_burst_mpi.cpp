// BurstAttention on MPI ranks (ctest label `mpi`, 2 and 4 ranks): the matrix of the
// in-process test for every layout, mask, scheme and dtype, GQA 1 and 2.
#include <gtest/gtest.h>

#include <memory>

#include "burst_suite.h"
#include "comm/world.h"

namespace burst {
namespace {

using algo::BackwardScheme;
using algo::Layout;
using testing::BurstCase;
using testing::MaskKind;

comm::Communicator* g_world = nullptr;

TEST(BurstMpi, MatchesReferenceAndFormula) {
  for (Layout layout : {Layout::kContiguous, Layout::kZigzag, Layout::kStriped})
    for (MaskKind mask : {MaskKind::kNone, MaskKind::kCausal, MaskKind::kWindow, MaskKind::kCausalWindow})
      for (std::int64_t group : {1, 2})
        for (BackwardScheme scheme : {BackwardScheme::kQuery, BackwardScheme::kKeyValue})
          for (DType dtype : {DType::kF32, DType::kBF16})
            testing::check_burst_case(*g_world, BurstCase{layout, mask, group, 101, scheme, dtype});
}

TEST(BurstMpi, BitwiseReproducible) { testing::check_burst_bitwise(*g_world); }
TEST(BurstMpi, DisagreeingRanksFailAlike) { testing::check_burst_disagreement(*g_world); }

}  // namespace
}  // namespace burst

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::unique_ptr<burst::comm::Communicator> world = burst::comm::mpi_world_communicator();
  world->set_timeout(std::chrono::seconds(60));
  burst::g_world = world.get();
  if (world->rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int failed = RUN_ALL_TESTS();
  double failures = failed != 0 ? 1.0 : 0.0;
  world->all_reduce_sum(&failures, 1);
  world.reset();
  return failures > 0 ? 1 : 0;
}
