#include "api/attention.h"

#include <algorithm>
#include <limits>

namespace burst {

Tensor::Tensor(DType dtype, std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d)
    : buffer_(static_cast<std::size_t>(b * s * h * d) * dtype_size(dtype)),
      view_(dense_view(buffer_.data(), dtype, b, s, h, d)) {}

void Tensor::fill_nan() {
  const auto n = static_cast<std::size_t>(view_.numel());
  if (view_.dtype == DType::kF32) {
    std::fill_n(data<float>(), n, std::numeric_limits<float>::quiet_NaN());
  } else {
    std::fill_n(data<bf16_bits>(), n, float_to_bf16(std::numeric_limits<float>::quiet_NaN()));
  }
}

void Tensor::fill_zero() {
  std::fill_n(static_cast<char*>(view_.data), static_cast<std::size_t>(view_.numel()) * dtype_size(view_.dtype), 0);
}

RowStats::RowStats(std::int64_t b, std::int64_t h, std::int64_t s)
    : buffer_(static_cast<std::size_t>(b * h * s) * sizeof(float)),
      view_(dense_stats(buffer_.as<float>(), b, h, s)) {}

void RowStats::fill_nan() {
  std::fill_n(view_.data, static_cast<std::size_t>(view_.b * view_.h * view_.s),
              std::numeric_limits<float>::quiet_NaN());
}

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
