// The figures of one `burst run`, printed as a short table and written as one JSON object.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "distributed.h"
#include "verify.h"

namespace burst::cli {

struct Report {
  // Problem.
  std::int64_t batch = 0, seqlen_q = 0, seqlen_k = 0, heads = 0, kv_heads = 0, head_dim = 0;
  std::string dtype;
  bool causal = false;
  std::optional<std::pair<std::int64_t, std::int64_t>> window;  // -1 side: unbounded
  double scale = 0.0;
  // Packed documents: their count (0: none given, one document), the longest, where they
  // came from ("--doc-dist pretrain", ...), and the visible pairs with them against the same
  // mask over one document (algo::document_work_ratio; causal: about sum L_i^2 / N^2).
  std::int64_t documents = 0, longest_document = 0;
  std::string documents_source;
  double document_work_ratio = 1.0;
  std::string input;  // "random" or "npy"
  std::uint64_t seed = 0;
  // Machine.
  int threads = 0;
  std::string isa;        // resolved implementation, never "auto"
  std::string blas_core;  // OpenBLAS kernel family
  int repeat = 0;
  // Timing; FLOPs already scaled by the visible fraction of the mask.
  double visible_fraction = 1.0;
  double forward_flops = 0.0;
  double forward_seconds = 0.0;
  std::optional<double> backward_seconds;  // set when the backward pass ran
  // --emulate-compute: the kernels' modelled rates (FLOP/s per rank); the results are then
  // not attention and not verified.
  std::optional<std::pair<double, double>> emulated;
  // Verification.
  std::int64_t verified_rows = 0;
  bool backward_verified = false;
  bool backward_sampled = false;  // dq on the sampled rows, dk and dv by column-sum identities
  std::vector<TensorError> errors;  // o, then dq, dk, dv when verified
  double lse_error = 0.0;
  double tolerance = 0.0;           // of o and lse
  double gradient_tolerance = 0.0;  // of dq, dk, dv (wider with a bf16 gradient wire)
  // Set for the distributed strategies.
  std::optional<DistributedFigures> distributed;
  // Memory of this process (one MPI rank, or every thread rank): the peak resident set and
  // the peak of Burst's own allocations (tensors and workspaces).
  double peak_rss_mb = 0.0;
  double peak_alloc_mb = 0.0;
  double memory_estimate_mb = 0.0;  // what the run was estimated to need on this machine
  std::string memory_scope = "process";  // "rank" under MPI

  double backward_flops() const { return 2.5 * forward_flops; }
  // Largest error over o and the checked gradients (lse has its own measure).
  double max_error() const;
  // The tensors over tolerance (lse included, by its own measure); empty when all pass.
  std::vector<TensorError> failures() const;
};

void print_table(std::ostream& os, const Report& r);

// r as one JSON object (the text of --json).
std::string report_json(const Report& r);

}  // namespace burst::cli
