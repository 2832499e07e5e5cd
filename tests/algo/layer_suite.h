// Attention-layer checks that run on every rank of a communicator, shared by the in-process
// test (test_layer.cpp) and the MPI one (test_burst_mpi.cpp). Every rank builds the same
// global problem (X, weights, dY) from a seed, runs its share of the layer and compares its
// output rows and gradients with the double-precision layer reference.
#pragma once

#include <cstdint>
#include <string>

#include "burst/layer.h"
#include "burst/communicator.h"
#include "burst_suite.h"

namespace burst::testing {

struct LayerCase {
  algo::Strategy strategy = algo::Strategy::kBurst;
  algo::Layout layout = algo::Layout::kContiguous;
  MaskKind mask = MaskKind::kCausal;
  std::int64_t heads = 4, kv_heads = 2;
  std::int64_t seqlen = 61;
  DType dtype = DType::kF32;
  int ulysses_degree = 1;  // usp only
  double rope_base = 10000.0;
  std::string describe() const;
};

// Forward and backward of one case on this rank: y, dx and the weight gradients against the
// reference (within the written tolerance and within 4x the one-rank layer's error), the
// bytes of the layer's own collectives against expected_layer_traffic, and the saved
// activations and parameters against their formulas.
void check_layer_case(comm::Communicator& c, const LayerCase& lc);

}  // namespace burst::testing
