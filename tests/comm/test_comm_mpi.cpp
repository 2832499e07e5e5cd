// The communicator suite on the MPI backend: run under mpirun (ctest label `mpi`). Every rank
// runs the same tests; only rank 0 prints gtest's progress.
#include <gtest/gtest.h>

#include <memory>

#include "comm/world.h"
#include "suite.h"

namespace burst {
namespace {

comm::Communicator* g_world = nullptr;

TEST(MpiComm, RingExchange) {
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{1001}, std::size_t{16} << 20})
    testing::check_ring_exchange(*g_world, n);
}
TEST(MpiComm, OddByteMessages) { testing::check_odd_byte_messages(*g_world); }
TEST(MpiComm, AllToAll) { testing::check_all_to_all(*g_world); }
TEST(MpiComm, AllToAllv) { testing::check_all_to_allv(*g_world); }
TEST(MpiComm, AllGather) { testing::check_all_gather(*g_world); }
TEST(MpiComm, Reductions) { testing::check_reductions(*g_world); }
TEST(MpiComm, Broadcast) { testing::check_broadcast(*g_world); }
TEST(MpiComm, Barrier) { testing::check_barrier(*g_world); }
TEST(MpiComm, Split) { testing::check_split(*g_world); }
TEST(MpiComm, Topology) { testing::check_topology(*g_world); }
TEST(MpiComm, Deadline) { testing::check_deadline(*g_world); }
TEST(MpiComm, SizeMismatch) { testing::check_size_mismatch(*g_world); }
TEST(MpiComm, IsTheMpiBackend) { EXPECT_EQ(g_world->backend(), "mpi"); }

// Sizes MPI cannot carry in one message fail by name, before MPI sees the buffer.
TEST(MpiComm, OversizeMessageIsUnsupported) {
  char byte = 0;
  const std::size_t too_big = std::size_t{1} << 31;
  try {
    comm::Request r = g_world->isend(&byte, too_big, 0, 1);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("communicator mpi does not support messages over 2147483647 bytes"),
              std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace burst

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::unique_ptr<burst::comm::Communicator> world = burst::comm::mpi_world_communicator();
  world->set_timeout(std::chrono::seconds(30));
  burst::g_world = world.get();
  if (world->rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int failed = RUN_ALL_TESTS();
  // Every rank's verdict counts: a check may fail on one rank only.
  double failures = failed != 0 ? 1.0 : 0.0;
  world->all_reduce_sum(&failures, 1);
  if (world->rank() == 0 && failures > 0) std::fprintf(stderr, "test_comm_mpi: %g rank(s) failed\n", failures);
  world.reset();
  return failures > 0 ? 1 : 0;
}
