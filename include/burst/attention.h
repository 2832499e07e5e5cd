// Public entry points for local (one-rank) attention: owning tensors and validated calls that
// allocate their outputs. The kernels in burst/kernels.h are the lower, allocation-free
// layer these build on.
#pragma once

#include <cstdint>

#include "burst/tensor.h"
#include "burst/kernels.h"

namespace burst {

struct ForwardOutputs {
  Tensor out;    // [b, seqlen_q, n_heads_q, d], dtype as requested
  RowStats lse;  // [b, n_heads_q, seqlen_q]
};

struct Gradients {
  Tensor dq, dk, dv;  // fp32, shaped like q, k, v
};

// Runs attention of q against k, v on this rank and returns O (in out_dtype) and lse.
ForwardOutputs attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                                 const kernels::AttentionOptions& options, DType out_dtype);

// Returns dq, dk, dv of sum(out * dout) given the forward's out and lse.
Gradients attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                             const TensorView& out, const RowStatsView& lse,
                             const TensorView& dout, const kernels::AttentionOptions& options);

}  // namespace burst
