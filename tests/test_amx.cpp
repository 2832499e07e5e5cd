// The AMX route's tile layer (src/kernels/amx.h): the emulated TDPBF16PS against a transcription
// of the operation Intel documents, the emulation's faults, the operand layouts and the split
// against their definitions, and the GEMM of every tile backend this host runs against double
// sums. The attention kernels on the AMX route run the whole catalog in test_sweep and the
// properties in test_properties.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "burst/error.h"
#include "kernels/amx.h"
#include "kernels/tile_ops.h"
#include "support.h"

namespace burst {
namespace {

using kernels::Isa;
namespace amx = kernels::amx;

bool runs(Isa isa) {
  for (Isa i : testing::isas_under_test()) {
    if (i == isa) return true;
  }
  return false;
}

// The emulation and the layouts are AVX-512 code: they run where amxbf16-emulated does.
constexpr const char* kNoEmulation = "amxbf16-emulated needs AVX-512 with avx512_bf16";

// The tile backends this host runs, named.
std::vector<std::pair<std::string, const amx::Ops*>> backends() {
  std::vector<std::pair<std::string, const amx::Ops*>> out;
  for (Isa isa : testing::isas_under_test()) {
    if (kernels::tile_ops(isa).amx != nullptr) out.emplace_back(kernels::isa_name(isa), kernels::tile_ops(isa).amx);
  }
  return out;
}

// Whether `run` throws burst::Error with `text` in its message.
bool throws_with(const std::function<void()>& run, const std::string& text) {
  try {
    run();
  } catch (const Error& e) {
    if (std::string(e.what()).find(text) != std::string::npos) return true;
    ADD_FAILURE() << "threw '" << e.what() << "', expected '" << text << "'";
    return false;
  }
  return false;
}

float flush_denormal(float x) { return std::fabs(x) < std::numeric_limits<float>::min() ? std::copysign(0.0f, x) : x; }
float widen_daz(bf16_bits b) { return flush_denormal(bf16_to_float(b)); }

amx::TileConfig shapes(int c_rows, int c_colsb, int a_colsb, int b_rows) {
  amx::TileConfig config;
  config.palette = 1;
  config.rows[0] = static_cast<std::uint8_t>(c_rows);
  config.colsb[0] = static_cast<std::uint16_t>(c_colsb);
  config.rows[1] = static_cast<std::uint8_t>(c_rows);
  config.colsb[1] = static_cast<std::uint16_t>(a_colsb);
  config.rows[2] = static_cast<std::uint8_t>(b_rows);
  config.colsb[2] = static_cast<std::uint16_t>(c_colsb);
  return config;
}

// TDPBF16PS on tmm0 (C, R x N fp32), tmm1 (A, R x K pairs), tmm2 (B, K pair rows x N) against
// the documented operation, transcribed: per row, even and odd fp32 FMA partial sums over the
// pairs, then C += (even + odd); inputs read with denormals as zero, every result flushed to
// zero when denormal, rounding to nearest. Also checks that TILESTORED writes R rows of 4N
// bytes and nothing else.
TEST(AmxTiles, EmulationFollowsTheDocumentedOperation) {
  if (!runs(Isa::kAmxBf16Emulated)) GTEST_SKIP() << kNoEmulation;
  std::mt19937 gen(41);
  std::normal_distribution<float> dist;
  std::uniform_int_distribution<int> pick(0, 15);
  for (auto [R, K, N] : {std::tuple{16, 16, 16}, {5, 3, 6}, {1, 1, 1}, {16, 7, 16}, {9, 16, 3}}) {
    constexpr std::int64_t kStride = 80;  // bytes between rows of the source buffers
    std::vector<bf16_bits> a(static_cast<std::size_t>(16 * kStride / 2)), b(a.size());
    std::vector<float> c(static_cast<std::size_t>(16 * kStride / 4));
    auto value = [&](int scale_exponent) {
      // One in 16 a bf16 denormal (read as 0), the rest normal values around 2^scale_exponent.
      if (pick(gen) == 0) return static_cast<bf16_bits>(1 + pick(gen));
      return float_to_bf16(std::ldexp(dist(gen), scale_exponent));
    };
    for (int m = 0; m < R; ++m)
      for (int e = 0; e < 2 * K; ++e) a[static_cast<std::size_t>(m * kStride / 2 + e)] = value(m == 0 ? -70 : 0);
    for (int k = 0; k < K; ++k)
      for (int e = 0; e < 2 * N; ++e) b[static_cast<std::size_t>(k * kStride / 2 + e)] = value(e < 2 ? -60 : 0);
    for (int m = 0; m < R; ++m)
      for (int n = 0; n < N; ++n) c[static_cast<std::size_t>(m * kStride / 4 + n)] = dist(gen);

    // The documented operation (products in row 0 x column 0 fall below FLT_MIN: flushed).
    std::vector<float> want(static_cast<std::size_t>(R * N));
    for (int m = 0; m < R; ++m) {
      for (int n = 0; n < N; ++n) {
        float even = 0.0f, odd = 0.0f;
        for (int k = 0; k < K; ++k) {
          const auto at_a = static_cast<std::size_t>(m * kStride / 2 + 2 * k);
          const auto at_b = static_cast<std::size_t>(k * kStride / 2 + 2 * n);
          even = flush_denormal(std::fma(widen_daz(a[at_a]), widen_daz(b[at_b]), even));
          odd = flush_denormal(std::fma(widen_daz(a[at_a + 1]), widen_daz(b[at_b + 1]), odd));
        }
        const float sum = flush_denormal(even + odd);
        want[static_cast<std::size_t>(m * N + n)] = flush_denormal(c[static_cast<std::size_t>(m * kStride / 4 + n)] + sum);
      }
    }

    amx::emulation::load_config(shapes(R, 4 * N, 4 * K, K));
    amx::emulation::load(0, c.data(), kStride);
    amx::emulation::load(1, a.data(), kStride);
    amx::emulation::load(2, b.data(), kStride);
    amx::emulation::dot_bf16(0, 1, 2);
    std::vector<float> got(16 * 16 + 16, std::numeric_limits<float>::quiet_NaN());
    amx::emulation::store(0, got.data(), 16 * 4);
    amx::emulation::release();
    for (int m = 0; m < 16; ++m) {
      for (int n = 0; n < 16; ++n) {
        const float g = got[static_cast<std::size_t>(m * 16 + n)];
        if (m >= R || n >= N) {
          ASSERT_TRUE(std::isnan(g)) << "TILESTORED wrote outside " << R << " x " << N << " at " << m << "," << n;
          continue;
        }
        ASSERT_EQ(std::bit_cast<std::uint32_t>(g), std::bit_cast<std::uint32_t>(want[static_cast<std::size_t>(m * N + n)]))
            << R << "x" << K << "x" << N << " at " << m << "," << n << ": " << g << " vs " << want[static_cast<std::size_t>(m * N + n)];
      }
    }
  }

  // Denormals are zero on input and flushed on output: a bf16 denormal times 2^100 (2^-33
  // exactly) adds nothing, nor does 2^-70 times 2^-60 (2^-130, below FLT_MIN).
  amx::emulation::load_config(shapes(1, 4, 4, 1));
  for (auto [x, y] : {std::pair{bf16_bits{1}, float_to_bf16(0x1p100f)}, {float_to_bf16(0x1p-70f), float_to_bf16(0x1p-60f)}}) {
    const bf16_bits a_row[2] = {x, 0}, b_row[2] = {y, 0};
    const float zero = 0.0f;
    amx::emulation::load(0, &zero, 4);
    amx::emulation::load(1, a_row, 4);
    amx::emulation::load(2, b_row, 4);
    amx::emulation::dot_bf16(0, 1, 2);
    float out = 1.0f;
    amx::emulation::store(0, &out, 4);
    EXPECT_EQ(out, 0.0f) << bf16_to_float(x) << " x " << bf16_to_float(y);
    EXPECT_NE(static_cast<double>(bf16_to_float(x)) * bf16_to_float(y), 0.0);
  }
  amx::emulation::release();
}

// What faults on the processor throws in the emulation, naming the rule: a bad LDTILECFG
// operand (#GP), a tile used unconfigured or TDPBF16PS on shapes it does not take (#UD).
TEST(AmxTiles, EmulationFaultsWhereTheProcessorDoes) {
  if (!runs(Isa::kAmxBf16Emulated)) GTEST_SKIP() << kNoEmulation;
  namespace e = amx::emulation;
  float buffer[16 * 16] = {};
  e::release();
  EXPECT_TRUE(throws_with([&] { e::zero(0); }, "no tile configuration"));
  auto bad_config = [&](const std::function<void(amx::TileConfig&)>& change, const std::string& text) {
    amx::TileConfig config = amx::uniform_config();
    change(config);
    EXPECT_TRUE(throws_with([&] { e::load_config(config); }, text)) << text;
  };
  bad_config([](amx::TileConfig& c) { c.rows[3] = 17; }, "17 rows: at most 16");
  bad_config([](amx::TileConfig& c) { c.colsb[5] = 65; }, "65 bytes per row: at most 64");
  bad_config([](amx::TileConfig& c) { c.palette = 2; }, "palette 2");
  bad_config([](amx::TileConfig& c) { c.rows[8] = 1; }, "palette 1 has tiles 0..7");
  bad_config([](amx::TileConfig& c) { c.reserved0[3] = 1; }, "reserved bytes");
  bad_config([](amx::TileConfig& c) { c.colsb[2] = 0; }, "an unused tile has both 0");
  bad_config([](amx::TileConfig& c) { c.start_row = 2; }, "start_row");

  e::load_config(shapes(16, 64, 32, 8));  // tmm0..2 only
  EXPECT_TRUE(throws_with([&] { e::load(3, buffer, 64); }, "leaves unused"));
  EXPECT_TRUE(throws_with([&] { e::store(9, buffer, 64); }, "palette 1 has tmm0..tmm7"));
  EXPECT_TRUE(throws_with([&] { e::dot_bf16(0, 0, 2); }, "operands must differ"));
  e::dot_bf16(0, 1, 2);  // 16 x 16 += (16 x 8 pairs) (8 x 16): fine
  amx::TileConfig config = shapes(16, 64, 64, 8);  // A has 16 pairs a row, B 8 rows
  e::load_config(config);
  EXPECT_TRUE(throws_with([&] { e::dot_bf16(0, 1, 2); }, "16 pairs per row but B"));
  config = shapes(16, 64, 32, 8);
  config.rows[1] = 8;
  e::load_config(config);
  EXPECT_TRUE(throws_with([&] { e::dot_bf16(0, 1, 2); }, "has 16 rows but A"));
  config = shapes(16, 64, 32, 8);
  config.colsb[2] = 32;
  e::load_config(config);
  EXPECT_TRUE(throws_with([&] { e::dot_bf16(0, 1, 2); }, "bytes per row but B"));
  e::release();
  EXPECT_TRUE(throws_with([&] { e::dot_bf16(0, 1, 2); }, "no tile configuration"));
}

// Random bf16 rows with a leading dimension beyond d, a few values non-finite.
std::vector<bf16_bits> random_rows(int rows, std::int64_t ld, std::mt19937& gen, bool non_finite) {
  std::normal_distribution<float> dist;
  std::uniform_int_distribution<int> pick(0, 40);
  std::vector<bf16_bits> y(static_cast<std::size_t>(rows * ld));
  for (auto& v : y) {
    const int p = pick(gen);
    v = float_to_bf16(!non_finite || p > 1 ? dist(gen) : p == 0 ? std::numeric_limits<float>::infinity()
                                                                  : std::numeric_limits<float>::quiet_NaN());
  }
  return y;
}

bool finite_bf16(bf16_bits v) { return (v & 0x7f80) != 0x7f80; }

// The layouts of amx.h, element by element, padding included, for ragged sizes; the buffers
// are filled with a marker first, and the words past each layout must keep it.
TEST(AmxTiles, LayoutsMatchTheirDefinitions) {
  if (!runs(Isa::kAmxBf16Emulated)) GTEST_SKIP() << kNoEmulation;
  constexpr bf16_bits kMark = 0xabcd;
  constexpr std::uint32_t kWordMark = 0xabcdabcd;
  std::mt19937 gen(43);
  for (int r : {1, 2, 15, 16, 17, 40}) {
    for (int d : {1, 2, 3, 31, 32, 33, 80}) {
      const std::string where = std::to_string(r) + " x " + std::to_string(d);
      const std::int64_t ld = d + 3;
      const std::vector<bf16_bits> y = random_rows(r, ld, gen, true);
      auto at = [&](int i, int x) { return y[static_cast<std::size_t>(i * ld + x)]; };
      bool any_non_finite = false;
      for (int i = 0; i < r; ++i)
        for (int x = 0; x < d; ++x) any_non_finite |= !finite_bf16(at(i, x));

      // A rows: r x d into pad_rows(r) x ld_a.
      const std::int64_t ld_a = amx::pad_depth(d) + 32;
      std::vector<bf16_bits> a(static_cast<std::size_t>(amx::pad_rows(r) * ld_a + 64), kMark);
      amx::pack_a_rows(y.data(), ld, r, d, a.data(), ld_a);
      for (std::int64_t i = 0; i < amx::pad_rows(r); ++i)
        for (std::int64_t x = 0; x < ld_a; ++x)
          ASSERT_EQ(a[static_cast<std::size_t>(i * ld_a + x)], i < r && x < d ? at(static_cast<int>(i), static_cast<int>(x)) : 0)
              << "pack_a_rows " << where << " at " << i << "," << x;
      ASSERT_EQ(a.back(), kMark) << where;

      // A transposed: pad_rows(d) x ld_t, non-finite values zeroed.
      const std::int64_t ld_t = amx::pad_depth(r) + 32;
      std::vector<bf16_bits> t(static_cast<std::size_t>(amx::pad_rows(d) * ld_t + 64), kMark);
      EXPECT_EQ(amx::pack_a_transposed(y.data(), ld, r, d, t.data(), ld_t), any_non_finite) << where;
      for (std::int64_t x = 0; x < amx::pad_rows(d); ++x)
        for (std::int64_t i = 0; i < ld_t; ++i) {
          const bf16_bits want = x < d && i < r && finite_bf16(at(static_cast<int>(i), static_cast<int>(x)))
                                     ? at(static_cast<int>(i), static_cast<int>(x))
                                     : bf16_bits{0};
          ASSERT_EQ(t[static_cast<std::size_t>(x * ld_t + i)], want) << "pack_a_transposed " << where << " at " << x << "," << i;
        }
      ASSERT_EQ(t.back(), kMark) << where;

      // B of X Y^T: the r rows of y are the columns, pairs along d.
      auto word = [](bf16_bits lo, bf16_bits hi) { return static_cast<std::uint32_t>(lo) | static_cast<std::uint32_t>(hi) << 16; };
      std::vector<std::uint32_t> bt(static_cast<std::size_t>(amx::b_words(d, r) + 64), kWordMark);
      amx::pack_b_transposed(y.data(), ld, r, d, bt.data());
      const std::int64_t pairs_d = amx::pad_depth(d) / 2;
      for (std::int64_t p = 0; p < amx::pad_rows(r) / 16; ++p)
        for (std::int64_t k = 0; k < pairs_d; ++k)
          for (int j = 0; j < 16; ++j) {
            const int col = static_cast<int>(p * 16 + j), e0 = static_cast<int>(2 * k);
            const bf16_bits lo = col < r && e0 < d ? at(col, e0) : 0, hi = col < r && e0 + 1 < d ? at(col, e0 + 1) : 0;
            ASSERT_EQ(bt[static_cast<std::size_t>((p * pairs_d + k) * 16 + j)], word(lo, hi))
                << "pack_b_transposed " << where << " panel " << p << " pair " << k << " column " << j;
          }
      ASSERT_EQ(bt.back(), kWordMark) << where;

      // B of X Y: pairs of rows of y, d columns, non-finite values zeroed.
      std::vector<std::uint32_t> br(static_cast<std::size_t>(amx::b_words(r, d) + 64), kWordMark);
      EXPECT_EQ(amx::pack_b_rows(y.data(), ld, r, d, br.data()), any_non_finite) << where;
      const std::int64_t pairs_r = amx::pad_depth(r) / 2;
      auto kept = [&](int i, int x) { return i < r && x < d && finite_bf16(at(i, x)) ? at(i, x) : bf16_bits{0}; };
      for (std::int64_t p = 0; p < amx::pad_rows(d) / 16; ++p)
        for (std::int64_t k = 0; k < pairs_r; ++k)
          for (int j = 0; j < 16; ++j) {
            const int x = static_cast<int>(p * 16 + j), i = static_cast<int>(2 * k);
            ASSERT_EQ(br[static_cast<std::size_t>((p * pairs_r + k) * 16 + j)], word(kept(i, x), kept(i + 1, x)))
                << "pack_b_rows " << where << " panel " << p << " pair " << k << " column " << j;
          }
      ASSERT_EQ(br.back(), kWordMark) << where;
    }
  }
}

// The split of amx.h, one value at a time: hi = bf16(x), then each part the bf16 of what is left.
std::vector<bf16_bits> split_scalar(float x, int parts) {
  std::vector<bf16_bits> out;
  float rest = x;
  for (int q = 0; q < parts; ++q) {
    out.push_back(float_to_bf16(rest));
    const float part = bf16_to_float(out.back());
    rest = std::isfinite(part) ? rest - part : 0.0f;
  }
  return out;
}

// Three parts hold an fp32 value exactly (when its lowest part is no bf16 denormal: |x| >=
// 2^-102), two within 2^-16 of it; NaN and infinities stay whole in the first part. split_a
// and split_b lay the same parts out as A and B tiles.
TEST(AmxTiles, SplitHoldsTheValue) {
  if (!runs(Isa::kAmxBf16Emulated)) GTEST_SKIP() << kNoEmulation;
  std::mt19937 gen(47);
  std::normal_distribution<float> dist;
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  std::uniform_int_distribution<int> exponent(-100, 100);
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (int i = 0; i < 100000; ++i) {
    const float x = std::ldexp(i % 2 == 0 ? mantissa(gen) : -mantissa(gen), exponent(gen));
    const std::vector<bf16_bits> three = split_scalar(x, 3), two = split_scalar(x, 2);
    double sum3 = 0.0, sum2 = 0.0;
    for (bf16_bits p : three) sum3 += bf16_to_float(p);
    for (bf16_bits p : two) sum2 += bf16_to_float(p);
    ASSERT_EQ(sum3, static_cast<double>(x)) << x;
    ASSERT_LE(std::fabs(sum2 - x), std::ldexp(std::fabs(static_cast<double>(x)), -16)) << x;
  }
  for (float x : {inf, -inf, nan}) {
    const std::vector<bf16_bits> three = split_scalar(x, 3);
    EXPECT_EQ(std::isnan(bf16_to_float(three[0])), std::isnan(x));
    EXPECT_EQ(three[1], 0);
    EXPECT_EQ(three[2], 0);
  }

  for (int parts : {2, 3}) {
    for (auto [rows, cols] : {std::pair{1, 1}, {5, 17}, {16, 32}, {33, 40}}) {
      const std::int64_t ld = cols + 5;
      std::vector<float> f(static_cast<std::size_t>(rows * ld));
      for (float& v : f) v = std::ldexp(dist(gen), exponent(gen) / 4);
      f[0] = nan;
      f[static_cast<std::size_t>(ld * (rows - 1) + cols - 1)] = -inf;
      auto part = [&](int i, int j, int q) {
        return i < rows && j < cols ? split_scalar(f[static_cast<std::size_t>(i * ld + j)], parts)[static_cast<std::size_t>(q)]
                                    : bf16_bits{0};
      };
      const std::string where = std::to_string(parts) + " parts, " + std::to_string(rows) + " x " + std::to_string(cols);
      const std::int64_t ld_a = amx::pad_depth(cols), part_a = amx::pad_rows(rows) * ld_a;
      std::vector<bf16_bits> a(static_cast<std::size_t>(parts * part_a), 0xabcd);
      amx::split_a(f.data(), ld, rows, cols, parts, a.data(), ld_a, part_a);
      for (int q = 0; q < parts; ++q)
        for (std::int64_t i = 0; i < amx::pad_rows(rows); ++i)
          for (std::int64_t j = 0; j < ld_a; ++j)
            ASSERT_EQ(a[static_cast<std::size_t>(q * part_a + i * ld_a + j)], part(static_cast<int>(i), static_cast<int>(j), q))
                << "split_a " << where << " part " << q << " at " << i << "," << j;
      const std::int64_t part_b = amx::b_words(rows, cols), pairs = amx::pad_depth(rows) / 2;
      std::vector<std::uint32_t> b(static_cast<std::size_t>(parts * part_b), 0xabcdabcd);
      amx::split_b(f.data(), ld, rows, cols, parts, b.data(), part_b);
      for (int q = 0; q < parts; ++q)
        for (std::int64_t p = 0; p < amx::pad_rows(cols) / 16; ++p)
          for (std::int64_t k = 0; k < pairs; ++k)
            for (int j = 0; j < 16; ++j) {
              const int col = static_cast<int>(p * 16 + j), i = static_cast<int>(2 * k);
              const std::uint32_t want = static_cast<std::uint32_t>(part(i, col, q)) |
                                         static_cast<std::uint32_t>(part(i + 1, col, q)) << 16;
              ASSERT_EQ(b[static_cast<std::size_t>(q * part_b + (p * pairs + k) * 16 + j)], want)
                  << "split_b " << where << " part " << q << " panel " << p << " pair " << k << " column " << j;
            }
    }
  }
}

// The GEMM through each backend this host runs, in the three ways the kernels use it: bf16 X
// times Y^T (S = Q K^T), split F times bf16 Y (O += P V, dQ = dS K) and bf16 Y^T times split F
// (dV^T += dO^T P), against double sums of the same bf16 values (the split's three parts hold
// F exactly), overwriting a NaN-filled C with alpha or accumulating into a random one.
TEST(AmxTiles, GemmMatchesDoubleSums) {
  const auto tile_backends = backends();
  if (tile_backends.empty()) GTEST_SKIP() << "no AMX implementation on this processor";
  std::mt19937 gen(53);
  std::normal_distribution<float> dist;
  for (const auto& [name, ops] : tile_backends) {
    const amx::Session session(*ops);
    for (auto [m, n, depth] : {std::tuple{16, 16, 32}, {48, 32, 96}, {17, 33, 40}, {64, 48, 7}}) {
      for (int way = 0; way < 3; ++way) {
        for (bool accumulate : {false, true}) {
          const std::string where = name + " " + std::to_string(m) + "x" + std::to_string(n) + "x" +
                                    std::to_string(depth) + " way " + std::to_string(way) +
                                    (accumulate ? " accumulating" : "");
          // Values of the product C = A B (m x depth times depth x n) in double.
          std::vector<double> av(static_cast<std::size_t>(m * depth)), bv(static_cast<std::size_t>(depth * n));
          const std::int64_t mp = amx::pad_rows(m), np = amx::pad_rows(n), kp = amx::pad_depth(depth);
          amx::Gemm g{.rows = static_cast<int>(mp), .cols = static_cast<int>(np), .depth = static_cast<int>(kp), .lda = kp};
          std::vector<bf16_bits> a_tiles;
          std::vector<std::uint32_t> b_tiles;
          if (way == 0) {  // A = X (m x depth bf16), B = Y^T, Y n x depth
            const auto x = random_rows(m, depth, gen, false), y = random_rows(n, depth, gen, false);
            for (std::size_t i = 0; i < av.size(); ++i) av[i] = bf16_to_float(x[i]);
            for (int k = 0; k < depth; ++k)
              for (int j = 0; j < n; ++j) bv[static_cast<std::size_t>(k * n + j)] = bf16_to_float(y[static_cast<std::size_t>(j * depth + k)]);
            a_tiles.resize(static_cast<std::size_t>(mp * kp));
            amx::pack_a_rows(x.data(), depth, m, depth, a_tiles.data(), kp);
            b_tiles.resize(static_cast<std::size_t>(amx::b_words(depth, n)));
            amx::pack_b_transposed(y.data(), depth, n, depth, b_tiles.data());
          } else if (way == 1) {  // A = F (m x depth fp32, 3 parts), B = Y (depth x n bf16)
            std::vector<float> f(static_cast<std::size_t>(m * depth));
            for (std::size_t i = 0; i < f.size(); ++i) av[i] = f[i] = dist(gen);
            const auto y = random_rows(depth, n, gen, false);
            for (std::size_t i = 0; i < bv.size(); ++i) bv[i] = bf16_to_float(y[i]);
            a_tiles.resize(static_cast<std::size_t>(3 * mp * kp));
            amx::split_a(f.data(), depth, m, depth, 3, a_tiles.data(), kp, mp * kp);
            g.a_parts = 3;
            g.a_part_stride = mp * kp;
            b_tiles.resize(static_cast<std::size_t>(amx::b_words(depth, n)));
            EXPECT_FALSE(amx::pack_b_rows(y.data(), n, depth, n, b_tiles.data()));
          } else {  // A = Y^T (Y depth x m bf16), B = F (depth x n fp32, 3 parts)
            const auto y = random_rows(depth, m, gen, false);
            for (int i = 0; i < m; ++i)
              for (int k = 0; k < depth; ++k) av[static_cast<std::size_t>(i * depth + k)] = bf16_to_float(y[static_cast<std::size_t>(k * m + i)]);
            std::vector<float> f(static_cast<std::size_t>(depth * n));
            for (std::size_t i = 0; i < f.size(); ++i) bv[i] = f[i] = dist(gen);
            a_tiles.resize(static_cast<std::size_t>(mp * kp));
            EXPECT_FALSE(amx::pack_a_transposed(y.data(), m, depth, m, a_tiles.data(), kp));
            const std::int64_t part = amx::b_words(depth, n);
            b_tiles.resize(static_cast<std::size_t>(3 * part));
            amx::split_b(f.data(), n, depth, n, 3, b_tiles.data(), part);
            g.b_parts = 3;
            g.b_part_stride = part;
          }
          g.a = a_tiles.data();
          g.b = b_tiles.data();
          const std::int64_t ldc = np + 16;
          std::vector<float> c(static_cast<std::size_t>(mp * ldc), std::numeric_limits<float>::quiet_NaN());
          std::vector<float> c0(c.size());
          if (accumulate) {
            for (float& v : c) v = dist(gen);
          }
          c0 = c;
          g.c = c.data();
          g.ldc = ldc;
          g.accumulate = accumulate;
          g.alpha = accumulate ? 1.0f : 0.5f;
          ops->gemm(g);
          for (int i = 0; i < m; ++i) {
            for (int j = 0; j < n; ++j) {
              double want = 0.0, size = 0.0;
              for (int k = 0; k < depth; ++k) {
                const double t = av[static_cast<std::size_t>(i * depth + k)] * bv[static_cast<std::size_t>(k * n + j)];
                want += t;
                size += std::fabs(t);
              }
              const double before = accumulate ? c0[static_cast<std::size_t>(i * ldc + j)] : 0.0;
              want = before + g.alpha * want;
              size = std::fabs(before) + size;
              const float got = c[static_cast<std::size_t>(i * ldc + j)];
              ASSERT_NEAR(got, want, 4 * (depth + 2) * 0x1p-24 * size) << where << " at " << i << "," << j;
            }
          }
          // Columns past the padded C are never written.
          for (std::int64_t i = 0; i < mp; ++i)
            for (std::int64_t j = np; j < ldc; ++j)
              ASSERT_EQ(std::bit_cast<std::uint32_t>(c[static_cast<std::size_t>(i * ldc + j)]),
                        std::bit_cast<std::uint32_t>(c0[static_cast<std::size_t>(i * ldc + j)]))
                  << where;
        }
      }
    }
  }
}

// Where the processor runs amxbf16 too, its GEMM and the emulation's on the same operands:
// both are checked against double sums above; this says whether they agree bit for bit (the
// emulation follows the documented order of the sums; the hardware's is not observable here).
TEST(AmxTiles, HardwareAndEmulationOnTheSameOperands) {
  if (!runs(Isa::kAmxBf16)) {
    std::printf("AMX-BF16: %s; the hardware tile backend was not exercised on this machine\n",
                kernels::amx_bf16_status().why.c_str());
    GTEST_SKIP() << "no AMX-BF16 here: " << kernels::amx_bf16_status().why;
  }
  std::mt19937 gen(59);
  std::normal_distribution<float> dist;
  const int m = 64, n = 64, depth = 128;
  const auto x = random_rows(m, depth, gen, false), y = random_rows(n, depth, gen, false);
  std::vector<bf16_bits> a(static_cast<std::size_t>(m * depth));
  std::vector<std::uint32_t> b(static_cast<std::size_t>(amx::b_words(depth, n)));
  amx::pack_a_rows(x.data(), depth, m, depth, a.data(), depth);
  amx::pack_b_transposed(y.data(), depth, n, depth, b.data());
  std::vector<float> hw(static_cast<std::size_t>(m * n)), em(hw.size());
  for (auto [ops, out] : {std::pair{&amx::hardware_ops(), &hw}, {&amx::emulated_ops(), &em}}) {
    const amx::Session session(*ops);
    ops->gemm({.rows = m, .cols = n, .depth = depth, .a = a.data(), .lda = depth, .b = b.data(), .c = out->data(), .ldc = n});
  }
  int differ = 0;
  double worst = 0.0;
  for (std::size_t i = 0; i < hw.size(); ++i) {
    if (std::bit_cast<std::uint32_t>(hw[i]) == std::bit_cast<std::uint32_t>(em[i])) continue;
    ++differ;
    worst = std::max(worst, std::fabs(static_cast<double>(hw[i]) - em[i]) / std::max(1e-30, std::fabs(static_cast<double>(em[i]))));
    ASSERT_NEAR(hw[i], em[i], 1e-5 * (1 + std::fabs(em[i]))) << i;
  }
  std::printf("amxbf16 and amxbf16-emulated: %d of %zu values differ (largest relative difference %.1e)\n", differ,
              hw.size(), worst);
}

}  // namespace
}  // namespace burst
