// Naive attention in double precision: the ground truth for tests, benchmarks and the CLI's
// verify path. Materialises every score row, so use it on small problems or sampled rows.
#pragma once

#include <cstdint>
#include <vector>

#include "burst/tensor.h"
#include "burst/kernels.h"

namespace burst::reference {

// Dense double results. out-like arrays are [b, s, h, d]; lse is [b, h, s].
struct ForwardResult {
  std::vector<double> out, lse;
  double max_abs_score = 0.0;  // largest |scale q.k| over visible pairs (for error bounds)
};
struct BackwardResult {
  std::vector<double> dq, dk, dv;
};

// Computes the forward pass exactly as the kernel contract defines it (same mask, positions,
// scale and GQA mapping), reading q, k, v in their storage dtype.
ForwardResult forward(const TensorView& q, const TensorView& k, const TensorView& v,
                      const kernels::AttentionOptions& options);

// Forward for the listed query rows only (indices into seqlen_q), for spot checks of large
// problems; results are [b, rows.size(), h, d] and [b, h, rows.size()].
ForwardResult forward_rows(const TensorView& q, const TensorView& k, const TensorView& v,
                           const kernels::AttentionOptions& options,
                           const std::vector<std::int64_t>& rows);

// Computes dq, dk, dv of sum(out * dout), from scratch in double.
BackwardResult backward(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& dout, const kernels::AttentionOptions& options);

// dq of the listed query rows only ([b, rows.size(), h, d]): each row needs only its own
// softmax, so long problems can be spot-checked.
std::vector<double> backward_dq_rows(const TensorView& q, const TensorView& k, const TensorView& v,
                                     const TensorView& dout, const kernels::AttentionOptions& options,
                                     const std::vector<std::int64_t>& rows);

// Reads element (ib, is, ih, x) of a fp32 or bf16 tensor as double.
double element(const TensorView& t, std::int64_t ib, std::int64_t is, std::int64_t ih,
               std::int64_t x);

}  // namespace burst::reference
