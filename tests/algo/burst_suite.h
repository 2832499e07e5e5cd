// BurstAttention checks that run on every rank of a communicator, shared by the in-process
// test (test_burst.cpp) and the MPI one (test_burst_mpi.cpp). Every rank builds the same
// global problem from a seed, runs its shard and compares its rows with the double reference.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "burst/burst_attention.h"
#include "burst/strategy.h"
#include "burst/communicator.h"

namespace burst::testing {

enum class MaskKind { kNone, kCausal, kWindow, kCausalWindow };
// The mask each kind stands for: windows of 9 left / 12 right, causal + 20 left.
kernels::MaskSpec mask_of(MaskKind m);

// Packed documents of a case: none; mixed lengths (1, 2, 3, 37 and two long ones: shorter
// than P, one token, spanning ranks); many tiny ones (1, 2, 3, ...); one spanning every
// rank plus two short ones.
enum class DocKind { kNone, kMixed, kTiny, kSpanning };
// The boundaries of a kind for a sequence of `seqlen` tokens (kept for the process's life).
std::span<const std::int64_t> documents_of(DocKind docs, std::int64_t seqlen);

struct BurstCase {
  algo::Layout layout = algo::Layout::kContiguous;
  MaskKind mask = MaskKind::kNone;
  std::int64_t group = 1;  // n_heads_q / n_heads_kv
  std::int64_t seqlen = 96;
  algo::BackwardScheme scheme = algo::BackwardScheme::kQuery;
  DType dtype = DType::kF32;
  bool double_ring = false;  // forward over the topology-aware double ring
  DType gradient_wire = DType::kF32;
  algo::Strategy strategy = algo::Strategy::kBurst;
  int ulysses_degree = 1;  // usp only
  DocKind docs = DocKind::kNone;
  kernels::MaskSpec mask_spec() const;  // mask_of(mask) with the documents
  std::string describe() const;
};

// Forward and backward of one case on this rank: results against the reference (within the
// tolerance policy and within 2x the single-rank kernel's error), and the exact bytes sent.
void check_burst_case(comm::Communicator& c, const BurstCase& bc);

// P = 1 gives bitwise the local kernels' results; a second run gives bitwise the first.
void check_burst_bitwise(comm::Communicator& c);

// Ranks that disagree on a shape fail on every rank with the same message.
void check_burst_disagreement(comm::Communicator& c);

}  // namespace burst::testing
