// run_world, part of the MPI component (burst::mpi): under an MPI launcher it runs on this
// process's MPI rank, else on thread ranks. Built with the MPI backend (mpi_world.cpp) or its
// stand-in (mpi_none.cpp), so the in-process library itself never needs MPI.
#include <unistd.h>

#include <string>

#include "burst/local_world.h"
#include "burst/world.h"

namespace burst::comm {

void run_world(int local_ranks, const std::function<void(Communicator&)>& fn) {
  if (!launched_by_mpi()) {
    run_local_ranks(local_ranks, fn);
    return;
  }
  BURST_CHECK(mpi_available(), "started by an MPI launcher, but this build has no MPI backend "
              "(configure with -DBURST_WITH_MPI=ON after scripts/install-deps.sh)");
  std::unique_ptr<Communicator> world = mpi_world_communicator();
  BURST_CHECK(local_ranks == 0 || local_ranks == world->world_size(), "ranks: mpirun started ",
              world->world_size(), " ranks but --ranks asks for ", local_ranks);
  try {
    fn(*world);
  } catch (const std::exception& e) {
    // One write per line: the ranks share stderr, and separate writes would interleave.
    const std::string line = "burst: rank " + std::to_string(world->rank()) + ": error: " + e.what() + "\n";
    (void)!::write(STDERR_FILENO, line.data(), line.size());
    mpi_abort(exit_status_of(e));
  }
}

}  // namespace burst::comm
