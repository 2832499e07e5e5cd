// A Burst communicator over a torch.distributed ProcessGroup (gloo, or any backend with
// point-to-point send and recv on CPU tensors), for processes started by torchrun: no MPI.
#pragma once

#include <pybind11/pybind11.h>

#include <memory>
#include <vector>

#include "burst/communicator.h"

namespace burst::python {

// A communicator over `group` (a torch.distributed.ProcessGroup) whose rank r is the group's
// rank r; `global_ranks[r]` is that rank in torch's default group (for messages only).
// Collective over the group: the ranks exchange their host names, so ranks on one host form
// a node. Call with the GIL held; it is released while the ranks exchange.
std::unique_ptr<comm::Communicator> process_group_communicator(const pybind11::object& group,
                                                               std::vector<int> global_ranks);

}  // namespace burst::python
