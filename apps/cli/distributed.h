// `burst run --strategy burst|ring|...`: distributed attention over the ranks of the
// default world (threads of this process, or MPI ranks under mpirun). Inputs and outputs stay in global token order:
// every rank takes its shard of the global problem, and rank 0 gathers the results.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "burst/attention.h"
#include "burst/strategy.h"
#include "args.h"
#include "problem.h"

namespace burst::cli {

// Figures across ranks (per-rank means and extremes).
struct DistributedFigures {
  std::string strategy;  // burst, ring or allgather
  std::string backend;   // "local" (threads) or "mpi"
  int ranks = 0, threads_per_rank = 0, nodes = 1;
  bool double_ring = false;
  std::string layout, backward_scheme;  // the scheme backward used
  double forward_bytes = 0, forward_bytes_formula = 0, forward_bytes_saved = 0;  // mean per rank
  double backward_bytes = 0, backward_bytes_formula = 0;
  double forward_exposed = 0, backward_exposed = 0;  // slowest rank's wait seconds (median run)
  double forward_compute_min = 0, forward_compute_max = 0;  // per-rank kernel seconds
  double backward_compute_min = 0, backward_compute_max = 0;
  double backward_bytes_saved = 0;  // mean per rank: what the mask spared the backward's ring
  // Steps over all ranks (StrategyStats: ring steps; one per kernel call otherwise).
  std::int64_t forward_steps_computed = 0, forward_steps_skipped = 0;
  std::int64_t backward_steps_computed = 0, backward_steps_skipped = 0;
  // The layout's balance: every rank's queries' work (algo::visible_pairs against all keys)
  // and kernel seconds.
  std::vector<double> work_pairs_by_rank;
  std::vector<double> forward_compute_by_rank, backward_compute_by_rank;
  // Node of every rank, and the bytes each rank sent to ranks of its own node and of other
  // nodes in the last timed run of each pass (link_traffic.h): [0] every operation, [1]
  // point-to-point only.
  std::vector<int> node_of_rank;
  std::vector<double> forward_intra_node_bytes[2], forward_inter_node_bytes[2];
  std::vector<double> backward_intra_node_bytes[2], backward_inter_node_bytes[2];
};

struct DistributedResult {
  bool root = false;  // only rank 0's result holds the gathered outputs
  ForwardOutputs fwd;
  Gradients grads;
  double forward_seconds = 0;  // slowest rank, median over repeats
  std::optional<double> backward_seconds;
  DistributedFigures figures;
};

// Runs the problem with args.strategy; throws burst::Error naming the flag on bad input.
DistributedResult run_burst(const RunArgs& args, const Problem& p);

// Applies --timeout and --ranks-per-node to a world communicator, before anything waits on
// it or wraps it (wrappers and splits copy its deadline and nodes).
void apply_world_settings(comm::Communicator& c, const RunArgs& args);
// The strategy options of the flags, for a sequence of `seqlen` tokens and the kernels'
// mask, scale, isa and tile of `kernel`.
algo::StrategyOptions strategy_options(const RunArgs& args, std::int64_t seqlen, const kernels::AttentionOptions& kernel);
// Threads of one rank: as --threads asks, or the hardware shared among the ranks of its node
// (thread ranks of this process, or MPI ranks sharing the machine).
int threads_of_rank(const RunArgs& args, const comm::Communicator& c);

}  // namespace burst::cli
