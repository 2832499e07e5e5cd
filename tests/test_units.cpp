// Building blocks: the vectorised exp and bf16 conversions of every instruction set, tile
// classification, the thread pool and the .npy reader against hostile files.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <thread>

#include "api/npy.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/detail.h"
#include "kernels/tile_ops.h"
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
  for (kernels::MaskSpec mask : {kernels::MaskSpec{true, -1, -1}, {false, 2, 1}, {true, 3, -1}, {false, 0, 0}}) {
    for (Isa isa : testing::isas_under_test()) {
      std::vector<float> s(qpos.size() * kpos.size(), 1.0f);
      kernels::tile_ops(isa).apply_mask(s.data(), 7, 4, 7, qpos.data(), kpos.data(), mask);
      for (std::size_t i = 0; i < qpos.size(); ++i)
        for (std::size_t j = 0; j < kpos.size(); ++j)
          EXPECT_EQ(s[i * 7 + j] == 1.0f, mask.visible(qpos[i], kpos[j])) << i << "," << j;
    }
  }
}

// classify() may only claim "none" or "full" when every pair agrees.
TEST(Detail, ClassifyIsSound) {
  std::mt19937 gen(5);
  std::uniform_int_distribution<int> pos(0, 40), win(-1, 12);
  for (int trial = 0; trial < 20000; ++trial) {
    kernels::MaskSpec mask{gen() % 2 == 0, win(gen), win(gen)};
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
TEST(Memory, KernelWorkspaceDoesNotGrowWithSequence) {
  auto extra_bytes = [](std::int64_t s, bool backward) {
    Tensor q = testing::random_tensor(DType::kF32, 1, s, 2, 64, 1);
    Tensor k = testing::random_tensor(DType::kF32, 1, s, 2, 64, 2);
    Tensor v = testing::random_tensor(DType::kF32, 1, s, 2, 64, 3);
    Tensor out(DType::kF32, 1, s, 2, 64), dq(DType::kF32, 1, s, 2, 64), dk(DType::kF32, 1, s, 2, 64),
        dv(DType::kF32, 1, s, 2, 64);
    RowStats lse(1, 2, s), delta(1, 2, s);
    kernels::AttentionOptions opt;
    opt.threads = 2;
    opt.mask.causal = true;
    kernels::attention_forward(q.view(), k.view(), v.view(), out.view(), lse.view(), opt);
    kernels::compute_delta(out.view(), out.view(), delta.view(), 2);
    dq.fill_zero();
    dk.fill_zero();
    dv.fill_zero();
    reset_memory_peak();
    const std::size_t before = memory_stats().current;
    if (backward) {
      kernels::attention_backward(q.view(), k.view(), v.view(), out.view(), lse.view(), delta.view(),
                                  dq.view(), dk.view(), dv.view(), opt);
    } else {
      kernels::attention_forward(q.view(), k.view(), v.view(), out.view(), lse.view(), opt);
    }
    EXPECT_EQ(memory_stats().current, before) << "the call leaked";
    return memory_stats().peak - before;
  };
  for (bool backward : {false, true}) {
    const std::size_t small = extra_bytes(300, backward), large = extra_bytes(2000, backward);
    EXPECT_GT(small, 0u);
    EXPECT_EQ(small, large) << "backward " << backward;
    EXPECT_LT(large, std::size_t{4} << 20) << "backward " << backward;  // 2 threads of 256 x 256 tiles
  }
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
  EXPECT_EQ(calls, 400);  // both passes visit every tile
  opt.threads = 2;
  calls = 0;
  attention_forward(q.view(), k.view(), v.view(), opt, DType::kF32);
  attention_backward(q.view(), k.view(), v.view(), f.out.view(), f.lse.view(), q.view(), opt);
  EXPECT_GT(calls, 0);
  EXPECT_FALSE(other_thread);
}

class Npy : public ::testing::Test {
 protected:
  std::filesystem::path dir = std::filesystem::temp_directory_path() /
                              ("burst_npy_" + std::to_string(::getpid()));
  void SetUp() override { std::filesystem::create_directories(dir); }
  void TearDown() override { std::filesystem::remove_all(dir); }
  std::string write_raw(const std::string& name, const std::string& bytes) {
    const auto path = (dir / name).string();
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  static std::string header(const std::string& dict, std::size_t data_bytes) {
    std::string h = dict;
    while ((10 + h.size() + 1) % 64 != 0) h += ' ';
    h += '\n';
    std::string s = std::string("\x93NUMPY\x01\x00", 8);
    s += static_cast<char>(h.size() & 0xff);
    s += static_cast<char>(h.size() >> 8);
    return s + h + std::string(data_bytes, '\x01');
  }
};

TEST_F(Npy, RoundTrip) {
  std::vector<float> data(2 * 3 * 4 * 5);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<float>(i) * 0.5f - 7.0f;
  const auto path = (dir / "a.npy").string();
  write_npy(path, data.data(), {2, 3, 4, 5});
  const NpyArray a = read_npy(path, "--q");
  EXPECT_EQ(a.shape, (std::vector<std::int64_t>{2, 3, 4, 5}));
  EXPECT_EQ(a.data, data);
  write_npy(path, data.data(), {120});
  EXPECT_EQ(read_npy(path, "--q").shape, (std::vector<std::int64_t>{120}));
}

TEST_F(Npy, HostileFilesGiveErrorsNamingTheArgument) {
  const std::string good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  auto expect_error = [&](const std::string& path, const std::string& needle) {
    try {
      read_npy(path, "--k");
      ADD_FAILURE() << "no error for " << path;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("--k"), std::string::npos) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    }
  };
  expect_error((dir / "missing.npy").string(), "cannot open");
  expect_error(write_raw("empty.npy", ""), "too short");
  expect_error(write_raw("magic.npy", "NOTNUMPYATALL"), "not a .npy");
  expect_error(write_raw("trunc_header.npy", header(good, 24).substr(0, 40)), "header");
  expect_error(write_raw("trunc_data.npy", header(good, 23)), "holds 23 data bytes");
  expect_error(write_raw("extra_data.npy", header(good, 25)), "holds 25 data bytes");
  expect_error(write_raw("f8.npy", header("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", 48)), "float32");
  expect_error(write_raw("fortran.npy", header("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24)), "C order");
  expect_error(write_raw("huge.npy", header("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 99999999999), }", 24)), "larger than");
  expect_error(write_raw("negative.npy", header("{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }", 24)), "non-negative");
  expect_error(write_raw("noshape.npy", header("{'descr': '<f4', 'fortran_order': False}", 24)), "shape");
  std::string big_len = header(good, 24);
  big_len[8] = '\xff';
  big_len[9] = '\xff';
  expect_error(write_raw("biglen.npy", big_len), "header of 65535 bytes");
}

}  // namespace
}  // namespace burst
