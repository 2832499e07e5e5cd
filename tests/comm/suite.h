// The communicator test suite: each check runs on every rank of a communicator and is shared
// by both backends (test_comm.cpp runs it on thread ranks for world sizes 1..8,
// test_comm_mpi.cpp under mpirun). Data are built so every value across all ranks is
// distinct, which catches misrouted blocks exactly.
#pragma once

#include <cstddef>

#include "burst/communicator.h"

namespace burst::testing {

void check_ring_exchange(comm::Communicator& c, std::size_t count);  // count uint32 values
void check_odd_byte_messages(comm::Communicator& c);
void check_all_to_all(comm::Communicator& c);
void check_all_to_allv(comm::Communicator& c);
void check_all_gather(comm::Communicator& c);
void check_reductions(comm::Communicator& c);
void check_broadcast(comm::Communicator& c);
void check_barrier(comm::Communicator& c);
void check_split(comm::Communicator& c);
void check_topology(comm::Communicator& c);
void check_deadline(comm::Communicator& c);
void check_size_mismatch(comm::Communicator& c);

}  // namespace burst::testing
