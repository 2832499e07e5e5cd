// The main() of a GoogleTest program run under mpirun: every rank runs the tests on one MPI
// world communicator, only rank 0 prints, and the exit code is non-zero when any rank failed.
#pragma once

#include <chrono>

#include "burst/communicator.h"

namespace burst::testing {

// The world communicator, valid while run_mpi_tests runs.
comm::Communicator& mpi_world();

int run_mpi_tests(int argc, char** argv, std::chrono::seconds timeout);

}  // namespace burst::testing
