#include "comm/world.h"

#include <unistd.h>

#include <cstdlib>
#include <string>

#include "comm/local_world.h"

namespace burst::comm {

bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"}) {
    if (const char* v = std::getenv(var); v != nullptr && *v != '\0') return true;
  }
  return false;
}

int launcher_rank() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"}) {
    if (const char* v = std::getenv(var); v != nullptr && *v != '\0') return std::atoi(v);
  }
  return 0;
}

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
