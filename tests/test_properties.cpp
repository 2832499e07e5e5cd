// Properties of exact attention that hold whatever the reference says: tiling invariance,
// merge algebra, continuation, shift invariance, linearity, causality, large logits,
// empty rows, gradients by finite differences and run-twice determinism.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "burst/kernels.h"
#include "kernels/detail.h"
#include "kernels/tile_ops.h"
#include "support.h"

namespace burst {
namespace {

using kernels::AttentionOptions;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct Problem {
  std::int64_t b = 2, sq = 150, sk = 170, hq = 4, hkv = 2, d = 48;
  Tensor q, k, v;

  explicit Problem(std::uint64_t seed = 11, DType dtype = DType::kF32) {
    q = testing::random_tensor(dtype, b, sq, hq, d, seed);
    k = testing::random_tensor(dtype, b, sk, hkv, d, seed + 1);
    v = testing::random_tensor(dtype, b, sk, hkv, d, seed + 2);
  }
};

ForwardOutputs run_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                           const AttentionOptions& opt) {
  ForwardOutputs r{Tensor(DType::kF32, q.b, q.s, q.h, q.d), RowStats(q.b, q.h, q.s)};
  r.out.fill_nan();
  r.lse.fill_nan();
  kernels::attention_forward(q, k, v, r.out.view(), r.lse.view(), opt);
  return r;
}

// View of keys [first, first + n) of t.
TensorView key_slice(const TensorView& t, std::int64_t first, std::int64_t n) {
  TensorView s = t;
  s.data = static_cast<float*>(t.data) + first * t.stride_s;
  s.s = n;
  return s;
}

AttentionOptions causal_bottom_right(const Problem& p) {
  AttentionOptions opt;
  opt.mask.causal = true;
  opt.q_pos.offset = p.sk - p.sq;
  opt.threads = 2;
  return opt;
}

TEST(Properties, TilingInvariance) {
  Problem p;
  AttentionOptions opt = causal_bottom_right(p);
  opt.mask.window_left = 90;
  const auto ref = reference::forward(p.q.view(), p.k.view(), p.v.view(), opt);
  const double tol = testing::forward_tolerance(p.d, p.sk, ref.max_abs_score);
  for (auto [bm, bn] : {std::pair{64, 128}, {1, 1}, {7, 13}, {16, 32}, {128, 64}, {200, 300}}) {
    opt.block_m = bm;
    opt.block_n = bn;
    const auto r = run_forward(p.q.view(), p.k.view(), p.v.view(), opt);
    EXPECT_LE(testing::relative_error(r.out.view(), ref.out), tol) << bm << "x" << bn;
    EXPECT_LE(testing::lse_error(r.lse.view(), ref.lse), tol) << bm << "x" << bn;
  }
}

// Splits the keys into three chunks and checks the partial results merge to the whole.
TEST(Properties, MergeAssociativeAndMatchesWhole) {
  Problem p;
  AttentionOptions opt = causal_bottom_right(p);
  const auto whole = reference::forward(p.q.view(), p.k.view(), p.v.view(), opt);
  const double tol = testing::forward_tolerance(p.d, p.sk, whole.max_abs_score);
  const std::int64_t cut[] = {0, 40, 41, p.sk};  // a one-key chunk too
  std::vector<ForwardOutputs> parts;
  for (int c = 0; c < 3; ++c) {
    AttentionOptions part = opt;
    part.k_pos.offset = cut[c];
    parts.push_back(run_forward(p.q.view(), key_slice(p.k.view(), cut[c], cut[c + 1] - cut[c]),
                                key_slice(p.v.view(), cut[c], cut[c + 1] - cut[c]), part));
  }
  auto copy = [&](const ForwardOutputs& f) {
    ForwardOutputs r{Tensor(DType::kF32, p.b, p.sq, p.hq, p.d), RowStats(p.b, p.hq, p.sq)};
    std::memcpy(r.out.data<float>(), f.out.data<float>(), static_cast<std::size_t>(p.b * p.sq * p.hq * p.d) * 4);
    std::memcpy(r.lse.data(), f.lse.data(), static_cast<std::size_t>(p.b * p.hq * p.sq) * 4);
    return r;
  };
  // (a + b) + c
  ForwardOutputs left = copy(parts[0]);
  kernels::merge_partials(left.out.view(), left.lse.view(), parts[1].out.view(), parts[1].lse.view());
  kernels::merge_partials(left.out.view(), left.lse.view(), parts[2].out.view(), parts[2].lse.view());
  // a + (b + c)
  ForwardOutputs right = copy(parts[1]);
  kernels::merge_partials(right.out.view(), right.lse.view(), parts[2].out.view(), parts[2].lse.view());
  ForwardOutputs right_all = copy(parts[0]);
  kernels::merge_partials(right_all.out.view(), right_all.lse.view(), right.out.view(), right.lse.view());

  for (const auto* r : {&left, &right_all}) {
    EXPECT_LE(testing::relative_error(r->out.view(), whole.out), tol);
    EXPECT_LE(testing::lse_error(r->lse.view(), whole.lse), tol);
  }
  EXPECT_LE(testing::relative_error(left.out.view(), testing::to_double(right_all.out.view())), tol);
}

TEST(Properties, MergeWithEmptyPartialIsIdentity) {
  Problem p;
  AttentionOptions opt = causal_bottom_right(p);
  const auto a = run_forward(p.q.view(), p.k.view(), p.v.view(), opt);
  // An empty partial: lse -inf everywhere and garbage (but finite) values in out.
  Tensor junk = testing::random_tensor(DType::kF32, p.b, p.sq, p.hq, p.d, 99, 1e6);
  RowStats empty(p.b, p.hq, p.sq);
  std::fill_n(empty.data(), p.b * p.hq * p.sq, kNegInf);

  ForwardOutputs merged = run_forward(p.q.view(), p.k.view(), p.v.view(), opt);
  kernels::merge_partials(merged.out.view(), merged.lse.view(), junk.view(), empty.view());
  EXPECT_TRUE(testing::bitwise_equal(merged.out.view(), a.out.view()));
  EXPECT_TRUE(testing::bitwise_equal(merged.lse.view(), a.lse.view()));

  // Empty state merged with a: gives a (within rounding of the sigmoid weight, which is 1).
  Tensor state(DType::kF32, p.b, p.sq, p.hq, p.d);
  RowStats state_lse(p.b, p.hq, p.sq);
  kernels::init_forward_state(state.view(), state_lse.view());
  kernels::merge_partials(state.view(), state_lse.view(), a.out.view(), a.lse.view());
  EXPECT_TRUE(testing::bitwise_equal(state.view(), a.out.view()));
  EXPECT_TRUE(testing::bitwise_equal(state_lse.view(), a.lse.view()));
}

TEST(Properties, ContinueOverChunksEqualsOneCall) {
  Problem p;
  for (bool causal : {false, true}) {
    AttentionOptions opt = causal_bottom_right(p);
    opt.mask.causal = causal;
    const auto whole = reference::forward(p.q.view(), p.k.view(), p.v.view(), opt);
    const double tol = testing::forward_tolerance(p.d, p.sk, whole.max_abs_score);
    Tensor state(DType::kF32, p.b, p.sq, p.hq, p.d);
    RowStats lse(p.b, p.hq, p.sq);
    state.fill_nan();
    lse.fill_nan();
    kernels::init_forward_state(state.view(), lse.view());
    // Visit the chunks out of order, as a ring does.
    const std::int64_t cut[] = {0, 33, 100, 101, p.sk};
    for (int c : {2, 0, 3, 1}) {
      AttentionOptions part = opt;
      part.k_pos.offset = cut[c];
      kernels::attention_forward_continue(p.q.view(), key_slice(p.k.view(), cut[c], cut[c + 1] - cut[c]),
                                          key_slice(p.v.view(), cut[c], cut[c + 1] - cut[c]),
                                          state.view(), lse.view(), part);
    }
    EXPECT_LE(testing::relative_error(state.view(), whole.out), tol) << "causal " << causal;
    EXPECT_LE(testing::lse_error(lse.view(), whole.lse), tol) << "causal " << causal;
  }
}

TEST(Properties, ShiftInvarianceOfKeys) {
  Problem p;
  AttentionOptions opt = causal_bottom_right(p);
  const auto base = run_forward(p.q.view(), p.k.view(), p.v.view(), opt);
  // k' = k + c for one vector c: every score of a row moves by the same q.c.
  Tensor shifted = testing::random_tensor(DType::kF32, p.b, p.sk, p.hkv, p.d, 12);
  Tensor c = testing::random_tensor(DType::kF32, 1, 1, 1, p.d, 13, 0.5);
  for (std::int64_t i = 0; i < p.b * p.sk * p.hkv; ++i)
    for (std::int64_t x = 0; x < p.d; ++x)
      shifted.data<float>()[i * p.d + x] = p.k.data<float>()[i * p.d + x] + c.data<float>()[x];
  const auto moved = run_forward(p.q.view(), shifted.view(), p.v.view(), opt);
  const auto ref = reference::forward(p.q.view(), shifted.view(), p.v.view(), opt);
  const double tol = testing::forward_tolerance(p.d, p.sk, ref.max_abs_score);
  EXPECT_LE(testing::relative_error(moved.out.view(), testing::to_double(base.out.view())), 2 * tol);
}

TEST(Properties, LinearInValues) {
  Problem p;
  AttentionOptions opt = causal_bottom_right(p);
  Tensor v2 = testing::random_tensor(DType::kF32, p.b, p.sk, p.hkv, p.d, 21);
  Tensor mix(DType::kF32, p.b, p.sk, p.hkv, p.d);
  const float a = 0.75f, c = -1.5f;
  for (std::int64_t i = 0; i < p.b * p.sk * p.hkv * p.d; ++i)
    mix.data<float>()[i] = a * p.v.data<float>()[i] + c * v2.data<float>()[i];
  const auto o1 = run_forward(p.q.view(), p.k.view(), p.v.view(), opt);
  const auto o2 = run_forward(p.q.view(), p.k.view(), v2.view(), opt);
  const auto om = run_forward(p.q.view(), p.k.view(), mix.view(), opt);
  std::vector<double> expect = testing::to_double(o1.out.view());
  const std::vector<double> e2 = testing::to_double(o2.out.view());
  for (std::size_t i = 0; i < expect.size(); ++i) expect[i] = a * expect[i] + c * e2[i];
  const auto ref = reference::forward(p.q.view(), p.k.view(), mix.view(), opt);
  EXPECT_LE(testing::relative_error(om.out.view(), expect),
            4 * testing::forward_tolerance(p.d, p.sk, ref.max_abs_score));
}

// Changing keys and values in the future of a query leaves its output bit-identical.
TEST(Properties, CausalityIsExact) {
  Problem p;
  AttentionOptions opt = causal_bottom_right(p);
  const auto before = run_forward(p.q.view(), p.k.view(), p.v.view(), opt);
  const std::int64_t first_changed = 97;  // key position; queries below it must not move
  Tensor k2 = testing::random_tensor(DType::kF32, p.b, p.sk, p.hkv, p.d, 31);
  Tensor v2 = testing::random_tensor(DType::kF32, p.b, p.sk, p.hkv, p.d, 32);
  const std::int64_t row = p.hkv * p.d;
  for (std::int64_t ib = 0; ib < p.b; ++ib) {
    std::memcpy(k2.data<float>() + ib * p.sk * row, p.k.data<float>() + ib * p.sk * row,
                static_cast<std::size_t>(first_changed * row) * 4);
    std::memcpy(v2.data<float>() + ib * p.sk * row, p.v.data<float>() + ib * p.sk * row,
                static_cast<std::size_t>(first_changed * row) * 4);
  }
  const auto after = run_forward(p.q.view(), k2.view(), v2.view(), opt);
  const std::int64_t unaffected = first_changed - opt.q_pos.offset;  // query rows at positions < 97
  TensorView b0 = before.out.view(), a0 = after.out.view();
  b0.s = a0.s = unaffected;
  EXPECT_TRUE(testing::bitwise_equal(b0, a0));
  EXPECT_FALSE(testing::bitwise_equal(before.out.view(), after.out.view()));
}

TEST(Properties, HugeLogitsDoNotOverflow) {
  Problem p(41);
  // Scale q so scores exceed 1e4 in magnitude.
  for (std::int64_t i = 0; i < p.b * p.sq * p.hq * p.d; ++i) p.q.data<float>()[i] *= 2000.0f;
  AttentionOptions opt = causal_bottom_right(p);
  const auto ref = reference::forward(p.q.view(), p.k.view(), p.v.view(), opt);
  ASSERT_GT(ref.max_abs_score, 1e4);
  const auto r = run_forward(p.q.view(), p.k.view(), p.v.view(), opt);
  const double tol = testing::forward_tolerance(p.d, p.sk, ref.max_abs_score);
  EXPECT_LE(testing::relative_error(r.out.view(), ref.out), tol);
  EXPECT_LE(testing::lse_error(r.lse.view(), ref.lse), tol);
}

// Queries before every key (causal) see nothing: O = 0, lse = -inf, zero gradients, no NaN.
TEST(Properties, FullyMaskedRows) {
  Problem p;
  AttentionOptions opt;
  opt.mask.causal = true;
  opt.q_pos.offset = -50;  // the first 50 queries precede key 0
  opt.threads = 2;
  const auto r = run_forward(p.q.view(), p.k.view(), p.v.view(), opt);
  const auto ref = reference::forward(p.q.view(), p.k.view(), p.v.view(), opt);
  EXPECT_LE(testing::relative_error(r.out.view(), ref.out),
            testing::forward_tolerance(p.d, p.sk, ref.max_abs_score));
  EXPECT_EQ(testing::lse_error(r.lse.view(), ref.lse) < 1e-5, true);
  for (std::int64_t ib = 0; ib < p.b; ++ib)
    for (std::int64_t ih = 0; ih < p.hq; ++ih)
      for (std::int64_t is = 0; is < 50; ++is) {
        ASSERT_EQ(r.lse.view().row(ib, ih)[is], kNegInf);
        for (std::int64_t x = 0; x < p.d; ++x) ASSERT_EQ(r.out.view().row<float>(ib, is, ih)[x], 0.0f);
      }
  // Gradients of the empty rows are exactly zero.
  Tensor dout = testing::random_tensor(DType::kF32, p.b, p.sq, p.hq, p.d, 45);
  const Gradients g = attention_backward(p.q.view(), p.k.view(), p.v.view(), r.out.view(), r.lse.view(), dout.view(), opt);
  for (std::int64_t ib = 0; ib < p.b; ++ib)
    for (std::int64_t ih = 0; ih < p.hq; ++ih)
      for (std::int64_t is = 0; is < 50; ++is)
        for (std::int64_t x = 0; x < p.d; ++x) ASSERT_EQ(g.dq.view().row<float>(ib, is, ih)[x], 0.0f);
  const auto ref_grad = reference::backward(p.q.view(), p.k.view(), p.v.view(), dout.view(), opt);
  EXPECT_LE(testing::relative_error(g.dk.view(), ref_grad.dk), testing::backward_tolerance(p.d, p.sk, ref.max_abs_score));
}

// A row whose visible scores are all -inf (possible only with infinite inputs: here every key
// of kv head 0 in batch 0 holds +inf where the queries reading it hold -1) is an empty row on
// every implementation, also inside fully visible tiles: O = 0, lse = -inf, P = 0 (never
// exp(-inf - -inf) = NaN), so dK and dV of those keys are exactly 0; dQ = sum dS K meets
// 0 * inf and is NaN, as in the reference (IEEE arithmetic over visible pairs).
TEST(Properties, RowsOfMinusInfScoresAreEmpty) {
  Problem p;
  const float inf = std::numeric_limits<float>::infinity();
  for (std::int64_t is = 0; is < p.sk; ++is) p.k.view().row<float>(0, is, 0)[0] = inf;
  for (std::int64_t is = 0; is < p.sq; ++is)
    for (std::int64_t ih = 0; ih < p.hq / p.hkv; ++ih) p.q.view().row<float>(0, is, ih)[0] = -1.0f;
  Tensor dout = testing::random_tensor(DType::kF32, p.b, p.sq, p.hq, p.d, 47);
  AttentionOptions opt;
  opt.block_m = 32;
  opt.block_n = 48;
  opt.threads = 2;
  const auto ref = reference::forward(p.q.view(), p.k.view(), p.v.view(), opt);
  const auto ref_grad = reference::backward(p.q.view(), p.k.view(), p.v.view(), dout.view(), opt);
  for (kernels::Isa isa : testing::isas_under_test()) {
    opt.isa = isa;
    const std::string where = kernels::isa_name(isa);
    const auto r = run_forward(p.q.view(), p.k.view(), p.v.view(), opt);
    for (std::int64_t is = 0; is < p.sq; ++is) ASSERT_EQ(r.lse.view().row(0, 0)[is], kNegInf) << where;
    EXPECT_LE(testing::relative_error(r.out.view(), ref.out), 1e-5) << where;
    EXPECT_LE(testing::lse_error(r.lse.view(), ref.lse), 1e-5) << where;
    const Gradients g = attention_backward(p.q.view(), p.k.view(), p.v.view(), r.out.view(), r.lse.view(),
                                           dout.view(), opt);
    for (std::int64_t is = 0; is < p.sk; ++is)
      for (std::int64_t x = 0; x < p.d; ++x) {
        ASSERT_EQ(g.dk.view().row<float>(0, is, 0)[x], 0.0f) << where;
        ASSERT_EQ(g.dv.view().row<float>(0, is, 0)[x], 0.0f) << where;
      }
    const double btol = testing::backward_tolerance(p.d, p.sk, 10.0);
    EXPECT_LE(testing::relative_error(g.dq.view(), ref_grad.dq), btol) << where;
    EXPECT_LE(testing::relative_error(g.dk.view(), ref_grad.dk), btol) << where;
    EXPECT_LE(testing::relative_error(g.dv.view(), ref_grad.dv), btol) << where;
  }
}

// The double reference's gradients against central differences of the double reference's
// forward, on tiny shapes; the kernels are checked against that reference in test_sweep.
TEST(Properties, ReferenceGradientsMatchFiniteDifferences) {
  for (bool causal : {false, true}) {
    const std::int64_t b = 1, sq = 3, sk = 5, hq = 2, hkv = 1, d = 3;
    Tensor q = testing::random_tensor(DType::kF32, b, sq, hq, d, 51);
    Tensor k = testing::random_tensor(DType::kF32, b, sk, hkv, d, 52);
    Tensor v = testing::random_tensor(DType::kF32, b, sk, hkv, d, 53);
    Tensor dout = testing::random_tensor(DType::kF32, b, sq, hq, d, 54);
    AttentionOptions opt;
    opt.mask = {causal, 3, -1, {}};
    opt.q_pos.offset = sk - sq;
    const auto grads = reference::backward(q.view(), k.view(), v.view(), dout.view(), opt);
    const std::vector<double> g_out = testing::to_double(dout.view());
    auto loss = [&] {
      const auto f = reference::forward(q.view(), k.view(), v.view(), opt);
      double l = 0.0;
      for (std::size_t i = 0; i < f.out.size(); ++i) l += f.out[i] * g_out[i];
      return l;
    };
    auto check = [&](Tensor& t, const std::vector<double>& analytic, const char* name) {
      for (std::size_t i = 0; i < analytic.size(); ++i) {
        float& x = t.data<float>()[i];
        const float x0 = x;
        const float hi = x0 + 1e-2f, lo = x0 - 1e-2f;
        x = hi;
        const double l_hi = loss();
        x = lo;
        const double l_lo = loss();
        x = x0;
        const double numeric = (l_hi - l_lo) / (static_cast<double>(hi) - lo);
        EXPECT_NEAR(analytic[i], numeric, 1e-4 * (1 + std::fabs(numeric))) << name << "[" << i << "] causal " << causal;
      }
    };
    check(q, grads.dq, "dq");
    check(k, grads.dk, "dk");
    check(v, grads.dv, "dv");
  }
}

// One NaN or infinity planted in q, k, v or dO reaches exactly the outputs whose formula holds
// it through a visible pair (docs/numerics.md, "Non-finite inputs"), on every instruction
// set, for fp32 and bf16 storage and with small tiles (masked, partial and full tiles). The
// double reference sums over visible pairs only, so relative_error and lse_error, which
// require the same NaN and infinities at the same positions, check the positions exactly.
TEST(Properties, NonFiniteInputsReachExactlyTheirDependents) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  struct Plant {
    const char* tensor;
    std::int64_t row, head, x;
    float value;
  };
  const Plant plants[] = {{"q", 100, 1, 5, nan}, {"k", 90, 0, 7, nan}, {"v", 130, 1, 2, nan},
                          {"dout", 120, 3, 1, nan}, {"q", 60, 2, 0, inf}, {"k", 40, 1, 3, -inf},
                          {"v", 150, 0, 9, inf}};
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (const Plant& plant : plants) {
      Problem p(21, dtype);
      Tensor dout = testing::random_tensor(dtype, p.b, p.sq, p.hq, p.d, 22);
      Tensor& target = std::string(plant.tensor) == "q"   ? p.q
                       : std::string(plant.tensor) == "k" ? p.k
                       : std::string(plant.tensor) == "v" ? p.v
                                                          : dout;
      for (std::int64_t ib = 0; ib < p.b; ++ib) {
        if (dtype == DType::kF32) {
          target.view().row<float>(ib, plant.row, plant.head)[plant.x] = plant.value;
        } else {
          target.view().row<bf16_bits>(ib, plant.row, plant.head)[plant.x] = float_to_bf16(plant.value);
        }
      }
      AttentionOptions opt = causal_bottom_right(p);
      opt.mask.window_left = 70;
      opt.block_m = 16;
      opt.block_n = 32;
      const auto ref = reference::forward(p.q.view(), p.k.view(), p.v.view(), opt);
      const auto ref_grad = reference::backward(p.q.view(), p.k.view(), p.v.view(), dout.view(), opt);
      std::int64_t reached = 0;
      for (const auto* t : {&ref.out, &ref.lse, &ref_grad.dq, &ref_grad.dk, &ref_grad.dv})
        for (double x : *t) reached += std::isfinite(x) ? 0 : 1;
      ASSERT_GT(reached, 0) << plant.tensor << ": the planted value should reach some output";
      const double ftol = testing::forward_tolerance(p.d, p.sk, ref.max_abs_score);
      const double btol = testing::backward_tolerance(p.d, p.sk, ref.max_abs_score);
      for (kernels::Isa isa : testing::isas_under_test()) {
        opt.isa = isa;
        const std::string where = std::string(plant.tensor) + " " + std::to_string(plant.value) + " " +
                                  std::string(dtype_name(dtype)) + " " + kernels::isa_name(isa);
        const auto r = run_forward(p.q.view(), p.k.view(), p.v.view(), opt);
        EXPECT_LE(testing::relative_error(r.out.view(), ref.out), ftol) << where;
        EXPECT_LE(testing::lse_error(r.lse.view(), ref.lse), ftol) << where;
        const Gradients g = attention_backward(p.q.view(), p.k.view(), p.v.view(), r.out.view(), r.lse.view(),
                                               dout.view(), opt);
        EXPECT_LE(testing::relative_error(g.dq.view(), ref_grad.dq), btol) << where;
        EXPECT_LE(testing::relative_error(g.dk.view(), ref_grad.dk), btol) << where;
        EXPECT_LE(testing::relative_error(g.dv.view(), ref_grad.dv), btol) << where;
      }
    }
  }
}

// The cases the check got wrong before: a NaN in a row of q whose other scores are masked
// (the row max dropped it, the row looked empty: O = 0, lse = -inf) must give that row NaN
// and leave every other query row finite, in the forward and in dQ.
TEST(Properties, NanScoreIsNotAnEmptyRow) {
  Problem p;
  AttentionOptions opt = causal_bottom_right(p);
  opt.block_m = 32;
  opt.block_n = 32;
  const std::int64_t row = 5;  // sees keys 0..25: the rest of its tile is masked (-inf)
  p.q.view().row<float>(0, row, 0)[3] = std::numeric_limits<float>::quiet_NaN();
  Tensor dout = testing::random_tensor(DType::kF32, p.b, p.sq, p.hq, p.d, 23);
  for (kernels::Isa isa : testing::isas_under_test()) {
    opt.isa = isa;
    const auto r = run_forward(p.q.view(), p.k.view(), p.v.view(), opt);
    const Gradients g = attention_backward(p.q.view(), p.k.view(), p.v.view(), r.out.view(), r.lse.view(),
                                           dout.view(), opt);
    for (std::int64_t ib = 0; ib < p.b; ++ib)
      for (std::int64_t ih = 0; ih < p.hq; ++ih)
        for (std::int64_t is = 0; is < p.sq; ++is) {
          const bool poisoned = ib == 0 && ih == 0 && is == row;
          ASSERT_EQ(std::isnan(r.lse.view().row(ib, ih)[is]), poisoned) << kernels::isa_name(isa) << " row " << is;
          for (std::int64_t x = 0; x < p.d; ++x) {
            ASSERT_EQ(std::isnan(r.out.view().row<float>(ib, is, ih)[x]), poisoned) << kernels::isa_name(isa);
            ASSERT_EQ(std::isnan(g.dq.view().row<float>(ib, is, ih)[x]), poisoned) << kernels::isa_name(isa);
          }
        }
  }
}

// A NaN partial result survives merging from either side; an empty one stays the identity.
TEST(Properties, MergeKeepsNan) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor a(DType::kF32, 1, 3, 1, 2), b(DType::kF32, 1, 3, 1, 2);
  RowStats la(1, 1, 3), lb(1, 1, 3);
  const float a_out[] = {nan, nan, 1, 2, 0, 0}, b_out[] = {3, 4, nan, nan, 5, 6};
  const float a_lse[] = {nan, 0.5f, kNegInf}, b_lse[] = {0.25f, nan, nan};
  std::memcpy(a.data<float>(), a_out, sizeof(a_out));
  std::memcpy(b.data<float>(), b_out, sizeof(b_out));
  std::memcpy(la.data(), a_lse, sizeof(a_lse));
  std::memcpy(lb.data(), b_lse, sizeof(b_lse));
  kernels::merge_partials(a.view(), la.view(), b.view(), lb.view());
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(std::isnan(la.data()[i])) << i;
    for (int x = 0; x < 2; ++x) EXPECT_TRUE(std::isnan(a.data<float>()[i * 2 + x])) << i;
  }
}

TEST(Properties, RunTwiceIsBitwiseIdentical) {
  Problem p;
  AttentionOptions opt = causal_bottom_right(p);
  opt.mask.window_left = 60;
  Tensor dout = testing::random_tensor(DType::kF32, p.b, p.sq, p.hq, p.d, 61);
  auto once = [&] {
    auto f = run_forward(p.q.view(), p.k.view(), p.v.view(), opt);
    auto g = attention_backward(p.q.view(), p.k.view(), p.v.view(), f.out.view(), f.lse.view(), dout.view(), opt);
    return std::pair{std::move(f), std::move(g)};
  };
  for (int threads : {1, 2, 3}) {
    opt.threads = threads;
    const auto [f1, g1] = once();
    const auto [f2, g2] = once();
    EXPECT_TRUE(testing::bitwise_equal(f1.out.view(), f2.out.view())) << threads;
    EXPECT_TRUE(testing::bitwise_equal(f1.lse.view(), f2.lse.view())) << threads;
    EXPECT_TRUE(testing::bitwise_equal(g1.dq.view(), g2.dq.view())) << threads;
    EXPECT_TRUE(testing::bitwise_equal(g1.dk.view(), g2.dk.view())) << threads;
    EXPECT_TRUE(testing::bitwise_equal(g1.dv.view(), g2.dv.view())) << threads;
  }
}

// Results do not depend on the thread count, bit for bit, on every implementation: every
// output has one writer per tile and a fixed summation order (the fused route adds dQ terms
// in key-block order whichever thread computed them).
TEST(Properties, ThreadCountDoesNotChangeResults) {
  Problem p;
  AttentionOptions opt = causal_bottom_right(p);
  opt.mask.window_left = 90;
  opt.block_m = 32;
  opt.block_n = 16;
  Tensor dout = testing::random_tensor(DType::kF32, p.b, p.sq, p.hq, p.d, 63);
  for (kernels::Isa isa : testing::isas_under_test()) {
    opt.isa = isa;
    opt.threads = 1;
    const auto f1 = run_forward(p.q.view(), p.k.view(), p.v.view(), opt);
    const auto g1 = attention_backward(p.q.view(), p.k.view(), p.v.view(), f1.out.view(), f1.lse.view(), dout.view(), opt);
    for (int threads : {2, 3, 5}) {
      opt.threads = threads;
      const std::string where = kernels::isa_name(isa) + " threads " + std::to_string(threads);
      const auto f = run_forward(p.q.view(), p.k.view(), p.v.view(), opt);
      const auto g = attention_backward(p.q.view(), p.k.view(), p.v.view(), f.out.view(), f.lse.view(), dout.view(), opt);
      EXPECT_TRUE(testing::bitwise_equal(f.out.view(), f1.out.view())) << where;
      EXPECT_TRUE(testing::bitwise_equal(f.lse.view(), f1.lse.view())) << where;
      EXPECT_TRUE(testing::bitwise_equal(g.dq.view(), g1.dq.view())) << where;
      EXPECT_TRUE(testing::bitwise_equal(g.dk.view(), g1.dk.view())) << where;
      EXPECT_TRUE(testing::bitwise_equal(g.dv.view(), g1.dv.view())) << where;
    }
  }
}


// The fused bf16 route widens its tiles to fp32 and runs the fp32 route's products
// (TileOps::fused_bf16), so on every implementation that takes it, bf16 inputs give bit for
// bit what the fp32 route gives on the same values stored as fp32: O, lse, a continuation over
// key chunks, and every gradient, with GQA, a causal window (partial tiles), ragged tiles and
// odd head dims. A wrong stride, a tile widened from the wrong rows or a product left on the
// bf16 data shows up as a difference; the sweep checks both routes against the double reference.
TEST(Properties, FusedBf16RouteIsTheFp32RouteOnWidenedValues) {
  auto widened = [](const Tensor& t) {
    Tensor w(DType::kF32, t.view().b, t.view().s, t.view().h, t.view().d);
    const auto n = static_cast<std::size_t>(t.view().numel());
    for (std::size_t i = 0; i < n; ++i) w.data<float>()[i] = bf16_to_float(t.data<bf16_bits>()[i]);
    return w;
  };
  // Keys [first, first + n) of a [b, s, h, d] tensor of either dtype.
  auto keys = [](const TensorView& t, std::int64_t first, std::int64_t n) {
    TensorView s = t;
    s.data = static_cast<char*>(t.data) + first * t.stride_s * static_cast<std::int64_t>(dtype_size(t.dtype));
    s.s = n;
    return s;
  };
  int tested = 0;
  for (kernels::Isa isa : testing::isas_under_test()) {
    if (!kernels::detail::fused_route(kernels::tile_ops(isa), DType::kBF16)) continue;
    ++tested;
    for (auto [d, bm, bn] : {std::tuple{48, 0, 0}, {7, 40, 24}, {33, 16, 7}}) {
      const std::int64_t b = 2, sq = 150, sk = 170, hq = 4, hkv = 2;
      const Tensor q = testing::random_tensor(DType::kBF16, b, sq, hq, d, 71);
      const Tensor k = testing::random_tensor(DType::kBF16, b, sk, hkv, d, 72);
      const Tensor v = testing::random_tensor(DType::kBF16, b, sk, hkv, d, 73);
      const Tensor dout = testing::random_tensor(DType::kBF16, b, sq, hq, d, 74);
      const Tensor qw = widened(q), kw = widened(k), vw = widened(v), doutw = widened(dout);
      AttentionOptions opt;
      opt.mask = {true, 60, -1, {}};
      opt.q_pos.offset = sk - sq;
      opt.threads = 2;
      opt.block_m = bm;
      opt.block_n = bn;
      opt.isa = isa;
      const std::string where = kernels::isa_name(isa) + " d " + std::to_string(d) + " tile " + std::to_string(bm) +
                                "x" + std::to_string(bn);
      const auto f16 = run_forward(q.view(), k.view(), v.view(), opt);
      const auto f32 = run_forward(qw.view(), kw.view(), vw.view(), opt);
      EXPECT_TRUE(testing::bitwise_equal(f16.out.view(), f32.out.view())) << where;
      EXPECT_TRUE(testing::bitwise_equal(f16.lse.view(), f32.lse.view())) << where;
      const auto g16 = attention_backward(q.view(), k.view(), v.view(), f16.out.view(), f16.lse.view(), dout.view(), opt);
      const auto g32 =
          attention_backward(qw.view(), kw.view(), vw.view(), f32.out.view(), f32.lse.view(), doutw.view(), opt);
      EXPECT_TRUE(testing::bitwise_equal(g16.dq.view(), g32.dq.view())) << where;
      EXPECT_TRUE(testing::bitwise_equal(g16.dk.view(), g32.dk.view())) << where;
      EXPECT_TRUE(testing::bitwise_equal(g16.dv.view(), g32.dv.view())) << where;
      // The running state over two key chunks, the second first (as a ring visits them).
      std::vector<ForwardOutputs> states;
      for (const Tensor* t : {&q, &qw}) {
        states.push_back({Tensor(DType::kF32, b, sq, hq, d), RowStats(b, hq, sq)});
        kernels::init_forward_state(states.back().out.view(), states.back().lse.view());
        const bool bf16 = t == &q;
        for (auto [first, n] : {std::pair<std::int64_t, std::int64_t>{100, sk - 100}, {0, 100}}) {
          AttentionOptions part = opt;
          part.k_pos.offset = first;
          kernels::attention_forward_continue(t->view(), keys((bf16 ? k : kw).view(), first, n),
                                              keys((bf16 ? v : vw).view(), first, n), states.back().out.view(),
                                              states.back().lse.view(), part);
        }
      }
      EXPECT_TRUE(testing::bitwise_equal(states[0].out.view(), states[1].out.view())) << where << " continued";
      EXPECT_TRUE(testing::bitwise_equal(states[0].lse.view(), states[1].lse.view())) << where << " continued";
    }
  }
  if (tested == 0) GTEST_SKIP() << "no implementation takes the fused bf16 route on this processor";
}

}  // namespace
}  // namespace burst
