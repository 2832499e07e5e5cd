// Where ranks come from. Under an MPI launcher (mpirun/mpiexec of Open MPI or MPICH) each
// process is one rank of MPI_COMM_WORLD; otherwise ranks are threads of this process.
#pragma once

#include <functional>

#include "burst/communicator.h"

namespace burst::comm {

// True when this process was started by an MPI launcher.
bool launched_by_mpi();
// This process's rank in the launcher's world (Open MPI, MPICH/Hydra, PMIx), known before MPI
// is initialised; 0 when not started by an MPI launcher.
int launcher_rank();
// True when this build has the MPI backend (CMake option BURST_WITH_MPI).
bool mpi_available();

// Runs fn on every rank of the default world and returns when this process's ranks are done:
// under an MPI launcher on this process's MPI rank (`local_ranks` must be 0 or the MPI world
// size), else on `local_ranks` thread ranks (run_local_ranks). Under MPI an exception that
// escapes fn is printed as "burst: rank R: error: ..." and the job is aborted (MPI_Abort with
// the error's exit status, burst/error.h), so no peer waits for a rank that is gone; on thread
// ranks the failing rank aborts its peers at once (run_local_ranks).
void run_world(int local_ranks, const std::function<void(Communicator&)>& fn);

// The MPI backend directly (throws when the build has none): a communicator over a duplicate
// of MPI_COMM_WORLD, initialising MPI with MPI_THREAD_FUNNELED on first use; MPI is
// finalised at exit.
std::unique_ptr<Communicator> mpi_world_communicator();
// A communicator over a duplicate of the caller's MPI communicator, for a host that already
// runs MPI (mpi4py, an application): `mpi_comm` points at an MPI_Comm (a void pointer, so
// this header needs no mpi.h). MPI must be initialised, at MPI_THREAD_FUNNELED or above, and
// stay so while the result lives. Collective over that communicator; throws when the build
// has no MPI backend.
std::unique_ptr<Communicator> mpi_communicator_from(const void* mpi_comm);
// Aborts every process of the MPI job with `code`.
[[noreturn]] void mpi_abort(int code);

}  // namespace burst::comm
