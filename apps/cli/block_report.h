// The figures of one `burst run --block` and how they are printed and written as JSON.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "args.h"
#include "burst/block.h"
#include "burst/tensor.h"

namespace burst::cli {

// The global problem every rank builds or reads: X, dY and the full weights of every block.
struct BlockProblem {
  algo::BlockShape shape;
  int layers = 1;
  std::int64_t batch = 0, seqlen = 0;
  Tensor x, dy;  // [b, N, 1, D]; dy holds data only with --backward
  std::vector<algo::BlockParameters> weights;  // per block, full (every head and hidden unit)
  bool from_files = false;
};

// Bytes of one pass per rank (every rank's mean), each next to its formula (times the layers):
// the attention core (sent + spared by the mask, against the registry's bytes), the attention
// layer's collectives (expected_layer_traffic), the MLP's collectives and the weight-gradient
// all-reduces of the layer and of the norms and MLP (expected_block_traffic).
struct BlockBytes {
  double core = 0, core_spared = 0, core_formula = 0;
  double layer = 0, layer_formula = 0;
  double mlp = 0, mlp_formula = 0;
  double grads = 0, grads_formula = 0;
  double total() const { return core + layer + mlp + grads; }
  double activations() const { return core + layer + mlp; }  // without the weight gradients
};

struct BlockPassFigures {
  double seconds = 0;  // slowest rank, median of --repeat
  // Slowest rank's seconds in each part (of the last run).
  double attention = 0, projections = 0, mlp = 0, norms = 0, collectives = 0;
  double exposed = 0;  // waits of the attention core plus every collective of the pass
  BlockBytes bytes;
  std::vector<double> intra_node_bytes, inter_node_bytes;  // sent by each rank, per link class
};

struct BlockReport {
  std::string strategy, backend, layout;
  int ranks = 0, threads = 0;
  std::vector<int> node_of_rank;
  BlockPassFigures forward, backward;
  bool has_backward = false;
  // Ranks whose bytes differ from their formula, one line per part ("core forward: ...").
  std::vector<std::string> byte_mismatches;
  // Memory per rank (means): parameters held, saved activations (measured and block_memory's),
  // block_memory's peak; Burst's measured peak and the run's estimate in the same scope (thread
  // ranks: the whole process; MPI: rank 0's process, its global inputs included).
  double param_mb = 0, saved_mb = 0, saved_formula_mb = 0, rank_estimate_mb = 0;
  double peak_alloc_mb = 0, estimate_mb = 0;
  std::string memory_scope;
  bool verified = false, backward_verified = false;
  std::string not_verified;  // why the reference was not run
  double y_error = 0, dx_error = 0, dw_error = 0, tolerance = 0;
  bool errors_pass() const {
    return !verified || (y_error <= tolerance && (!backward_verified || (dx_error <= tolerance && dw_error <= tolerance)));
  }
  bool passed() const { return byte_mismatches.empty() && errors_pass(); }
};

void print_block(std::ostream& os, const RunArgs& args, const BlockProblem& p, const BlockReport& r);
std::string block_json(const RunArgs& args, const BlockProblem& p, const BlockReport& r);

}  // namespace burst::cli
