// Bad input to the kernels fails with a burst::Error that names the argument, the expected and
// the actual value; nothing is written.
#include <gtest/gtest.h>

#include <functional>
#include <limits>

#include "burst/error.h"

#include "burst/kernels.h"
#include "support.h"

namespace burst {
namespace {

using kernels::AttentionOptions;

void expect_error(const std::function<void()>& fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

struct Inputs {
  Tensor q = testing::random_tensor(DType::kF32, 1, 10, 4, 16, 1);
  Tensor k = testing::random_tensor(DType::kF32, 1, 12, 2, 16, 2);
  Tensor v = testing::random_tensor(DType::kF32, 1, 12, 2, 16, 3);
  Tensor out{DType::kF32, 1, 10, 4, 16};
  RowStats lse{1, 4, 10};
};

TEST(Errors, ShapeMismatchesNameTheArgument) {
  Inputs in;
  auto fwd = [&](const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& o,
                 const RowStatsView& l, AttentionOptions opt = {}) {
    return [=] { kernels::attention_forward(q, k, v, o, l, opt); };
  };
  Tensor k_d8 = testing::random_tensor(DType::kF32, 1, 12, 2, 8, 4);
  expect_error(fwd(in.q.view(), k_d8.view(), k_d8.view(), in.out.view(), in.lse.view()),
               {"k:", "head_dim 16", "has 8"});
  Tensor k_h3 = testing::random_tensor(DType::kF32, 1, 12, 3, 16, 4);
  expect_error(fwd(in.q.view(), k_h3.view(), k_h3.view(), in.out.view(), in.lse.view()),
               {"n_heads_q (4)", "multiple", "got 3"});
  Tensor v_short = testing::random_tensor(DType::kF32, 1, 11, 2, 16, 5);
  expect_error(fwd(in.q.view(), in.k.view(), v_short.view(), in.out.view(), in.lse.view()),
               {"v:", "[1, 12, 2, 16]", "[1, 11, 2, 16]"});
  Tensor k_bf16 = testing::random_tensor(DType::kBF16, 1, 12, 2, 16, 6);
  expect_error(fwd(in.q.view(), k_bf16.view(), in.v.view(), in.out.view(), in.lse.view()),
               {"k:", "fp32", "bf16"});
  RowStats lse_bad(1, 4, 9);
  expect_error(fwd(in.q.view(), in.k.view(), in.v.view(), in.out.view(), lse_bad.view()),
               {"lse", "[1, 4, 10]", "[1, 4, 9]"});
  Tensor big = testing::random_tensor(DType::kF32, 1, 2, 1, 257, 7);
  Tensor big_out(DType::kF32, 1, 2, 1, 257);
  RowStats big_lse(1, 1, 2);
  expect_error(fwd(big.view(), big.view(), big.view(), big_out.view(), big_lse.view()),
               {"head_dim <= 256", "257"});
  AttentionOptions bad_threads;
  bad_threads.threads = 0;
  expect_error(fwd(in.q.view(), in.k.view(), in.v.view(), in.out.view(), in.lse.view(), bad_threads),
               {"threads", ">= 1", "got 0"});
  AttentionOptions bad_scale;
  bad_scale.scale = std::numeric_limits<float>::infinity();
  expect_error(fwd(in.q.view(), in.k.view(), in.v.view(), in.out.view(), in.lse.view(), bad_scale),
               {"scale", "finite"});
  Tensor bf16_state(DType::kBF16, 1, 10, 4, 16);
  expect_error([&] { kernels::attention_forward_continue(in.q.view(), in.k.view(), in.v.view(), bf16_state.view(), in.lse.view()); },
               {"running state", "fp32", "bf16"});
}

TEST(Errors, BackwardChecksGradientBuffers) {
  Inputs in;
  RowStats delta(1, 4, 10);
  Tensor dq(DType::kF32, 1, 10, 4, 16), dk(DType::kF32, 1, 12, 2, 16), dv_bad(DType::kBF16, 1, 12, 2, 16);
  expect_error([&] {
    kernels::attention_backward(in.q.view(), in.k.view(), in.v.view(), in.q.view(), in.lse.view(),
                                delta.view(), dq.view(), dk.view(), dv_bad.view());
  }, {"dv", "fp32", "bf16"});
  expect_error([&] {
    kernels::attention_backward(in.q.view(), in.k.view(), in.v.view(), in.q.view(), in.lse.view(),
                                delta.view(), dk.view(), dk.view(), dk.view());
  }, {"dq", "shape of q"});
}

TEST(Errors, IsaNamesAreChecked) {
  expect_error([] { kernels::parse_isa("sse9", "--isa"); }, {"--isa", "avx512", "sse9"});
}

}  // namespace
}  // namespace burst
