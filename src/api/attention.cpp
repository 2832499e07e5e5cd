#include "burst/attention.h"

namespace burst {

ForwardOutputs attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                                 const kernels::AttentionOptions& options, DType out_dtype) {
  ForwardOutputs r{Tensor(out_dtype, q.b, q.s, q.h, q.d), RowStats(q.b, q.h, q.s)};
  kernels::attention_forward(q, k, v, r.out.view(), r.lse.view(), options);
  return r;
}

Gradients attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                             const TensorView& out, const RowStatsView& lse,
                             const TensorView& dout, const kernels::AttentionOptions& options) {
  RowStats delta(q.b, q.h, q.s);
  kernels::compute_delta(dout, out, delta.view(), options.threads);
  Gradients g{Tensor(DType::kF32, q.b, q.s, q.h, q.d), Tensor(DType::kF32, k.b, k.s, k.h, k.d),
              Tensor(DType::kF32, k.b, k.s, k.h, k.d)};
  g.dq.fill_zero();
  g.dk.fill_zero();
  g.dv.fill_zero();
  kernels::attention_backward(q, k, v, dout, lse, delta.view(), g.dq.view(), g.dk.view(),
                              g.dv.view(), options);
  return g;
}

}  // namespace burst
