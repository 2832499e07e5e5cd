// Building blocks: the vectorised exp, online softmax and bf16 conversions of every
// instruction set, tile classification, the error measure, the thread pool and the .npy
// reader against hostile files.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <thread>

#include "burst/attention.h"
#include "burst/npy.h"
#include "burst/error.h"
#include "core/cpu.h"
#include "core/thread_pool.h"
#include "kernels/detail.h"
#include "kernels/tile_ops.h"
#include "reference/compare.h"
#include "support.h"

namespace burst {
namespace {

using kernels::Isa;

// exp is within 3 units in the last place of the double-precision value on [-87.3, 88].
TEST(TileOps, ExpAccuracy) {
  std::vector<float> x;
  for (float t = -87.3f; t <= 88.0f; t += 0.0137f) x.push_back(t);
  for (float t = -1.0f; t <= 1.0f; t += 1e-4f) x.push_back(t);
  x.push_back(0.0f);
  x.push_back(-0.0f);
  std::vector<float> y(x.size());
  for (Isa isa : testing::isas_under_test()) {
    kernels::tile_ops(isa).exp(x.data(), y.data(), static_cast<std::int64_t>(x.size()));
    double worst = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double ref = std::exp(static_cast<double>(x[i]));
      const double ulp = std::ldexp(1.0, std::ilogb(ref) - 23);
      worst = std::max(worst, std::fabs(y[i] - ref) / ulp);
    }
    EXPECT_LE(worst, 3.0) << kernels::isa_name(isa);
  }
}

TEST(TileOps, ExpEdgeValues) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> x = {-inf, -1e30f, -200.0f, -87.5f, -88.0f, 0.0f};
  const std::vector<float> expect = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 1.0f};
  std::vector<float> y(x.size());
  for (Isa isa : testing::isas_under_test()) {
    kernels::tile_ops(isa).exp(x.data(), y.data(), static_cast<std::int64_t>(x.size()));
    for (std::size_t i = 0; i < x.size(); ++i) EXPECT_EQ(y[i], expect[i]) << x[i];
  }
}

// NaN in, NaN out, on every instruction set (it used to reach an undefined float-to-int
// conversion), and the online softmax does not mistake a row of NaN and masked scores for an
// empty row, whatever lane the NaN falls in.
TEST(TileOps, NanPropagates) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (Isa isa : testing::isas_under_test()) {
    const auto& ops = kernels::tile_ops(isa);
    std::vector<float> x(37, nan), y(37, 0.0f);
    ops.exp(x.data(), y.data(), 37);
    for (float v : y) ASSERT_TRUE(std::isnan(v)) << kernels::isa_name(isa);
    for (int cols : {1, 15, 16, 17, 40}) {
      for (int at = 0; at < cols; ++at) {
        // Row 0: one NaN among masked scores; row 1: one NaN among finite ones; row 2: masked.
        std::vector<float> s(static_cast<std::size_t>(3 * cols), -inf);
        for (int j = 0; j < cols; ++j) s[static_cast<std::size_t>(cols + j)] = 0.1f * static_cast<float>(j);
        s[static_cast<std::size_t>(at)] = nan;
        s[static_cast<std::size_t>(cols + at)] = nan;
        float row_max[3] = {-inf, -inf, -inf}, row_sum[3] = {0, 0, 0}, factor[3];
        ops.online_softmax(s.data(), cols, 3, cols, row_max, row_sum, factor);
        EXPECT_TRUE(std::isnan(row_sum[0]) && std::isnan(factor[0])) << kernels::isa_name(isa) << " " << cols << " " << at;
        EXPECT_TRUE(std::isnan(row_sum[1])) << kernels::isa_name(isa) << " " << cols << " " << at;
        EXPECT_EQ(row_sum[2], 0.0f);
        EXPECT_EQ(factor[2], 1.0f);
        // A NaN state stays NaN through a later tile, even a fully masked one.
        std::vector<float> later(static_cast<std::size_t>(3 * cols), -inf);
        ops.online_softmax(later.data(), cols, 3, cols, row_max, row_sum, factor);
        EXPECT_TRUE(std::isnan(row_sum[0]) && std::isnan(row_max[0])) << kernels::isa_name(isa);
      }
    }
  }
}

TEST(TileOps, Bf16ConversionsMatchScalar) {
  std::mt19937 gen(3);
  std::vector<float> x(4099);
  for (float& v : x) v = std::bit_cast<float>(static_cast<std::uint32_t>(gen()));  // any bits: NaN, inf, subnormal
  x[0] = std::numeric_limits<float>::quiet_NaN();
  x[1] = -std::numeric_limits<float>::infinity();
  std::vector<bf16_bits> b(x.size());
  std::vector<float> back(x.size());
  for (Isa isa : testing::isas_under_test()) {
    const auto& ops = kernels::tile_ops(isa);
    ops.f32_to_bf16(x.data(), b.data(), static_cast<std::int64_t>(x.size()));
    ops.bf16_to_f32(b.data(), back.data(), static_cast<std::int64_t>(x.size()));
    for (std::size_t i = 0; i < x.size(); ++i) {
      ASSERT_EQ(b[i], float_to_bf16(x[i])) << i;
      ASSERT_EQ(std::bit_cast<std::uint32_t>(back[i]), std::bit_cast<std::uint32_t>(bf16_to_float(b[i])));
    }
  }
  // Round to nearest even on a tie: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7.
  EXPECT_EQ(float_to_bf16(1.0f + 1.0f / 256), float_to_bf16(1.0f));
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
}

// The bf16 dot-product GEMM against a double computation on the same bf16 values, over ragged
// rows (micro-kernel remainders), columns (panel remainders), odd d and strided inputs.
TEST(TileOps, Bf16DotProductGemm) {
  const kernels::TileOps* ops = nullptr;
  for (Isa isa : testing::isas_under_test())
    if (kernels::tile_ops(isa).gemm_bf16_qkt != nullptr) ops = &kernels::tile_ops(isa);
  if (ops == nullptr) GTEST_SKIP() << "no bf16 dot-product implementation on this processor";
  std::mt19937 gen(9);
  std::normal_distribution<float> dist;
  for (int rows : {1, 7, 8, 9, 17}) {
    for (int cols : {1, 16, 31, 32, 33, 70}) {
      for (int d : {1, 2, 3, 8, 63, 128}) {
        const std::int64_t ld_q = d + 3, ld_k = d + 5, ld_s = cols + 2;
        std::vector<bf16_bits> q(static_cast<std::size_t>(rows * ld_q)), k(static_cast<std::size_t>(cols * ld_k));
        for (auto& x : q) x = float_to_bf16(dist(gen));
        for (auto& x : k) x = float_to_bf16(dist(gen));
        std::vector<std::uint32_t> packed(static_cast<std::size_t>(kernels::bf16_packed_words(cols, d)));
        std::vector<float> s(static_cast<std::size_t>(rows * ld_s), std::numeric_limits<float>::quiet_NaN());
        ops->pack_bf16_keys(k.data(), ld_k, cols, d, packed.data());
        ops->gemm_bf16_qkt(q.data(), ld_q, rows, packed.data(), cols, d, 0.5f, s.data(), ld_s);
        for (int i = 0; i < rows; ++i) {
          for (int j = 0; j < ld_s; ++j) {
            const float got = s[static_cast<std::size_t>(i * ld_s + j)];
            if (j >= cols) {  // padding columns are never written
              ASSERT_TRUE(std::isnan(got)) << rows << "x" << cols << "x" << d;
              continue;
            }
            double ref = 0.0, mag = 0.0;
            for (int x = 0; x < d; ++x) {
              const double p = static_cast<double>(bf16_to_float(q[static_cast<std::size_t>(i * ld_q + x)])) *
                               bf16_to_float(k[static_cast<std::size_t>(j * ld_k + x)]);
              ref += p;
              mag += std::fabs(p);
            }
            ASSERT_NEAR(got, 0.5 * ref, 0.5 * mag * d * 6e-8 + 1e-30) << rows << "x" << cols << "x" << d;
          }
        }
      }
    }
  }
}

TEST(TileOps, MaskMatchesDefinition) {
  std::vector<std::int64_t> qpos = {5, 0, 9, 3}, kpos = {0, 2, 4, 6, 8, 10, 3};
  for (kernels::MaskSpec mask : {kernels::MaskSpec{true, -1, -1, {}}, {false, 2, 1, {}}, {true, 3, -1, {}}, {false, 0, 0, {}}}) {
    for (Isa isa : testing::isas_under_test()) {
      std::vector<float> s(qpos.size() * kpos.size(), 1.0f);
      kernels::tile_ops(isa).apply_mask(s.data(), 7, 4, 7, qpos.data(), kpos.data(), mask, -3.0f);
      for (std::size_t i = 0; i < qpos.size(); ++i)
        for (std::size_t j = 0; j < kpos.size(); ++j)
          EXPECT_EQ(s[i * 7 + j], mask.visible(qpos[i], kpos[j]) ? 1.0f : -3.0f) << i << "," << j;
    }
  }
}

// The fused fp32 route's lanes-layout products (tile_ops.h) against double sums, over ragged
// row blocks, lane strips and d (micro-kernel remainders), strided b, with and without the
// rescale factor; elements past `lanes` and past nb / d rows are never written.
TEST(TileOps, LanesProductsMatchDouble) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::mt19937 gen(17);
  std::normal_distribution<float> dist;
  int tested = 0;
  for (Isa isa : testing::isas_under_test()) {
    const auto& ops = kernels::tile_ops(isa);
    if (ops.scores_lanes == nullptr) continue;
    ++tested;
    for (int nb : {1, 5, 6, 7, 13}) {
      for (int lanes : {16, 48, 64, 80}) {
        for (int d : {1, 5, 6, 7, 64}) {
          const std::int64_t ld_b = d + 3, ld = lanes + 16;
          std::vector<float> b(static_cast<std::size_t>(nb * ld_b)), a_t(static_cast<std::size_t>(d * ld)),
              t(static_cast<std::size_t>(nb * ld)), factor(static_cast<std::size_t>(lanes));
          for (auto* v : {&b, &a_t, &t, &factor})
            for (float& x : *v) x = dist(gen);
          // out = 0.5 b a_t  (nb x lanes)
          std::vector<float> out(static_cast<std::size_t>((nb + 1) * ld), nan);
          ops.scores_lanes(b.data(), ld_b, nb, a_t.data(), ld, lanes, d, 0.5f, out.data(), ld);
          for (int j = 0; j <= nb; ++j) {
            for (int i = 0; i < ld; ++i) {
              const float got = out[static_cast<std::size_t>(j * ld + i)];
              if (j == nb || i >= lanes) {
                ASSERT_TRUE(std::isnan(got)) << "wrote outside the tile " << nb << "x" << lanes << "x" << d;
                continue;
              }
              double ref = 0, mag = 0;
              for (int x = 0; x < d; ++x) {
                const double p = static_cast<double>(b[static_cast<std::size_t>(j * ld_b + x)]) * a_t[static_cast<std::size_t>(x * ld + i)];
                ref += p;
                mag += std::fabs(p);
              }
              ASSERT_NEAR(got, 0.5 * ref, 0.5 * mag * (d + 1) * 6e-8 + 1e-30) << kernels::isa_name(isa) << " scores " << nb << "x" << lanes << "x" << d;
            }
          }
          // c_t = c_t diag(factor) + b^T t  (d x lanes), c_t starting random
          for (bool with_factor : {false, true}) {
            std::vector<float> c(static_cast<std::size_t>((d + 1) * ld), nan), c0(c.size());
            for (int x = 0; x < d; ++x)
              for (int i = 0; i < lanes; ++i) c[static_cast<std::size_t>(x * ld + i)] = dist(gen);
            c0 = c;
            ops.accumulate_lanes(b.data(), ld_b, nb, d, t.data(), ld, lanes, with_factor ? factor.data() : nullptr,
                                 c.data(), ld);
            for (int x = 0; x <= d; ++x) {
              for (int i = 0; i < ld; ++i) {
                const std::size_t at = static_cast<std::size_t>(x * ld + i);
                if (x == d || i >= lanes) {
                  ASSERT_TRUE(std::isnan(c[at])) << "wrote outside the tile " << nb << "x" << lanes << "x" << d;
                  continue;
                }
                double ref = static_cast<double>(c0[at]) * (with_factor ? factor[static_cast<std::size_t>(i)] : 1.0f);
                double mag = std::fabs(ref);
                for (int j = 0; j < nb; ++j) {
                  const double p = static_cast<double>(b[static_cast<std::size_t>(j * ld_b + x)]) * t[static_cast<std::size_t>(j * ld + i)];
                  ref += p;
                  mag += std::fabs(p);
                }
                ASSERT_NEAR(c[at], ref, mag * (nb + 2) * 6e-8 + 1e-30) << kernels::isa_name(isa) << " accumulate " << nb << "x" << lanes << "x" << d;
              }
            }
          }
        }
      }
    }
  }
  if (tested == 0) GTEST_SKIP() << "no lanes-layout products on this processor (fp32 runs on the BLAS route)";
}

// The lanes exp keeps exp_approx's contract, seen through online_softmax_lanes on a tile whose
// first row is 0 (so the probabilities are exp(score)): within 3 ulp on [-87.3, 0], 0 below
// -87.336 and for -inf, NaN for NaN; a lane of -inf scores stays empty (p 0, factor 1).
TEST(TileOps, LanesExpAccuracyAndEdges) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<float> grid;
  for (float t = -87.3f; t <= 0.0f; t += 0.0073f) grid.push_back(t);
  for (float t = -1.0f; t <= 0.0f; t += 1e-4f) grid.push_back(t);
  grid.push_back(-0.0f);
  const int lanes = 16, n = static_cast<int>((grid.size() + lanes - 1) / lanes) + 1;
  grid.resize(static_cast<std::size_t>((n - 1) * lanes), 0.0f);
  for (Isa isa : testing::isas_under_test()) {
    const auto& ops = kernels::tile_ops(isa);
    if (ops.online_softmax_lanes == nullptr) continue;
    std::vector<float> s(static_cast<std::size_t>(lanes), 0.0f);
    s.insert(s.end(), grid.begin(), grid.end());
    std::vector<float> row_max(lanes, -inf), row_sum(lanes, 0.0f), factor(lanes);
    ops.online_softmax_lanes(s.data(), lanes, n, lanes, row_max.data(), row_sum.data(), factor.data());
    double worst = 0.0;
    for (std::size_t i = 0; i < grid.size(); ++i) {
      const double ref = std::exp(static_cast<double>(grid[i]));
      worst = std::max(worst, std::fabs(s[i + lanes] - ref) / std::ldexp(1.0, std::ilogb(ref) - 23));
    }
    EXPECT_LE(worst, 3.0) << kernels::isa_name(isa);
    // Edges, one per lane below a row of zeros; lane 8 holds -inf in both rows (empty).
    std::vector<float> edge = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, -inf, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f,
                               -inf, -1e30f, -200.0f, -87.5f, -88.0f, nan, 0.0f, -1.0f, -inf, -3.0f, -3.0f, -3.0f, -3.0f, -3.0f, -3.0f, -3.0f};
    std::fill(row_max.begin(), row_max.end(), -inf);
    std::fill(row_sum.begin(), row_sum.end(), 0.0f);
    ops.online_softmax_lanes(edge.data(), lanes, 2, lanes, row_max.data(), row_sum.data(), factor.data());
    for (int l = 0; l < 5; ++l) EXPECT_EQ(edge[static_cast<std::size_t>(lanes + l)], 0.0f) << kernels::isa_name(isa) << " lane " << l;
    EXPECT_TRUE(std::isnan(edge[lanes + 5]) && std::isnan(row_sum[5])) << kernels::isa_name(isa);
    EXPECT_EQ(edge[lanes + 6], 1.0f) << kernels::isa_name(isa);
    EXPECT_EQ(edge[8], 0.0f) << kernels::isa_name(isa);
    EXPECT_EQ(edge[lanes + 8], 0.0f) << kernels::isa_name(isa);
    EXPECT_EQ(row_max[8], -inf) << kernels::isa_name(isa);
    EXPECT_EQ(row_sum[8], 0.0f) << kernels::isa_name(isa);
    EXPECT_EQ(factor[8], 1.0f) << kernels::isa_name(isa);
  }
}

// The lanes online softmax gives what the row online softmax gives on the transposed tile,
// over two tiles (the state carries), with masked (-inf) scores, empty rows, and a NaN among
// masked scores and among finite ones, in every lane position.
TEST(TileOps, LanesSoftmaxMatchesRowSoftmax) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::mt19937 gen(23);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  const int queries = 32, keys = 21;
  auto close = [](float got, float want) {
    if (std::isnan(want)) return std::isnan(got);
    if (want == 0.0f || std::isinf(want)) return got == want;
    return std::fabs(got - want) <= 8e-7f * std::fabs(want);
  };
  for (Isa isa : testing::isas_under_test()) {
    const auto& ops = kernels::tile_ops(isa);
    if (ops.online_softmax_lanes == nullptr) continue;
    for (int at = 0; at < queries; ++at) {
      float max_r[queries], sum_r[queries], f_r[queries], max_l[queries], sum_l[queries], f_l[queries];
      for (int i = 0; i < queries; ++i) {
        max_r[i] = max_l[i] = -inf;
        sum_r[i] = sum_l[i] = 0.0f;
      }
      for (int tile = 0; tile < 2; ++tile) {
        std::vector<float> rows(static_cast<std::size_t>(queries * keys));  // queries x keys
        for (int i = 0; i < queries; ++i) {
          for (int j = 0; j < keys; ++j) {
            float x = dist(gen);
            if (i % 4 == 1 && j % 3 != 0) x = -inf;  // partly masked rows
            if (i % 4 == 2) x = -inf;                // rows empty in this tile
            rows[static_cast<std::size_t>(i * keys + j)] = x;
          }
        }
        if (tile == 0) {
          rows[static_cast<std::size_t>(at * keys + at % keys)] = nan;  // NaN in row `at`
          rows[static_cast<std::size_t>(((at + 2) % queries) * keys + 5)] = nan;
        }
        std::vector<float> lanes(static_cast<std::size_t>(keys * queries));  // keys x queries
        for (int i = 0; i < queries; ++i)
          for (int j = 0; j < keys; ++j)
            lanes[static_cast<std::size_t>(j * queries + i)] = rows[static_cast<std::size_t>(i * keys + j)];
        ops.online_softmax(rows.data(), keys, queries, keys, max_r, sum_r, f_r);
        ops.online_softmax_lanes(lanes.data(), queries, keys, queries, max_l, sum_l, f_l);
        for (int i = 0; i < queries; ++i) {
          const std::string where = kernels::isa_name(isa) + " NaN at " + std::to_string(at) + " tile " +
                                    std::to_string(tile) + " query " + std::to_string(i);
          ASSERT_TRUE(close(sum_l[i], sum_r[i])) << where << ": sum " << sum_l[i] << " vs " << sum_r[i];
          // A poisoned row (NaN sum, for good) keeps no meaningful max, factor or
          // probabilities: the row max drops NaN in either order, so they may differ.
          if (std::isnan(sum_r[i])) continue;
          ASSERT_TRUE(close(max_l[i], max_r[i])) << where << ": max " << max_l[i] << " vs " << max_r[i];
          ASSERT_TRUE(close(f_l[i], f_r[i])) << where << ": factor " << f_l[i] << " vs " << f_r[i];
          for (int j = 0; j < keys; ++j) {
            const float want = rows[static_cast<std::size_t>(i * keys + j)];
            const float got = lanes[static_cast<std::size_t>(j * queries + i)];
            ASSERT_TRUE(close(got, want)) << where << " key " << j << ": " << got << " vs " << want;
          }
        }
      }
    }
  }
}

// probs_and_ds_lanes gives what its separate steps give (scores_lanes twice, probs_from_lse,
// ds_from_dp): the same sums, exp within a few ulp, the same zeros and NaN; rows with
// lse = -inf get P = 0 and rows with lse NaN get NaN. Ragged rows, lanes and d.
TEST(TileOps, ProbsAndDsMatchTheirSeparateSteps) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::mt19937 gen(37);
  std::normal_distribution<float> dist;
  int tested = 0;
  for (Isa isa : testing::isas_under_test()) {
    const auto& ops = kernels::tile_ops(isa);
    if (ops.probs_and_ds_lanes == nullptr) continue;
    ++tested;
    for (int nb : {1, 5, 6, 7, 13}) {
      for (int lanes : {16, 32, 48, 80}) {
        for (int d : {1, 7, 64}) {
          const std::int64_t ld_b = d + 5, ld = lanes + 16;
          std::vector<float> b1(static_cast<std::size_t>(nb * ld_b)), b2(b1.size()), a1(static_cast<std::size_t>(d * ld)),
              a2(a1.size()), lse(static_cast<std::size_t>(nb)), delta(lse.size());
          for (auto* v : {&b1, &b2, &a1, &a2, &delta})
            for (float& x : *v) x = dist(gen);
          for (float& x : lse) x = 2.0f + dist(gen);
          lse[0] = -inf;
          if (nb > 2) lse[2] = nan;
          std::vector<float> p_want(static_cast<std::size_t>(nb * ld), nan), ds_want(p_want), p_got(p_want), ds_got(p_want);
          ops.scores_lanes(b1.data(), ld_b, nb, a1.data(), ld, lanes, d, 0.3f, p_want.data(), ld);
          ops.scores_lanes(b2.data(), ld_b, nb, a2.data(), ld, lanes, d, 1.0f, ds_want.data(), ld);
          ops.probs_from_lse(p_want.data(), ld, nb, lanes, lse.data());
          ops.ds_from_dp(ds_want.data(), ld, p_want.data(), ld, nb, lanes, delta.data());
          ops.probs_and_ds_lanes(b1.data(), ld_b, b2.data(), ld_b, nb, a1.data(), a2.data(), ld, lanes, d, 0.3f,
                                 lse.data(), delta.data(), p_got.data(), ds_got.data(), ld);
          for (std::size_t i = 0; i < p_want.size(); ++i) {
            for (auto [got, want] : {std::pair{p_got[i], p_want[i]}, std::pair{ds_got[i], ds_want[i]}}) {
              if (std::isnan(want)) {
                ASSERT_TRUE(std::isnan(got)) << kernels::isa_name(isa) << " at " << i;
              } else {
                // Both exps lie within 3 ulp of exp, so within 6 ulp (< 1.5e-6 relative) of each other.
                ASSERT_NEAR(got, want, 1.5e-6f * std::fabs(want) + 1e-30f)
                    << kernels::isa_name(isa) << " " << nb << "x" << lanes << "x" << d << " at " << i;
              }
            }
          }
        }
      }
    }
  }
  if (tested == 0) GTEST_SKIP() << "no fused probs_and_ds on this processor";
}

// The mask seen from keys (lanes layout) selects exactly the pairs the mask selects.
TEST(Detail, TransposedMaskSelectsTheSamePairs) {
  std::mt19937 gen(31);
  std::uniform_int_distribution<int> pos(0, 30), win(-1, 9);
  for (int trial = 0; trial < 20000; ++trial) {
    const kernels::MaskSpec mask{gen() % 2 == 0, win(gen), win(gen), {}};
    const kernels::MaskSpec t = kernels::detail::transposed_mask(mask);
    const int q = pos(gen), k = pos(gen);
    ASSERT_EQ(t.visible(k, q), mask.visible(q, k))
        << "causal " << mask.causal << " window " << mask.window_left << "," << mask.window_right << " q " << q << " k " << k;
  }
}

// Says which route fp32 and bf16 take on every implementation this host runs, so the test
// output shows which ones the kernel tests exercised: bf16 takes the AMX route on the AMX
// implementations; fp32 the fused route wherever the instruction set has the lanes products,
// bf16 (widened) only on avx512bf16; the rest take BLAS tiles (all of them BLAS with
// BURST_FP32_ROUTE=blas).
TEST(Kernels, RouteOfEveryImplementation) {
  using kernels::detail::Route;
  const char* forced = std::getenv("BURST_FP32_ROUTE");
  const bool forced_blas = forced != nullptr && std::string(forced) == "blas";
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    std::string lists[3];  // by Route
    for (Isa isa : testing::isas_under_test()) {
      const auto& ops = kernels::tile_ops(isa);
      const Route route = kernels::detail::route_of(ops, dtype);
      std::string& list = lists[static_cast<int>(route)];
      list.append(list.empty() ? "" : ", ").append(kernels::isa_name(isa));
      const bool amx = isa == Isa::kAmxBf16 || isa == Isa::kAmxBf16Emulated;
      EXPECT_EQ(ops.amx != nullptr, amx) << kernels::isa_name(isa);
      const bool lanes = ops.scores_lanes != nullptr && ops.accumulate_lanes != nullptr;
      Route want = Route::kBlas;
      if (!forced_blas && dtype == DType::kBF16 && amx) {
        want = Route::kAmx;
      } else if (!forced_blas && lanes && (dtype == DType::kF32 || isa == Isa::kAvx512Bf16)) {
        want = Route::kFused;
      }
      EXPECT_EQ(route, want) << kernels::isa_name(isa) << " " << dtype_name(dtype);
    }
    std::printf("%s route: AMX tiles on [%s], fused on [%s], BLAS tiles on [%s]\n", std::string(dtype_name(dtype)).c_str(),
                lists[static_cast<int>(Route::kAmx)].c_str(), lists[static_cast<int>(Route::kFused)].c_str(),
                lists[static_cast<int>(Route::kBlas)].c_str());
  }
}

// AMX-BF16 detection agrees with the kernel's view of the processor (/proc/cpuinfo), the
// amxbf16 implementation is supported exactly where Linux granted the tile state, and neither
// AMX implementation is what auto picks. The test output says whether the AMX route ran on the
// processor's tile instructions here or only emulated (src/kernels/README.md, "AMX").
TEST(Kernels, AmxBf16DetectionAgreesWithTheOs) {
  const kernels::AmxStatus& amx = kernels::amx_bf16_status();
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  bool listed = false, found_flags = false;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    found_flags = true;
    listed = line.find(" amx_bf16") != std::string::npos && line.find(" amx_tile") != std::string::npos;
    break;
  }
  if (found_flags) {
    EXPECT_EQ(amx.cpu && amx.os, listed) << amx.why;
  }
  EXPECT_TRUE(!amx.permitted || (amx.cpu && amx.os));
  bool hardware = false, emulated = false;
  for (Isa isa : testing::isas_under_test()) {
    hardware |= isa == Isa::kAmxBf16;
    emulated |= isa == Isa::kAmxBf16Emulated;
  }
  const bool avx512bf16 = cpu_features().has_avx512_kernels() && cpu_features().avx512bf16;
  EXPECT_EQ(hardware, amx.permitted && avx512bf16);
  EXPECT_EQ(emulated, avx512bf16);
  EXPECT_FALSE(kernels::chosen_by_auto(Isa::kAmxBf16));
  EXPECT_FALSE(kernels::chosen_by_auto(Isa::kAmxBf16Emulated));
  const Isa chosen = kernels::resolve_isa(Isa::kAuto);
  if (std::getenv("BURST_ISA") == nullptr) {
    EXPECT_TRUE(kernels::chosen_by_auto(chosen)) << kernels::isa_name(chosen);
  }
  if (hardware) {
    std::printf("AMX-BF16: %s; the AMX route ran on the processor's tile instructions (amxbf16) and emulated "
                "(amxbf16-emulated)\n", amx.why.c_str());
  } else {
    std::printf("AMX-BF16: %s; the AMX route's hardware path (amxbf16) was NOT exercised on this machine%s\n",
                amx.why.c_str(),
                emulated ? "; only its emulation ran (amxbf16-emulated: the same code, the tile instructions in plain C++)"
                         : ", nor its emulation (amxbf16-emulated needs AVX-512 with avx512_bf16)");
  }
}

// classify() may only claim "none" or "full" when every pair agrees.
TEST(Detail, ClassifyIsSound) {
  std::mt19937 gen(5);
  std::uniform_int_distribution<int> pos(0, 40), win(-1, 12);
  for (int trial = 0; trial < 20000; ++trial) {
    kernels::MaskSpec mask{gen() % 2 == 0, win(gen), win(gen), {}};
    int q0 = pos(gen), q1 = q0 + pos(gen) % 6, k0 = pos(gen), k1 = k0 + pos(gen) % 6;
    const auto vis = kernels::detail::classify(mask, q0, q1, k0, k1);
    int visible = 0, total = 0;
    for (int q = q0; q <= q1; ++q)
      for (int k = k0; k <= k1; ++k, ++total) visible += mask.visible(q, k);
    if (vis == kernels::detail::TileVisibility::kNone) {
      ASSERT_EQ(visible, 0);
    }
    if (vis == kernels::detail::TileVisibility::kFull) {
      ASSERT_EQ(visible, total);
    }
  }
}

// The error measure (reference/compare.h): non-finite values compared by position and kind.
TEST(ErrorMeasure, NonFiniteValuesComparedByPosition) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  auto error = [](std::initializer_list<std::pair<double, double>> pairs) {
    reference::NormwiseError e;
    for (auto [got, want] : pairs) e.add(got, want);
    return e.error();
  };
  EXPECT_NEAR(error({{1.0, 1.0}, {nan, nan}, {inf, inf}, {2.1, 2.0}}), 0.05, 1e-12);
  EXPECT_EQ(error({{1.0, 1.0}, {nan, 0.5}}), inf);   // NaN where the reference is finite
  EXPECT_EQ(error({{1.0, 1.0}, {0.5, nan}}), inf);   // finite where the reference is NaN
  EXPECT_EQ(error({{1.0, 1.0}, {inf, nan}}), inf);   // different non-finite values
  EXPECT_EQ(error({{1.0, 1.0}, {-inf, inf}}), inf);
  EXPECT_EQ(reference::lse_error(-inf, -inf), 0.0);
  EXPECT_EQ(reference::lse_error(nan, nan), 0.0);
  EXPECT_EQ(reference::lse_error(-inf, nan), inf);
  EXPECT_EQ(reference::lse_error(1.0, nan), inf);
}

// Gradients that are exactly zero (a window of (0, 0): every row sees only its own key, so
// dS = P (dP - delta) = 0; or a single key) pass with the floor on every instruction set,
// while a wrong dq of relative size 1e-3 still fails the CLI's 1e-4, also on a long
// bidirectional problem whose true dq is far below the size of one term (checked on 64 rows
// spread over the sequence, as the CLI samples them).
TEST(ErrorMeasure, GradientFloorPassesExactZerosAndCatchesBugs) {
  constexpr double kCliTolerance = 1e-4;
  for (std::int64_t s : {1, 300}) {
    const std::int64_t d = 128;
    Tensor q = testing::random_tensor(DType::kF32, 1, s, 2, d, 71), k = testing::random_tensor(DType::kF32, 1, s, 2, d, 72),
           v = testing::random_tensor(DType::kF32, 1, s, 2, d, 73), dout = testing::random_tensor(DType::kF32, 1, s, 2, d, 74);
    kernels::AttentionOptions opt;
    opt.mask = {false, 0, 0, {}};
    const auto ref = reference::backward(q.view(), k.view(), v.view(), dout.view(), opt);
    for (double x : ref.dq) ASSERT_EQ(x, 0.0);
    const auto floors = testing::gradient_floors(q.view(), k.view(), v.view(), dout.view(), 1.0 / std::sqrt(double{d}));
    for (Isa isa : testing::isas_under_test()) {
      opt.isa = isa;
      const ForwardOutputs f = attention_forward(q.view(), k.view(), v.view(), opt, DType::kF32);
      const Gradients g = attention_backward(q.view(), k.view(), v.view(), f.out.view(), f.lse.view(), dout.view(), opt);
      EXPECT_LE(testing::relative_error(g.dq.view(), ref.dq, floors.dq), kCliTolerance) << s << " " << kernels::isa_name(isa);
      EXPECT_LE(testing::relative_error(g.dk.view(), ref.dk, floors.dk), kCliTolerance) << s << " " << kernels::isa_name(isa);
      EXPECT_LE(testing::relative_error(g.dv.view(), ref.dv, floors.dv), kCliTolerance) << s << " " << kernels::isa_name(isa);
    }
  }
  for (bool causal : {true, false}) {
    const std::int64_t s = causal ? 2048 : 16384, d = 128;
    Tensor q = testing::random_tensor(DType::kF32, 1, s, 1, d, 81), k = testing::random_tensor(DType::kF32, 1, s, 1, d, 82),
           v = testing::random_tensor(DType::kF32, 1, s, 1, d, 83), dout = testing::random_tensor(DType::kF32, 1, s, 1, d, 84);
    kernels::AttentionOptions opt;
    opt.mask.causal = causal;
    std::vector<std::int64_t> rows;
    for (std::int64_t i = 0; i < 64; ++i) rows.push_back(i * (s - 1) / 63);
    const std::vector<double> ref = reference::backward_dq_rows(q.view(), k.view(), v.view(), dout.view(), opt, rows);
    const double floor =
        testing::gradient_floors(q.view(), k.view(), v.view(), dout.view(), 1.0 / std::sqrt(double{d})).dq;
    double largest = 0.0;
    for (double x : ref) largest = std::max(largest, std::fabs(x));
    reference::NormwiseError wrong;
    for (std::size_t i = 0; i < ref.size(); ++i) wrong.add(i == 500 ? ref[i] + 1e-3 * largest : ref[i], ref[i]);
    EXPECT_GT(wrong.error(floor), kCliTolerance) << "causal " << causal << ": max |dq| " << largest << ", floor " << floor;
  }
}

TEST(ThreadPool, RunsEveryTaskOnceAndPropagatesErrors) {
  for (int threads : {1, 2, 5}) {
    ThreadPool pool(threads);
    std::vector<std::atomic<int>> hits(1000);
    pool.parallel_for(1000, [&](std::int64_t t, int w) {
      ASSERT_GE(w, 0);
      ASSERT_LT(w, threads);
      hits[static_cast<std::size_t>(t)]++;
    });
    for (auto& h : hits) ASSERT_EQ(h.load(), 1);
    EXPECT_THROW(pool.parallel_for(100, [](std::int64_t t, int) {
      if (t == 37) throw Error("task 37 failed");
    }), Error);
    // Still usable after an error.
    std::atomic<int> n{0};
    pool.parallel_for(10, [&](std::int64_t, int) { ++n; });
    EXPECT_EQ(n.load(), 10);
  }
}

// A kernel call allocates per-thread tile workspaces only: the same extra memory at any
// sequence length, never anything that grows with seqlen_q x seqlen_k.
// Freed large buffers are handed out again to a request of their size, counted as cached
// (not in use) meanwhile; release_cached_buffers returns them.
TEST(Memory, LargeBuffersAreReused) {
  release_cached_buffers();
  const std::size_t big = 2 * kLargeBuffer;
  const std::size_t before = memory_stats().current;
  void* first = nullptr;
  {
    AlignedBuffer a(big);
    first = a.data();
    EXPECT_EQ(memory_stats().current, before + big);
  }
  EXPECT_EQ(memory_stats().current, before);
  if (memory_stats().cached == 0) GTEST_SKIP() << "the cache is off (BURST_BUFFER_CACHE=0)";
  EXPECT_EQ(memory_stats().cached, big);
  {
    AlignedBuffer b(big);
    EXPECT_EQ(b.data(), first);
    EXPECT_EQ(memory_stats().cached, 0u);
    AlignedBuffer small(kLargeBuffer / 2);  // below the size the cache keeps
  }
  EXPECT_EQ(memory_stats().cached, big);
  release_cached_buffers();
  EXPECT_EQ(memory_stats().cached, 0u);
  EXPECT_EQ(memory_stats().current, before);
}

// fp32 on the default implementation, and bf16 on an AMX one where this host runs one.
TEST(Memory, KernelWorkspaceDoesNotGrowWithSequence) {
  std::vector<std::pair<DType, Isa>> runs = {{DType::kF32, Isa::kAuto}};
  for (Isa isa : testing::isas_under_test()) {
    if (kernels::tile_ops(isa).amx != nullptr) {
      runs.emplace_back(DType::kBF16, isa);
      break;
    }
  }
  for (const auto& run : runs) {
    const DType dtype = run.first;
    const Isa isa = run.second;
    auto extra_bytes = [&](std::int64_t s, bool backward) {
      Tensor q = testing::random_tensor(dtype, 1, s, 2, 64, 1);
      Tensor k = testing::random_tensor(dtype, 1, s, 2, 64, 2);
      Tensor v = testing::random_tensor(dtype, 1, s, 2, 64, 3);
      Tensor out(DType::kF32, 1, s, 2, 64), dq(DType::kF32, 1, s, 2, 64), dk(DType::kF32, 1, s, 2, 64),
          dv(DType::kF32, 1, s, 2, 64);
      RowStats lse(1, 2, s), delta(1, 2, s);
      kernels::AttentionOptions opt;
      opt.threads = 2;
      opt.isa = isa;
      opt.mask.causal = true;
      kernels::attention_forward(q.view(), k.view(), v.view(), out.view(), lse.view(), opt);
      kernels::compute_delta(out.view(), out.view(), delta.view(), 2);
      dq.fill_zero();
      dk.fill_zero();
      dv.fill_zero();
      reset_memory_peak();
      const std::size_t before = memory_stats().current;
      if (backward) {
        kernels::attention_backward(q.view(), k.view(), v.view(), q.view(), lse.view(), delta.view(), dq.view(),
                                    dk.view(), dv.view(), opt);
      } else {
        kernels::attention_forward(q.view(), k.view(), v.view(), out.view(), lse.view(), opt);
      }
      EXPECT_EQ(memory_stats().current, before) << "the call leaked";
      return memory_stats().peak - before;
    };
    for (bool backward : {false, true}) {
      const std::string where = std::string(dtype_name(dtype)) + " " + kernels::isa_name(isa) + (backward ? " backward" : " forward");
      const std::size_t small = extra_bytes(300, backward), large = extra_bytes(2000, backward);
      EXPECT_GT(small, 0u) << where;
      EXPECT_EQ(small, large) << where;
      // 2 threads of 256 x 256 tiles; the AMX backward holds P and dS in three bf16 parts twice.
      EXPECT_LT(large, std::size_t{6} << 20) << where;
    }
  }
}

// workspace_bytes reports exactly what a call allocates, on every route: fp32 and bf16,
// forward and backward, default and odd tiles, for every implementation this host runs.
TEST(Memory, WorkspaceBytesMatchesWhatCallsAllocate) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (Isa isa : testing::isas_under_test()) {
      for (int block : {0, 40}) {
        Tensor q = testing::random_tensor(dtype, 1, 300, 2, 48, 1);
        Tensor k = testing::random_tensor(dtype, 1, 300, 2, 48, 2);
        Tensor v = testing::random_tensor(dtype, 1, 300, 2, 48, 3);
        kernels::AttentionOptions opt;
        opt.threads = 2;
        opt.isa = isa;
        opt.block_m = block;
        opt.block_n = block / 2;
        const kernels::WorkspaceBytes want = kernels::workspace_bytes(dtype, 48, opt);
        Tensor out(DType::kF32, 1, 300, 2, 48), dq(DType::kF32, 1, 300, 2, 48), dk(DType::kF32, 1, 300, 2, 48),
            dv(DType::kF32, 1, 300, 2, 48);
        RowStats lse(1, 2, 300), delta(1, 2, 300);
        kernels::attention_forward(q.view(), k.view(), v.view(), out.view(), lse.view(), opt);
        kernels::compute_delta(out.view(), out.view(), delta.view(), 2);
        dq.fill_zero();
        dk.fill_zero();
        dv.fill_zero();
        const std::string where = std::string(dtype_name(dtype)) + " " + kernels::isa_name(isa) + " block " +
                                  std::to_string(block);
        reset_memory_peak();
        std::size_t before = memory_stats().current;
        kernels::attention_forward(q.view(), k.view(), v.view(), out.view(), lse.view(), opt);
        EXPECT_EQ(static_cast<std::int64_t>(memory_stats().peak - before), want.forward) << where;
        reset_memory_peak();
        before = memory_stats().current;
        kernels::attention_backward(q.view(), k.view(), v.view(), q.view(), lse.view(), delta.view(), dq.view(),
                                    dk.view(), dv.view(), opt);
        EXPECT_EQ(static_cast<std::int64_t>(memory_stats().peak - before), want.backward) << where;
      }
    }
  }
}

// The default tile follows the L2 size: today's 256 x 256 (d <= 128) and 128 x 128 (d = 256)
// at 1 MiB, smaller tiles for smaller caches.
TEST(Kernels, DefaultTileFollowsTheCache) {
  using kernels::default_tile_for_cache;
  const std::int64_t mib = 1 << 20;
  EXPECT_EQ(default_tile_for_cache(128, mib).block_m, 256);
  EXPECT_EQ(default_tile_for_cache(64, mib).block_n, 256);
  EXPECT_EQ(default_tile_for_cache(256, mib).block_m, 128);
  EXPECT_EQ(default_tile_for_cache(128, mib / 2).block_m, 128);
  EXPECT_EQ(default_tile_for_cache(128, mib / 4).block_m, 64);
  EXPECT_EQ(default_tile_for_cache(256, 2 * mib).block_m, 256);
  EXPECT_EQ(default_tile_for_cache(256, 0).block_m, 32);
  const kernels::Tile here = kernels::default_tile(128);
  std::printf("default tile at d = 128 on this processor: %d x %d\n", here.block_m, here.block_n);
}

// The progress hook runs once per computed tile of the calling thread, and only there.
TEST(Kernels, ProgressHookRunsOnTheCallingThread) {
  Tensor q = testing::random_tensor(DType::kF32, 1, 600, 2, 32, 1);
  Tensor k = testing::random_tensor(DType::kF32, 1, 600, 2, 32, 2);
  Tensor v = testing::random_tensor(DType::kF32, 1, 600, 2, 32, 3);
  kernels::AttentionOptions opt;
  opt.block_m = opt.block_n = 64;  // 10 x 10 tiles per head, 2 heads
  int calls = 0;
  bool other_thread = false;
  const auto caller = std::this_thread::get_id();
  opt.progress = [&] {
    ++calls;
    other_thread |= std::this_thread::get_id() != caller;
  };
  opt.threads = 1;
  ForwardOutputs f = attention_forward(q.view(), k.view(), v.view(), opt, DType::kF32);
  EXPECT_EQ(calls, 200);
  calls = 0;
  attention_backward(q.view(), k.view(), v.view(), f.out.view(), f.lse.view(), q.view(), opt);
  // The BLAS route's two passes visit every tile twice, the fused route's one pass once.
  const bool fused = kernels::detail::fused_route(kernels::tile_ops(opt.isa), DType::kF32);
  EXPECT_EQ(calls, fused ? 200 : 400);
  opt.threads = 2;
  calls = 0;
  attention_forward(q.view(), k.view(), v.view(), opt, DType::kF32);
  attention_backward(q.view(), k.view(), v.view(), f.out.view(), f.lse.view(), q.view(), opt);
  EXPECT_GT(calls, 0);
  EXPECT_FALSE(other_thread);
}

// A progress hook that throws ends the call with its exception on every thread count, also
// while other threads wait for their turn to add dQ terms (the fused backward): no hang. The
// hook runs on the calling thread only, so with several threads it may see fewer tiles than
// `after`; then the call completes.
TEST(Kernels, ProgressHookExceptionEndsTheCall) {
  Tensor q = testing::random_tensor(DType::kF32, 1, 600, 2, 32, 1);
  Tensor k = testing::random_tensor(DType::kF32, 1, 600, 2, 32, 2);
  Tensor v = testing::random_tensor(DType::kF32, 1, 600, 2, 32, 3);
  kernels::AttentionOptions opt;
  opt.block_m = opt.block_n = 32;
  ForwardOutputs f = attention_forward(q.view(), k.view(), v.view(), opt, DType::kF32);
  int thrown = 0;
  for (int threads : {1, 2, 3}) {
    for (int after : {0, 7, 150}) {
      opt.threads = threads;
      int calls = 0;
      opt.progress = [&] {
        if (calls++ == after) throw std::runtime_error("stop at " + std::to_string(after));
      };
      for (bool backward : {true, false}) {
        calls = 0;
        bool threw = false;
        try {
          if (backward) {
            attention_backward(q.view(), k.view(), v.view(), f.out.view(), f.lse.view(), q.view(), opt);
          } else {
            attention_forward(q.view(), k.view(), v.view(), opt, DType::kF32);
          }
        } catch (const std::runtime_error&) {
          threw = true;
        }
        EXPECT_EQ(threw, calls > after) << threads << " threads, backward " << backward << ", after " << after;
        thrown += threw;
      }
    }
  }
  EXPECT_GE(thrown, 6);  // one thread: every case throws
}

}  // namespace
}  // namespace burst
