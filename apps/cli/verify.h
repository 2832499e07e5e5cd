// Checks `burst run`'s results against the double-precision reference (reference/reference.h),
// computed from the same stored (possibly bf16-rounded) inputs.
//
// Error measures, one number per tensor (reference/compare.h, docs/numerics.md):
//   o, dq, dk, dv  max |x - ref| / max(max |ref|, floor)   (normwise relative); floor 0
//                  for o and dv, d 2^-12 scale |dO| |V| |K| for dq (|Q| for dk)
//   lse            max |lse - ref| / (1 + |ref|)
// NaN and infinities are compared by position: the same non-finite value as the reference
// is left out, any other disagreement in finiteness is an infinite error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "burst/attention.h"
#include "problem.h"

namespace burst::cli {

struct TensorError {
  std::string name;  // "o", "lse", "dq", "dk", "dv"
  double error = 0.0;
};

struct ForwardCheck {
  std::int64_t rows = 0;  // query rows checked (of seqlen_q), in every batch and head
  double o_error = 0.0;
  double lse_error = 0.0;
};

// Checks O and lse on every query row of a small problem, else on up to 64 rows spread over
// the sequence (first and last included). Runs on `threads` threads.
ForwardCheck check_forward(const Problem& p, const ForwardOutputs& fwd, int threads);

// Whether the full-size reference backward is affordable (b h seqlen_q seqlen_k d <= 2^31),
// or needed: inputs holding a NaN or an infinity are always checked in full.
bool backward_checkable(const Problem& p);

// Checks dq, dk, dv against the reference backward; returns {dq, dk, dv} errors.
std::vector<TensorError> check_backward(const Problem& p, const Gradients& grads, int threads);

// For problems too large for the full reference: dq on the forward check's rows, and the
// column sums of dk and dv against their exact identities (sum_j dK_j = 0, sum_j dV_j = the
// sum of dO over the rows that see a key); returns {dq, dk_sums, dv_sums} errors.
std::vector<TensorError> check_backward_sampled(const Problem& p, const Gradients& grads, int threads);

}  // namespace burst::cli
