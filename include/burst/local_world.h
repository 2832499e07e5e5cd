// In-process backend: ranks are threads of one process. The embedded default when no MPI
// launcher is used, and the fastest way to test the algorithms.
#pragma once

#include <functional>
#include <memory>

#include "burst/communicator.h"

namespace burst::comm {

// Runs fn(communicator) on `world_size` threads, one per rank, and returns when all are
// done. A rank that throws aborts the others at their next wait, post or progress call (no
// deadline is waited out); then its error is rethrown prefixed with its rank ("rank 2: ...")
// and of the same kind (Error, CommError, TimeoutError, OutputError). Throws Error when a
// rank's thread cannot be started.
void run_local_ranks(int world_size, const std::function<void(Communicator&)>& fn);

// A world of one rank on the calling thread, for a caller that has no communicator of its
// own (one process without MPI): every collective is a local copy.
std::unique_ptr<Communicator> single_rank_communicator();

}  // namespace burst::comm
