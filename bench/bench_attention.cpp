// Local attention benchmarks: forward and backward against the BLAS sgemm measured in the same
// run, plus a naive materialised-attention baseline with its peak memory.
//
//   build/bin/bench_attention [--benchmark_filter=REGEX] [--benchmark_format=json] ...
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
#include <string>
#include <vector>

#include "burst/attention.h"
#include "burst/kernels.h"
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

struct Case {
  std::int64_t s, d;
  bool causal;
  int threads;
  DType dtype;
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

void bench_forward(benchmark::State& state, Case c) {
  Tensor q = random_tensor(c.dtype, 1, c.s, kHeads, c.d, 1), k = random_tensor(c.dtype, 1, c.s, kHeads, c.d, 2),
         v = random_tensor(c.dtype, 1, c.s, kHeads, c.d, 3);
  Tensor out(c.dtype, 1, c.s, kHeads, c.d);
  RowStats lse(1, kHeads, c.s);
  kernels::AttentionOptions opt;
  opt.mask.causal = c.causal;
  opt.threads = c.threads;
  const double flops = 4.0 * static_cast<double>(c.s * c.s * c.d * kHeads) *
                       kernels::visible_fraction(c.s, c.s, opt);
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
}

void bench_backward(benchmark::State& state, Case c) {
  Tensor q = random_tensor(c.dtype, 1, c.s, kHeads, c.d, 1), k = random_tensor(c.dtype, 1, c.s, kHeads, c.d, 2),
         v = random_tensor(c.dtype, 1, c.s, kHeads, c.d, 3), dout = random_tensor(c.dtype, 1, c.s, kHeads, c.d, 4);
  kernels::AttentionOptions opt;
  opt.mask.causal = c.causal;
  opt.threads = c.threads;
  ForwardOutputs f = attention_forward(q.view(), k.view(), v.view(), opt, DType::kF32);
  RowStats delta(1, kHeads, c.s);
  kernels::compute_delta(dout.view(), f.out.view(), delta.view(), c.threads);
  Tensor dq(DType::kF32, 1, c.s, kHeads, c.d), dk(DType::kF32, 1, c.s, kHeads, c.d), dv(DType::kF32, 1, c.s, kHeads, c.d);
  dq.fill_zero();
  dk.fill_zero();
  dv.fill_zero();
  const double flops = 2.5 * 4.0 * static_cast<double>(c.s * c.s * c.d * kHeads) *
                       kernels::visible_fraction(c.s, c.s, opt);
  const double sgemm = adjacent_sgemm();
  const auto t0 = Clock::now();
  for (auto _ : state) {
    kernels::attention_backward(q.view(), k.view(), v.view(), dout.view(), f.lse.view(), delta.view(),
                                dq.view(), dk.view(), dv.view(), opt);
  }
  set_counters(state, flops, seconds_since(t0), c.threads, sgemm);
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
              burst::kernels::detail::fused_route(ops, burst::DType::kF32) ? "fused" : "blas",
              burst::kernels::detail::fused_route(ops, burst::DType::kBF16) ? "fused" : "blas", burst::g_sgemm_gflops,
              large);
  benchmark::AddCustomContext("sgemm_2048_gflops_1thread", std::to_string(large));
  benchmark::AddCustomContext("sgemm_gflops_1thread", std::to_string(burst::g_sgemm_gflops));
  benchmark::AddCustomContext("blas_core", blas.core);
  burst::register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
