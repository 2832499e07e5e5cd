#include "mpi_gtest_main.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <memory>

#include "burst/world.h"

namespace burst::testing {
namespace {
comm::Communicator* g_world = nullptr;
}  // namespace

comm::Communicator& mpi_world() { return *g_world; }

int run_mpi_tests(int argc, char** argv, std::chrono::seconds timeout) {
  ::testing::InitGoogleTest(&argc, argv);
  std::unique_ptr<comm::Communicator> world = comm::mpi_world_communicator();
  world->set_timeout(timeout);
  g_world = world.get();
  if (world->rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int failed = RUN_ALL_TESTS();
  // Every rank's verdict counts: a check may fail on one rank only.
  double failures = failed != 0 ? 1.0 : 0.0;
  world->all_reduce_sum(&failures, 1);
  if (world->rank() == 0 && failures > 0) std::fprintf(stderr, "%g rank(s) failed\n", failures);
  g_world = nullptr;
  world.reset();
  return failures > 0 ? 1 : 0;
}

}  // namespace burst::testing
