// Local attention benchmarks: forward and backward against the BLAS sgemm measured in the same
// run, plus a naive materialised-attention baseline with its peak memory.
//
//   build/bin/bench_attention [--benchmark_filter=REGEX] [--benchmark_format=json] ...
//
// Where this process may run the amxbf16 implementation (src/kernels/README.md, "AMX"), the
// amx_* cases measure it: amx_gemm/* a bf16 GEMM through its tile layer, amx_fwd/* and
// amx_bwd/* the kernels on bf16 inputs, each with the same-run sgemm, the AMX GEMM
// (amx_gemm_GFLOPs, 512 x 512 x 128, measured right before) and the same case in fp32 on the
// default implementation (fp32_GFLOPs, measured right before: the ratio_fp32). They
// are absent elsewhere; the start-up lines say why.
//
// Forward cases also report io_MB (q, k, v, o, lse) and extra_MB: the most memory the call
// allocated beyond them (its per-thread tile workspaces), from core's allocation counter.
// Each case reports GFLOP/s (FLOPs: forward 4 b h sq sk d times the mask's visible fraction,
// backward 2.5x that) and ratio_sgemm = GFLOP/s over the single-thread sgemm GFLOP/s of a
// comparable shape (threads x that for multi-threaded cases) measured just before the case
// (sgemm_GFLOPs): on a shared machine the rate a core delivers drifts within one run, so the
// reference is taken next to what it divides. The start-up figures are printed too.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "burst/attention.h"
#include "burst/kernels.h"
#include "kernels/amx.h"
#include "kernels/blas.h"
#include "kernels/detail.h"
#include "kernels/tile_ops.h"

namespace burst {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

Tensor random_tensor(DType dtype, std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d,
                     std::uint32_t seed) {
  Tensor t(dtype, b, s, h, d);
  std::uint32_t x = seed * 2654435761u + 1;
  for (std::int64_t i = 0; i < t.view().numel(); ++i) {
    x = x * 1664525u + 1013904223u;
    const float v = static_cast<float>(x >> 8) / 16777216.0f * 2.0f - 1.0f;
    if (dtype == DType::kF32) {
      t.data<float>()[i] = v;
    } else {
      t.data<bf16_bits>()[i] = float_to_bf16(v);
    }
  }
  return t;
}

// Median GFLOP/s of single-thread sgemm C(m x n) = A(m x k) B(k x n)^T, B transposed as in
// S = Q K^T.
double measure_sgemm(std::int64_t m, std::int64_t n, std::int64_t k) {
  std::vector<float> a(static_cast<std::size_t>(m * k), 0.5f), b(static_cast<std::size_t>(n * k), 0.25f),
      c(static_cast<std::size_t>(m * n));
  const double flops = 2.0 * static_cast<double>(m * n * k);
  const int reps = std::max(1, static_cast<int>(2e9 / flops));  // ~20 ms per trial
  std::vector<double> rates;
  for (int trial = 0; trial < 7; ++trial) {
    const auto t0 = Clock::now();
    for (int r = 0; r < reps; ++r) {
      kernels::sgemm(false, true, m, n, k, 1.0f, a.data(), k, b.data(), k, 0.0f, c.data(), n);
    }
    rates.push_back(flops * reps / seconds_since(t0) / 1e9);
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

double g_sgemm_gflops = 0.0;  // same-run reference, set in main

// The amxbf16 tile layer where this process may run it, else null.
const kernels::amx::Ops* amx_tiles() {
  for (kernels::Isa isa : kernels::supported_isas()) {
    if (isa == kernels::Isa::kAmxBf16) return kernels::tile_ops(isa).amx;
  }
  return nullptr;
}

// Median GFLOP/s of one thread's bf16 GEMM C (m x n, fp32) = A (m x k) B (k x n) through the
// AMX tile layer, operands packed into tiles once before the timing (m, n multiples of 16, k of
// 32): the ceiling of the kernels' tile products on this core.
double measure_amx_gemm(const kernels::amx::Ops& ops, int m, int n, int k) {
  std::vector<bf16_bits> x(static_cast<std::size_t>(m) * k), y(static_cast<std::size_t>(n) * k);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float_to_bf16(static_cast<float>(i % 7) * 0.125f);
  for (std::size_t i = 0; i < y.size(); ++i) y[i] = float_to_bf16(static_cast<float>(i % 5) * 0.25f);
  std::vector<bf16_bits> a(x.size());
  std::vector<std::uint32_t> b(static_cast<std::size_t>(kernels::amx::b_words(k, n)));
  std::vector<float> c(static_cast<std::size_t>(m) * n);
  kernels::amx::pack_a_rows(x.data(), k, m, k, a.data(), k);
  kernels::amx::pack_b_transposed(y.data(), k, n, k, b.data());
  const kernels::amx::Gemm g{.rows = m, .cols = n, .depth = k, .a = a.data(), .lda = k, .b = b.data(), .c = c.data(), .ldc = n};
  const kernels::amx::Session session(ops);
  const double flops = 2.0 * m * n * static_cast<double>(k);
  const int reps = std::max(1, static_cast<int>(1e10 / flops));  // ~20 ms per trial at 500 GFLOP/s
  std::vector<double> rates;
  for (int trial = 0; trial < 7; ++trial) {
    const auto t0 = Clock::now();
    for (int r = 0; r < reps; ++r) ops.gemm(g);
    rates.push_back(flops * reps / seconds_since(t0) / 1e9);
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

struct Case {
  std::int64_t s, d;
  bool causal;
  int threads;
  DType dtype;
  kernels::Isa isa = kernels::Isa::kAuto;
};

std::string case_name(const char* kind, const Case& c) {
  return std::string(kind) + "/" + std::string(dtype_name(c.dtype)) + "/d" + std::to_string(c.d) +
         "/s" + std::to_string(c.s) + (c.causal ? "/causal" : "/full") + "/t" +
         std::to_string(c.threads);
}

constexpr std::int64_t kHeads = 1;

// The same-run reference of one case: single-thread sgemm measured right before it.
double adjacent_sgemm() { return measure_sgemm(512, 512, 128); }

void set_counters(benchmark::State& state, double flops_per_iter, double seconds, int threads, double sgemm) {
  const double gflops = flops_per_iter * static_cast<double>(state.iterations()) / seconds / 1e9;
  state.counters["GFLOPs"] = gflops;
  state.counters["sgemm_GFLOPs"] = sgemm;
  state.counters["ratio_sgemm"] = gflops / (sgemm * threads);
}

// For an AMX case: the AMX GEMM and the same case in fp32 on the default implementation
// (best of two calls of `run_fp32`, which returns seconds), measured right before it.
void set_amx_references(benchmark::State& state, const Case& c, double gflops, double flops,
                        const std::function<double()>& run_fp32) {
  if (c.isa != kernels::Isa::kAmxBf16) return;
  const double amx_gemm = measure_amx_gemm(*amx_tiles(), 512, 512, 128);
  const double fp32 = flops / std::min(run_fp32(), run_fp32()) / 1e9;
  state.counters["amx_gemm_GFLOPs"] = amx_gemm;
  state.counters["ratio_amx_gemm"] = gflops / (amx_gemm * c.threads);
  state.counters["fp32_GFLOPs"] = fp32;
  state.counters["ratio_fp32"] = gflops / fp32;
}

void bench_forward(benchmark::State& state, Case c) {
  Tensor q = random_tensor(c.dtype, 1, c.s, kHeads, c.d, 1), k = random_tensor(c.dtype, 1, c.s, kHeads, c.d, 2),
         v = random_tensor(c.dtype, 1, c.s, kHeads, c.d, 3);
  Tensor out(c.dtype, 1, c.s, kHeads, c.d);
  RowStats lse(1, kHeads, c.s);
  kernels::AttentionOptions opt;
  opt.mask.causal = c.causal;
  opt.threads = c.threads;
  opt.isa = c.isa;
  const double flops = 4.0 * static_cast<double>(c.s * c.s * c.d * kHeads) *
                       kernels::visible_fraction(c.s, c.s, opt);
  const auto run_fp32 = [&] {
    Tensor qf = random_tensor(DType::kF32, 1, c.s, kHeads, c.d, 1), kf = random_tensor(DType::kF32, 1, c.s, kHeads, c.d, 2),
           vf = random_tensor(DType::kF32, 1, c.s, kHeads, c.d, 3), of(DType::kF32, 1, c.s, kHeads, c.d);
    kernels::AttentionOptions o = opt;
    o.isa = kernels::Isa::kAuto;
    const auto t0 = Clock::now();
    kernels::attention_forward(qf.view(), kf.view(), vf.view(), of.view(), lse.view(), o);
    return seconds_since(t0);
  };
  const double sgemm = adjacent_sgemm();
  reset_memory_peak();
  const std::size_t before = memory_stats().current;
  const auto t0 = Clock::now();
  for (auto _ : state) {
    kernels::attention_forward(q.view(), k.view(), v.view(), out.view(), lse.view(), opt);
    benchmark::DoNotOptimize(out.data<char>());
  }
  set_counters(state, flops, seconds_since(t0), c.threads, sgemm);
  const double io_bytes = static_cast<double>(c.s * kHeads) *
                          (4.0 * static_cast<double>(c.d * dtype_size(c.dtype)) + 4.0);  // q k v o, lse
  state.counters["io_MB"] = io_bytes / 1e6;
  state.counters["extra_MB"] = static_cast<double>(memory_stats().peak - before) / 1e6;
  set_amx_references(state, c, state.counters["GFLOPs"], flops, run_fp32);
}

void bench_backward(benchmark::State& state, Case c) {
  Tensor q = random_tensor(c.dtype, 1, c.s, kHeads, c.d, 1), k = random_tensor(c.dtype, 1, c.s, kHeads, c.d, 2),
         v = random_tensor(c.dtype, 1, c.s, kHeads, c.d, 3), dout = random_tensor(c.dtype, 1, c.s, kHeads, c.d, 4);
  kernels::AttentionOptions opt;
  opt.mask.causal = c.causal;
  opt.threads = c.threads;
  opt.isa = c.isa;
  ForwardOutputs f = attention_forward(q.view(), k.view(), v.view(), opt, DType::kF32);
  RowStats delta(1, kHeads, c.s);
  kernels::compute_delta(dout.view(), f.out.view(), delta.view(), c.threads);
  Tensor dq(DType::kF32, 1, c.s, kHeads, c.d), dk(DType::kF32, 1, c.s, kHeads, c.d), dv(DType::kF32, 1, c.s, kHeads, c.d);
  dq.fill_zero();
  dk.fill_zero();
  dv.fill_zero();
  const double flops = 2.5 * 4.0 * static_cast<double>(c.s * c.s * c.d * kHeads) *
                       kernels::visible_fraction(c.s, c.s, opt);
  const auto run_fp32 = [&] {
    Tensor qf = random_tensor(DType::kF32, 1, c.s, kHeads, c.d, 1), kf = random_tensor(DType::kF32, 1, c.s, kHeads, c.d, 2),
           vf = random_tensor(DType::kF32, 1, c.s, kHeads, c.d, 3), df = random_tensor(DType::kF32, 1, c.s, kHeads, c.d, 4);
    kernels::AttentionOptions o = opt;
    o.isa = kernels::Isa::kAuto;
    const auto t0 = Clock::now();
    kernels::attention_backward(qf.view(), kf.view(), vf.view(), df.view(), f.lse.view(), delta.view(), dq.view(),
                                dk.view(), dv.view(), o);
    return seconds_since(t0);
  };
  const double sgemm = adjacent_sgemm();
  const auto t0 = Clock::now();
  for (auto _ : state) {
    kernels::attention_backward(q.view(), k.view(), v.view(), dout.view(), f.lse.view(), delta.view(),
                                dq.view(), dk.view(), dv.view(), opt);
  }
  set_counters(state, flops, seconds_since(t0), c.threads, sgemm);
  set_amx_references(state, c, state.counters["GFLOPs"], flops, run_fp32);
}

// Materialised attention: S = scale Q K^T in memory (s x s fp32), row softmax, O = P V.
void bench_naive(benchmark::State& state, Case c) {
  Tensor q = random_tensor(DType::kF32, 1, c.s, 1, c.d, 1), k = random_tensor(DType::kF32, 1, c.s, 1, c.d, 2),
         v = random_tensor(DType::kF32, 1, c.s, 1, c.d, 3);
  Tensor out(DType::kF32, 1, c.s, 1, c.d);
  std::vector<float> scores(static_cast<std::size_t>(c.s * c.s));
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
  const double flops = 4.0 * static_cast<double>(c.s * c.s * c.d);
  const double sgemm = adjacent_sgemm();
  const auto t0 = Clock::now();
  for (auto _ : state) {
    kernels::sgemm(false, true, c.s, c.s, c.d, scale, q.data<float>(), c.d, k.data<float>(), c.d, 0.0f,
                   scores.data(), c.s);
    for (std::int64_t i = 0; i < c.s; ++i) {
      float* row = scores.data() + i * c.s;
      float m = -INFINITY, sum = 0.0f;
      for (std::int64_t j = 0; j < c.s; ++j) m = std::max(m, row[j]);
      for (std::int64_t j = 0; j < c.s; ++j) sum += (row[j] = std::exp(row[j] - m));
      for (std::int64_t j = 0; j < c.s; ++j) row[j] /= sum;
    }
    kernels::sgemm(false, false, c.s, c.d, c.s, 1.0f, scores.data(), c.s, v.data<float>(), c.d, 0.0f,
                   out.data<float>(), c.d);
  }
  set_counters(state, flops, seconds_since(t0), 1, sgemm);
  state.counters["extra_MB"] = static_cast<double>(c.s * c.s * 4) / 1e6;  // the score matrix
}

void bench_sgemm(benchmark::State& state, std::int64_t m, std::int64_t n, std::int64_t k) {
  std::vector<float> a(static_cast<std::size_t>(m * k), 0.5f), b(static_cast<std::size_t>(n * k), 0.25f),
      c(static_cast<std::size_t>(m * n));
  const auto t0 = Clock::now();
  for (auto _ : state) {
    kernels::sgemm(false, true, m, n, k, 1.0f, a.data(), k, b.data(), k, 0.0f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  const double gflops = 2.0 * static_cast<double>(m * n * k) * static_cast<double>(state.iterations()) /
                        seconds_since(t0) / 1e9;
  state.counters["GFLOPs"] = gflops;
  state.counters["ratio_sgemm"] = gflops / g_sgemm_gflops;
}

void bench_amx_gemm(benchmark::State& state, int m, int n, int k) {
  const kernels::amx::Ops& ops = *amx_tiles();
  for (auto _ : state) state.counters["GFLOPs"] = measure_amx_gemm(ops, m, n, k);
  state.counters["ratio_sgemm"] = state.counters["GFLOPs"] / g_sgemm_gflops;
}

void register_all() {
  benchmark::RegisterBenchmark("sgemm/512x512x128", bench_sgemm, 512, 512, 128)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("sgemm/64x128x128", bench_sgemm, 64, 128, 128)->Unit(benchmark::kMillisecond);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (std::int64_t d : {64, 128}) {
      for (std::int64_t s : {1024, 4096, 16384}) {
        for (bool causal : {false, true}) {
          for (int threads : {1, 2}) {
            const Case c{s, d, causal, threads, dtype};
            benchmark::RegisterBenchmark(case_name("fwd", c).c_str(), bench_forward, c)
                ->Unit(benchmark::kMillisecond)->UseRealTime();
            benchmark::RegisterBenchmark(case_name("bwd", c).c_str(), bench_backward, c)
                ->Unit(benchmark::kMillisecond)->UseRealTime();
          }
        }
      }
    }
  }
  for (std::int64_t s : {1024, 4096, 16384}) {
    const Case c{s, 128, false, 1, DType::kF32};
    benchmark::RegisterBenchmark(case_name("naive", c).c_str(), bench_naive, c)->Unit(benchmark::kMillisecond);
  }
  if (amx_tiles() == nullptr) return;
  for (auto [m, n, k] : {std::tuple{512, 512, 128}, {2048, 2048, 2048}}) {
    const std::string name = "amx_gemm/" + std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k);
    benchmark::RegisterBenchmark(name.c_str(), bench_amx_gemm, m, n, k)->Iterations(1)->Unit(benchmark::kMillisecond);
  }
  for (std::int64_t d : {64, 128}) {
    for (std::int64_t s : {4096, 16384}) {
      for (bool causal : {false, true}) {
        for (int threads : {1, 2}) {
          const Case c{s, d, causal, threads, DType::kBF16, kernels::Isa::kAmxBf16};
          benchmark::RegisterBenchmark(case_name("amx_fwd", c).c_str(), bench_forward, c)
              ->Unit(benchmark::kMillisecond)->UseRealTime();
          benchmark::RegisterBenchmark(case_name("amx_bwd", c).c_str(), bench_backward, c)
              ->Unit(benchmark::kMillisecond)->UseRealTime();
        }
      }
    }
  }
}

}  // namespace
}  // namespace burst

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  const auto& blas = burst::kernels::blas_info();
  // Same-run limit: single-thread sgemm on a 512 x 512 x 128 product (a query block row of
  // scores against many keys, the shape the kernels' work adds up to).
  burst::g_sgemm_gflops = burst::measure_sgemm(512, 512, 128);
  const double large = burst::measure_sgemm(2048, 2048, 2048);
  const auto& ops = burst::kernels::tile_ops(burst::kernels::Isa::kAuto);
  std::printf("BLAS %s (core %s, %s)\nisa %s, fp32 route %s, bf16 route %s\n"
              "same-run sgemm, 1 thread, at start-up: 512x512x128 %.1f GFLOP/s, 2048^3 %.1f GFLOP/s "
              "(ratio_sgemm uses 512x512x128 measured before each case: sgemm_GFLOPs)\n",
              blas.library.c_str(), blas.core.c_str(), blas.how.c_str(), burst::kernels::isa_name(ops.isa).c_str(),
              burst::kernels::detail::route_name(burst::kernels::detail::route_of(ops, burst::DType::kF32)),
              burst::kernels::detail::route_name(burst::kernels::detail::route_of(ops, burst::DType::kBF16)),
              burst::g_sgemm_gflops,
              large);
  if (const burst::kernels::amx::Ops* amx = burst::amx_tiles(); amx != nullptr) {
    const double amx_small = burst::measure_amx_gemm(*amx, 512, 512, 128);
    const double amx_large = burst::measure_amx_gemm(*amx, 2048, 2048, 2048);
    std::printf("same-run AMX bf16 GEMM through the tile layer (amxbf16), 1 thread: 512x512x128 %.1f GFLOP/s "
                "(%.2fx sgemm), 2048^3 %.1f GFLOP/s (%.2fx sgemm); amx_* cases: bf16 on amxbf16, ratio_fp32 against "
                "the same case in fp32 measured right before\n",
                amx_small, amx_small / burst::g_sgemm_gflops, amx_large, amx_large / large);
    benchmark::AddCustomContext("amx_gemm_512_gflops_1thread", std::to_string(amx_small));
    benchmark::AddCustomContext("amx_gemm_2048_gflops_1thread", std::to_string(amx_large));
  } else {
    std::printf("amxbf16 not run here (%s): no amx_* cases\n", burst::kernels::amx_bf16_status().why.c_str());
  }
  benchmark::AddCustomContext("sgemm_2048_gflops_1thread", std::to_string(large));
  benchmark::AddCustomContext("sgemm_gflops_1thread", std::to_string(burst::g_sgemm_gflops));
  benchmark::AddCustomContext("blas_core", blas.core);
  burst::register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
