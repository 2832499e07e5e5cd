// Transformer-block checks that run on every rank of a communicator, shared by the
// in-process test (test_block.cpp) and the MPI one (test_burst_mpi.cpp). Every rank builds
// the same global problem (X, every layer's weights, dY) from a seed, runs its share of a
// stack of blocks and compares its output rows and every gradient with the double-precision
// block reference.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "burst/block.h"
#include "burst/communicator.h"
#include "burst_suite.h"

namespace burst::testing {

struct BlockCase {
  algo::Strategy strategy = algo::Strategy::kBurst;
  algo::Layout layout = algo::Layout::kZigzag;
  MaskKind mask = MaskKind::kCausal;
  std::int64_t heads = 4, kv_heads = 2;
  std::int64_t seqlen = 61;
  std::int64_t mlp_dim = 48;  // a multiple of 1, 2, 3 and 4 ranks
  int layers = 2;
  DType dtype = DType::kF32;
  int ulysses_degree = 1;  // usp only
  std::vector<std::int64_t> documents;  // packed documents' boundaries; empty: none
  std::string describe() const;
};

// Forward and backward of a stack of `layers` blocks on this rank: y, dx and every weight
// gradient (attention, norms, MLP; tensor parallelism: the rank's slice) against the
// reference, within the written tolerance and within 4x the one-rank stack's error; the bytes
// of the attention core, the layer's and the MLP's collectives and both weight-gradient
// all-reduces against their formulas, exactly; the saved activations and the parameters
// against block_memory.
void check_block_case(comm::Communicator& c, const BlockCase& bc);

}  // namespace burst::testing
