// Memory `burst run` will need, estimated from the problem before anything large is
// allocated, so a run too big for the machine stops with the estimate and a hint instead of
// being killed by the kernel's out-of-memory handler.
//
// The estimate follows the allocations of the run phase by phase (inputs, each rank's shards,
// the strategy's buffers in the forward and in the backward, rank 0's gathered results) and
// takes the largest phase, so it is an upper bound of Burst's own allocations
// (memory_stats().peak) and close to it: tests/faults/memory.sh checks 1.0 <= estimate /
// measured <= 1.1 for every strategy, the layer included.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "args.h"

namespace burst::cli {

struct MemoryEstimate {
  double per_rank = 0;       // one rank at its peak: its shards plus the strategy's buffers
  double per_rank_held = 0;  // one rank while rank 0 gathers: what it still holds
  double per_process = 0;    // held once per process: the global inputs every process builds
  double root_extra = 0;     // rank 0's gathered outputs
  // processes_here x per_process + max(ranks_here x per_rank,
  //                                    ranks_here x per_rank_held + root_extra)
  double this_machine = 0;
  double block_saved = 0;  // --block: the activations every block saves, per rank (block_memory)
  std::vector<std::pair<std::string, double>> parts;  // per_rank's breakdown, bytes
  std::string summary() const;
};

// Estimate for `args` over `ranks` ranks, `ranks_here` of them on this machine in
// `processes_here` processes (threads: 1 process; MPI: one per rank). Sizes come from the
// headers of --q/--k/--v (or --x with --layer or --block, and w1.npy of --block's --weights) when given, else from the size flags; a header
// that cannot be read fails here as it would when loading.
MemoryEstimate estimate_memory(const RunArgs& args, int ranks, int ranks_here, int processes_here);

// Throws burst::Error ("memory: ...") when the estimate exceeds args.max_memory (if given) or
// what the machine has available, with a hint.
void check_memory(const RunArgs& args, const MemoryEstimate& estimate);

}  // namespace burst::cli
