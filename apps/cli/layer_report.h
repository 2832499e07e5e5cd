// The figures of one `burst run --layer` and how they are printed and written as JSON.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "args.h"
#include "burst/layer.h"
#include "burst/tensor.h"

namespace burst::cli {

struct LayerProblem {
  algo::LayerShape shape;
  std::int64_t batch = 0, seqlen = 0;
  Tensor x, dy;  // [b, N, 1, D]; dy holds data only with --backward
  algo::Parameters weights;
  bool from_files = false;
};

// Per-rank figures, as every rank's mean or the slowest rank's.
struct PassFigures {
  double seconds = 0, attention = 0, projections = 0, collectives = 0;
  double core_bytes = 0, layer_bytes = 0, layer_formula = 0, grad_bytes = 0, grad_formula = 0;
  double exposed = 0;  // attention core's wait (slowest rank)
  std::vector<double> intra_node_bytes, inter_node_bytes;  // sent by each rank, per link class
};

struct LayerReport {
  std::string strategy, backend, layout;
  int ranks = 0, threads = 0;
  std::vector<int> node_of_rank;
  PassFigures forward, backward;
  bool has_backward = false;
  double param_mb = 0, saved_mb = 0, peak_alloc_mb = 0, estimate_mb = 0;
  std::string memory_scope;
  std::int64_t verified_rows = 0;
  bool backward_verified = false;
  double y_error = 0, dx_error = 0, dw_error = 0, tolerance = 0;
  bool passed() const {
    return y_error <= tolerance && (!backward_verified || (dx_error <= tolerance && dw_error <= tolerance));
  }
};

void print_layer(std::ostream& os, const RunArgs& args, const LayerProblem& p, const LayerReport& r);
std::string layer_json(const RunArgs& args, const LayerProblem& p, const LayerReport& r);

}  // namespace burst::cli
