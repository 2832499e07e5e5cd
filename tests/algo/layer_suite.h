// Attention-layer checks that run on every rank of a communicator, shared by the in-process
// test (test_layer.cpp) and the MPI one (test_burst_mpi.cpp). Every rank builds the same
// global problem (X, weights, dY) from a seed, runs its share of the layer and compares its
// output rows and gradients with the double-precision layer reference.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "burst/layer.h"
#include "burst/communicator.h"
#include "burst_suite.h"

namespace burst::testing {

// Rows `positions` of a [b, rows, 1, D] tensor against the reference's [b, N, D], normwise
// relative to the whole reference tensor; +inf on a non-finite value.
double rows_error(const TensorView& got, const std::vector<double>& ref, const std::vector<std::int64_t>& positions,
                  std::int64_t n_global);
// A rank's block of a weight gradient against the reference's full matrix: element (i, j)
// of the block is (row0 + i, col0 + j) of the full matrix of `full_cols` columns.
double block_error(const algo::MatrixView& got, const std::vector<double>& ref, std::int64_t full_cols,
                   std::int64_t row0, std::int64_t col0);

struct LayerCase {
  algo::Strategy strategy = algo::Strategy::kBurst;
  algo::Layout layout = algo::Layout::kContiguous;
  MaskKind mask = MaskKind::kCausal;
  std::int64_t heads = 4, kv_heads = 2;
  std::int64_t seqlen = 61;
  DType dtype = DType::kF32;
  int ulysses_degree = 1;  // usp only
  double rope_base = 10000.0;
  // Packed documents: boundaries 0 = c_0 < ... < c_D = seqlen (mask.documents); empty: none.
  std::vector<std::int64_t> documents;
  std::string describe() const;
};

// Forward and backward of one case on this rank: y, dx and the weight gradients against the
// reference (within the written tolerance and within 4x the one-rank layer's error), the
// bytes of the layer's own collectives against expected_layer_traffic, and the saved
// activations and parameters against their formulas.
void check_layer_case(comm::Communicator& c, const LayerCase& lc);

// Packed documents (lengths 1, shorter than the ranks, longer than a shard; 150 tokens) on
// this communicator: check_layer_case for every strategy that splits the heads over its
// ranks (ring-rsa refuses documents), the rings in the zigzag, doc-zigzag and balanced
// layouts; the rotary positions restarting at every document; and a document's Y and dX rows
// coming out of the pack (bf16 core) as out of a run on that document alone, which rotating
// at global positions would break (the bf16 rounding of Q and K follows the angle).
void check_layer_documents(comm::Communicator& c);

}  // namespace burst::testing
