// The communicator suite on the MPI backend: run under mpirun (ctest label `mpi`). Every rank
// runs the same tests; only rank 0 prints gtest's progress.
#include <gtest/gtest.h>

#include "burst/world.h"
#include "mpi_gtest_main.h"
#include "suite.h"

namespace burst {
namespace {

TEST(MpiComm, RingExchange) {
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{1001}, std::size_t{16} << 20})
    testing::check_ring_exchange(testing::mpi_world(), n);
}
TEST(MpiComm, OddByteMessages) { testing::check_odd_byte_messages(testing::mpi_world()); }
TEST(MpiComm, AllToAll) { testing::check_all_to_all(testing::mpi_world()); }
TEST(MpiComm, AllToAllv) { testing::check_all_to_allv(testing::mpi_world()); }
TEST(MpiComm, AllGather) { testing::check_all_gather(testing::mpi_world()); }
TEST(MpiComm, Reductions) { testing::check_reductions(testing::mpi_world()); }
TEST(MpiComm, Broadcast) { testing::check_broadcast(testing::mpi_world()); }
TEST(MpiComm, Barrier) { testing::check_barrier(testing::mpi_world()); }
TEST(MpiComm, Split) { testing::check_split(testing::mpi_world()); }
TEST(MpiComm, Topology) { testing::check_topology(testing::mpi_world()); }
TEST(MpiComm, Deadline) { testing::check_deadline(testing::mpi_world()); }
TEST(MpiComm, SizeMismatch) { testing::check_size_mismatch(testing::mpi_world()); }
TEST(MpiComm, IsTheMpiBackend) { EXPECT_EQ(testing::mpi_world().backend(), "mpi"); }

// Sizes MPI cannot carry in one message fail by name, before MPI sees the buffer.
TEST(MpiComm, OversizeMessageIsUnsupported) {
  char byte = 0;
  const std::size_t too_big = std::size_t{1} << 31;
  try {
    comm::Request r = testing::mpi_world().isend(&byte, too_big, 0, 1);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("communicator mpi does not support messages over 2147483647 bytes"),
              std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace burst

int main(int argc, char** argv) { return burst::testing::run_mpi_tests(argc, argv, std::chrono::seconds(30)); }
