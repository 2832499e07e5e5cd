// Stand-in for builds configured with BURST_WITH_MPI=OFF: says so loudly.
#include <cstdlib>

#include "burst/world.h"

namespace burst::comm {

bool mpi_available() { return false; }

std::unique_ptr<Communicator> mpi_world_communicator() {
  fail("communicator mpi: this build has no MPI backend (configure with -DBURST_WITH_MPI=ON)");
}

std::unique_ptr<Communicator> mpi_communicator_from(const void*) {
  fail("comm: an MPI communicator was given, but this build has no MPI backend "
       "(configure with -DBURST_WITH_MPI=ON)");
}

void mpi_abort(int code) { std::_Exit(code); }

}  // namespace burst::comm
