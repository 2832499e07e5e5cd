// Memory `burst run` will need, estimated from the problem before anything large is
// allocated, so a run too big for the machine stops with the estimate and a hint instead of
// being killed by the kernel's out-of-memory handler.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "args.h"

namespace burst::cli {

struct MemoryEstimate {
  double per_rank = 0;     // one rank's shards, buffers and the strategy's workspace
  double per_process = 0;  // held once per process: the global inputs every process builds
  double root_extra = 0;   // rank 0's gathered outputs
  double this_machine = 0; // ranks_here x per_rank + processes_here x per_process + root_extra
  std::vector<std::pair<std::string, double>> parts;  // per-rank breakdown, bytes
  std::string summary() const;
};

// Estimate for `args` over `ranks` ranks, `ranks_here` of them on this machine in
// `processes_here` processes (threads: 1 process; MPI: one per rank).
MemoryEstimate estimate_memory(const RunArgs& args, int ranks, int ranks_here, int processes_here);

// Bytes this machine can give a new allocation now (MemAvailable), 0 if unknown.
double available_memory();

// Throws burst::Error ("memory: ...") when the estimate exceeds args.max_memory (if given) or
// what the machine has available, with a hint.
void check_memory(const RunArgs& args, const MemoryEstimate& estimate);

}  // namespace burst::cli
