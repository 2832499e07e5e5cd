// `burst decode`: prefill a context of N tokens into a KV cache sharded over the ranks, then T
// decode steps (or chunks of C tokens), each checked against the double reference; prints
// and writes per-token latency, prefill time, bytes per token, cache memory and errors.
#include "decode_cmd.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <random>
#include <thread>

#include "args.h"
#include "burst/decode.h"
#include "burst/error.h"
#include "burst/layout.h"
#include "burst/world.h"
#include "core/hash.h"
#include "flags.h"
#include "json.h"
#include "output.h"
#include "problem.h"
#include "reference/compare.h"
#include "reference/reference.h"

namespace burst::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct DecodeArgs {
  std::int64_t context = 32768, tokens = 16, chunk = 1, batch = 1, heads = 8, head_dim = 128;
  std::optional<std::int64_t> kv_heads;
  std::int64_t window = -1;
  DType dtype = DType::kF32;
  int ranks = 0, threads = 0;
  std::string strategy = "burst", layout = "zigzag", json_path;
  std::uint64_t seed = 0;
  double timeout = 0;
  bool help = false;
};

std::int64_t positive(std::string_view flag, std::string_view v, std::int64_t max) {
  std::int64_t x = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  BURST_CHECK(ec == std::errc() && end == v.data() + v.size() && x >= 1 && x <= max, flag,
              ": expected an integer from 1 to ", max, ", got '", v, "'");
  return x;
}

constexpr Flag<DecodeArgs> kDecodeFlags[] = {
    {"--context", "N", "tokens prefilled into the cache (default 32768)",
     [](DecodeArgs& a, std::string_view f, std::string_view v) { a.context = positive(f, v, std::int64_t{1} << 32); }},
    {"--tokens", "T", "decode steps after the prefill (default 16)",
     [](DecodeArgs& a, std::string_view f, std::string_view v) { a.tokens = positive(f, v, 1 << 20); }},
    {"--chunk", "C", "new tokens per step: 1 decodes, more prefills chunks onto the cache (default 1)",
     [](DecodeArgs& a, std::string_view f, std::string_view v) { a.chunk = positive(f, v, 1 << 20); }},
    {"--batch", "B", "sequences (default 1)",
     [](DecodeArgs& a, std::string_view f, std::string_view v) { a.batch = positive(f, v, 1 << 20); }},
    {"--heads", "H", "query heads (default 8)",
     [](DecodeArgs& a, std::string_view f, std::string_view v) { a.heads = positive(f, v, 1 << 20); }},
    {"--kv-heads", "G", "key/value heads, dividing H (default: H)",
     [](DecodeArgs& a, std::string_view f, std::string_view v) { a.kv_heads = positive(f, v, 1 << 20); }},
    {"--head-dim", "D", "head dimension, at most 256 (default 128)",
     [](DecodeArgs& a, std::string_view f, std::string_view v) { a.head_dim = positive(f, v, kernels::kMaxHeadDim); }},
    {"--window", "L", "sliding window: a token sees the L tokens before it and itself (default: all)",
     [](DecodeArgs& a, std::string_view f, std::string_view v) {
       a.window = positive(f, v, std::int64_t{1} << 40) - 1;
     }},
    {"--dtype", "fp32|bf16", "storage of q, k, v and the cache (default fp32)",
     [](DecodeArgs& a, std::string_view f, std::string_view v) { a.dtype = parse_dtype(v, f); }},
    {"--strategy", "burst|tp|ring", "burst: the cache stays, partials merge by recursive doubling; tp: heads split "
     "over ranks; ring: the cache travels (default burst)",
     [](DecodeArgs& a, std::string_view f, std::string_view v) {
       algo::parse_decode_strategy(std::string(v), std::string(f));
       a.strategy = v;
     }},
    {"--layout", "contiguous|zigzag|striped", "token layout of the prefill (default zigzag)",
     [](DecodeArgs& a, std::string_view f, std::string_view v) {
       algo::parse_layout(std::string(v), std::string(f));
       a.layout = v;
     }},
    {"--ranks", "N", "thread ranks (default: the hardware threads); under mpirun its ranks",
     [](DecodeArgs& a, std::string_view f, std::string_view v) { a.ranks = static_cast<int>(positive(f, v, 4096)); }},
    {"--threads", "T", "threads per rank (default: the hardware threads shared among the ranks)",
     [](DecodeArgs& a, std::string_view f, std::string_view v) {
       a.threads = static_cast<int>(positive(f, v, kernels::kMaxThreads));
     }},
    {"--seed", "N", "seed of the random inputs (default 0)",
     [](DecodeArgs& a, std::string_view f, std::string_view v) {
       const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), a.seed);
       BURST_CHECK(ec == std::errc() && end == v.data() + v.size(), f, ": expected a non-negative integer, got '", v, "'");
     }},
    {"--timeout", "SECONDS", "deadline of every wait between ranks (default: BURST_TIMEOUT, else 60)",
     [](DecodeArgs& a, std::string_view f, std::string_view v) {
       a.timeout = static_cast<double>(positive(f, v, 1000000000));
     }},
    {"--json", "FILE", "write the figures as one JSON object to FILE",
     [](DecodeArgs& a, std::string_view, std::string_view v) { a.json_path = v; }},
    {"--help", "", "print this help", [](DecodeArgs& a, std::string_view, std::string_view) { a.help = true; }},
};

// What rank 0 gathers from the run.
struct Figures {
  double prefill_seconds = 0;
  std::vector<double> step_ms;  // slowest rank of each step
  std::uint64_t bytes_per_step_max = 0, bytes_formula_mismatches = 0;
  double bytes_per_step_mean = 0, cache_bytes_max = 0, cache_bytes_total = 0;
  double error = 0, lse_error = 0, prefill_error = 0;
  int skipped_ranks = 0;
};

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())) - 1);
  return v[std::min(i, v.size() - 1)];
}

// Machine read bandwidth: every hardware thread summing its part of a buffer larger than the
// caches at once (the decode's own access pattern: one streaming read).
double read_bandwidth(int threads) {
  const std::size_t per = std::size_t{64} << 20;  // 64 MiB per thread
  std::vector<std::thread> pool;
  std::vector<double> rates(static_cast<std::size_t>(threads));
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      AlignedBuffer buf(per);
      std::fill_n(buf.as<float>(), per / 4, 1.0f);
      double best = 0;
      for (int rep = 0; rep < 3; ++rep) {
        const auto t0 = Clock::now();
        float sum[16] = {};
        const float* x = buf.as<float>();
        for (std::size_t i = 0; i < per / 4; i += 16)
          for (int l = 0; l < 16; ++l) sum[l] += x[i + static_cast<std::size_t>(l)];
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        if (sum[0] > 0) best = std::max(best, static_cast<double>(per) / s);
      }
      rates[static_cast<std::size_t>(t)] = best;
    });
  for (auto& t : pool) t.join();
  double total = 0;
  for (double r : rates) total += r;
  return total;
}

}  // namespace

std::string decode_usage() {
  return flag_usage<DecodeArgs>(
      "decode",
      "Long-context inference: prefills --context tokens into a KV cache sharded over the ranks "
      "(BurstAttention's forward), then decodes --tokens steps of --chunk new tokens each, every one "
      "checked against a double-precision reference. Prints per-token latency (median, p99), prefill "
      "time, bytes each rank sends per token (against its formula), cache memory per rank and the "
      "fraction of the machine's read bandwidth reached (measured in the same run).",
      kDecodeFlags);
}

int run_decode(std::span<char* const> argv) {
  DecodeArgs a;
  parse_flags<DecodeArgs>("decode", kDecodeFlags, argv, a);
  if (a.help) {
    std::cout << decode_usage();
    return kExitOk;
  }
  const std::int64_t g = a.kv_heads.value_or(a.heads);
  BURST_CHECK(a.heads % g == 0, "--kv-heads: expected a divisor of --heads ", a.heads, ", got ", g);
  const algo::DecodeStrategy strategy = algo::parse_decode_strategy(a.strategy, "--strategy");
  const int hardware = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const int ranks = comm::launched_by_mpi() ? 0 : (a.ranks > 0 ? a.ranks : hardware);
  BURST_CHECK(ranks == 0 || a.context >= ranks, "--context: expected at least one token per rank (", ranks, "), got ",
              a.context);
  Outputs outputs(comm::launcher_rank() == 0);
  if (!a.json_path.empty()) outputs.expect_file("--json", a.json_path);

  // Global inputs, the same on every rank: the prompt, then the new tokens.
  const std::int64_t total = a.context + a.tokens * a.chunk;
  std::mt19937_64 rng(a.seed);
  const Tensor q = random_tensor(rng, a.dtype, a.batch, total, a.heads, a.head_dim);
  const Tensor k = random_tensor(rng, a.dtype, a.batch, total, g, a.head_dim);
  const Tensor v = random_tensor(rng, a.dtype, a.batch, total, g, a.head_dim);
  std::uint64_t hash = hash_bytes(q.data<char>(), q.bytes());
  hash = hash_bytes(k.data<char>(), k.bytes(), hash);
  hash = hash_bytes(v.data<char>(), v.bytes(), hash);
  const std::vector<comm::Setting> settings = {
      {"command", "decode"}, {"strategy", a.strategy}, {"context", std::to_string(a.context)},
      {"tokens", std::to_string(a.tokens)}, {"chunk", std::to_string(a.chunk)}, {"window", std::to_string(a.window)},
      {"layout", a.layout}, {"hash of the global inputs", std::to_string(hash)}};

  Figures fig;
  std::mutex root_mutex;
  int world_size = 1;
  comm::run_world(ranks, [&](comm::Communicator& c) {
    comm::check_agreement(c, settings);
    if (a.timeout > 0) c.set_timeout(std::chrono::milliseconds(static_cast<std::int64_t>(a.timeout * 1000)));
    const int p = c.world_size(), r = c.rank();
    const auto& nodes = c.node_of_rank();
    const auto here = std::count(nodes.begin(), nodes.end(), nodes[static_cast<std::size_t>(r)]);
    const int threads = a.threads > 0 ? a.threads : std::max(1, hardware / static_cast<int>(here));
    algo::KvCache cache(c, strategy, a.batch, g, a.head_dim, a.dtype, total / p + a.tokens * a.chunk + 16);
    algo::DecodeOptions o;
    o.window_left = a.window;
    o.threads = threads;

    // Prefill: BurstAttention's forward on the prompt's shards (token-sharded caches), or
    // the whole prompt's heads of this rank (tp).
    auto rows = [&](const Tensor& t, std::int64_t first, std::int64_t n) {
      TensorView view = t.view();
      view.data = view.at(0, first, 0);
      view.s = n;
      return view;
    };
    c.barrier();
    auto t0 = Clock::now();
    double prefill_error = 0;
    if (strategy == algo::DecodeStrategy::kTensorParallel) {
      Tensor out(DType::kF32, a.batch, a.context, a.heads, a.head_dim);
      RowStats lse(a.batch, a.heads, a.context);
      algo::extend(c, cache, rows(q, 0, a.context), rows(k, 0, a.context), rows(v, 0, a.context), out.view(),
                   lse.view(), o);
    } else {
      algo::BurstOptions bo;
      bo.seqlen = a.context;
      bo.layout = algo::parse_layout(a.layout, "--layout");
      bo.mask.causal = true;
      bo.mask.window_left = a.window;
      bo.threads = threads;
      const auto mine = algo::shard_positions(a.context, p, r, bo.layout);
      const auto n = static_cast<std::int64_t>(mine.size());
      auto shard = [&](const Tensor& t) {
        Tensor s(t.view().dtype, a.batch, n, t.view().h, a.head_dim);
        algo::copy_to_shard(rows(t, 0, a.context), mine, s.view());
        return s;
      };
      const Tensor qs = shard(q), ks = shard(k), vs = shard(v);
      Tensor out(DType::kF32, a.batch, n, a.heads, a.head_dim);
      RowStats lse(a.batch, a.heads, n);
      algo::prefill(c, cache, qs.view(), ks.view(), vs.view(), out.view(), lse.view(), bo);
      // Spot check: the prompt's last row on this rank against the reference.
      kernels::AttentionOptions ref;
      ref.mask = bo.mask;
      const auto want = reference::forward_rows(rows(q, 0, a.context), rows(k, 0, a.context), rows(v, 0, a.context), ref,
                                                {mine.back()});
      reference::NormwiseError err;
      for (std::int64_t ib = 0; ib < a.batch; ++ib)
        for (std::int64_t h = 0; h < a.heads; ++h)
          for (std::int64_t x = 0; x < a.head_dim; ++x)
            err.add(out.view().row<float>(ib, n - 1, h)[x],
                    want.out[static_cast<std::size_t>(((ib * 1) * a.heads + h) * a.head_dim + x)]);
      prefill_error = err.error();
    }
    std::vector<double> prefill_all(static_cast<std::size_t>(p));
    const double prefill_s = std::chrono::duration<double>(Clock::now() - t0).count();
    c.all_gather(&prefill_s, prefill_all.data(), sizeof(double));

    // Decode steps, each against the reference (the rows of the new tokens).
    std::vector<double> step_seconds;
    reference::NormwiseError err;
    double lse_err = 0, mismatches = 0, bytes_sum = 0, bytes_max = 0;
    int skipped = 0;
    Tensor out(DType::kF32, a.batch, a.chunk, a.heads, a.head_dim);
    RowStats lse(a.batch, a.heads, a.chunk);
    for (std::int64_t step = 0; step < a.tokens; ++step) {
      const std::int64_t first = a.context + step * a.chunk;
      out.fill_nan();
      lse.fill_nan();
      c.barrier();
      t0 = Clock::now();
      const algo::DecodeStats st = algo::extend(c, cache, rows(q, first, a.chunk), rows(k, first, a.chunk),
                                                rows(v, first, a.chunk), out.view(), lse.view(), o);
      step_seconds.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      skipped += st.skipped;
      const std::uint64_t formula = algo::extend_bytes(strategy, p, r, a.batch, a.heads, g, a.head_dim, a.chunk,
                                                       dtype_size(a.dtype), cache.tokens_per_rank());
      mismatches += st.bytes_sent != formula;
      bytes_sum += static_cast<double>(st.bytes_sent);
      bytes_max = std::max(bytes_max, static_cast<double>(st.bytes_sent));
      if (r != 0) continue;
      kernels::AttentionOptions ref;
      ref.mask.causal = true;
      ref.mask.window_left = a.window;
      std::vector<std::int64_t> wanted;
      for (std::int64_t i = 0; i < a.chunk; ++i) wanted.push_back(first + i);
      const auto want = reference::forward_rows(rows(q, 0, total), rows(k, 0, total), rows(v, 0, total), ref, wanted);
      for (std::int64_t ib = 0; ib < a.batch; ++ib)
        for (std::int64_t i = 0; i < a.chunk; ++i)
          for (std::int64_t h = 0; h < a.heads; ++h) {
            const std::size_t at = static_cast<std::size_t>((ib * a.chunk + i) * a.heads + h);
            for (std::int64_t x = 0; x < a.head_dim; ++x)
              err.add(out.view().row<float>(ib, i, h)[x], want.out[at * static_cast<std::size_t>(a.head_dim) +
                                                                    static_cast<std::size_t>(x)]);
            lse_err = std::max(lse_err, reference::lse_error(lse.view().row(ib, h)[i],
                                                             want.lse[static_cast<std::size_t>((ib * a.heads + h) * a.chunk + i)]));
          }
    }
    // Rank 0 learns the slowest rank of every step, and every rank's bytes and cache.
    std::vector<double> all(step_seconds.size() * static_cast<std::size_t>(p));
    c.all_gather(step_seconds.data(), all.data(), step_seconds.size() * sizeof(double));
    const double mine[6] = {bytes_sum, bytes_max, mismatches, static_cast<double>(cache.bytes()), static_cast<double>(skipped),
                            prefill_error};
    std::vector<double> each(6 * static_cast<std::size_t>(p));
    c.all_gather(mine, each.data(), sizeof(mine));
    if (r != 0) return;
    std::lock_guard lock(root_mutex);
    world_size = p;
    fig.prefill_seconds = *std::max_element(prefill_all.begin(), prefill_all.end());
    for (std::size_t s = 0; s < step_seconds.size(); ++s) {
      double slowest = 0;
      for (int rr = 0; rr < p; ++rr) slowest = std::max(slowest, all[static_cast<std::size_t>(rr) * step_seconds.size() + s]);
      fig.step_ms.push_back(slowest * 1e3);
    }
    for (int rr = 0; rr < p; ++rr) {
      const double* e = &each[6 * static_cast<std::size_t>(rr)];
      fig.bytes_per_step_mean += e[0] / static_cast<double>(a.tokens * p);
      fig.bytes_per_step_max = std::max(fig.bytes_per_step_max, static_cast<std::uint64_t>(e[1]));
      fig.bytes_formula_mismatches += static_cast<std::uint64_t>(e[2]);
      fig.cache_bytes_max = std::max(fig.cache_bytes_max, e[3]);
      fig.cache_bytes_total += e[3];
      fig.skipped_ranks += static_cast<int>(e[4]);
      fig.prefill_error = std::max(fig.prefill_error, e[5]);
    }
    fig.error = err.error();
    fig.lse_error = lse_err;
  });
  if (comm::launcher_rank() != 0) return kExitOk;

  const double bandwidth = read_bandwidth(hardware);
  const double p50 = percentile(fig.step_ms, 0.5), p99 = percentile(fig.step_ms, 0.99);
  const double per_token = fig.bytes_per_step_mean / static_cast<double>(a.chunk);
  const double read_rate = fig.cache_bytes_total / (p50 * 1e-3);
  const double tolerance = a.dtype == DType::kF32 ? 1e-4 : 1e-2;
  const double max_error = std::max({fig.error, fig.lse_error, fig.prefill_error});
  std::printf("decode    b %lld, context %lld, %lld steps of %lld token(s), heads %lld/%lld, head_dim %lld, %s%s\n",
              static_cast<long long>(a.batch), static_cast<long long>(a.context), static_cast<long long>(a.tokens),
              static_cast<long long>(a.chunk), static_cast<long long>(a.heads), static_cast<long long>(g),
              static_cast<long long>(a.head_dim), std::string(dtype_name(a.dtype)).c_str(),
              a.window >= 0 ? (", window " + std::to_string(a.window + 1)).c_str() : "");
  std::printf("strategy  %s on %d rank(s), prefill layout %s\n", a.strategy.c_str(), world_size, a.layout.c_str());
  std::printf("prefill   %.4f s\n", fig.prefill_seconds);
  std::printf("per step  median %.3f ms, p99 %.3f ms (slowest rank)\n", p50, p99);
  std::printf("sent      %.0f bytes per token per rank (mean; each step equal to its formula: %s)\n", per_token,
              fig.bytes_formula_mismatches == 0 ? "yes" : "NO");
  std::printf("cache     %.2f MB per rank (largest), %.2f MB in all\n", fig.cache_bytes_max / 1e6, fig.cache_bytes_total / 1e6);
  std::printf("memory    cache read at %.2f GB/s, %.0f%% of this machine's %.2f GB/s read bandwidth (same run)\n",
              read_rate / 1e9, 100 * read_rate / bandwidth, bandwidth / 1e9);
  std::printf("skipped   %d rank-steps outside the window\n", fig.skipped_ranks);
  std::printf("result    %s: max_error %.2e (o %.2e, lse %.2e, prefill %.2e), tolerance %.0e\n",
              max_error <= tolerance && fig.bytes_formula_mismatches == 0 ? "ok" : "FAILED", max_error, fig.error,
              fig.lse_error, fig.prefill_error, tolerance);
  if (!a.json_path.empty()) {
    JsonObject j;
    j.string("strategy", a.strategy);
    j.integer("ranks", world_size);
    j.integer("context", a.context);
    j.integer("tokens", a.tokens);
    j.integer("chunk", a.chunk);
    j.string("dtype", std::string(dtype_name(a.dtype)));
    j.number("prefill_seconds", fig.prefill_seconds);
    j.number("decode_ms_p50", p50);
    j.number("decode_ms_p99", p99);
    j.number("bytes_per_token", per_token);
    j.boolean("bytes_equal_formula", fig.bytes_formula_mismatches == 0);
    j.number("cache_bytes_per_rank", fig.cache_bytes_max);
    j.number("read_bandwidth", bandwidth);
    j.number("bandwidth_fraction", read_rate / bandwidth);
    j.integer("skipped_rank_steps", fig.skipped_ranks);
    j.number("max_error", max_error);
    j.number("tolerance", tolerance);
    outputs.write_text(a.json_path, j.text());
    outputs.commit();
  }
  if (fig.bytes_formula_mismatches != 0) {
    std::cerr << "burst: FAILED: bytes sent differ from the formula in " << fig.bytes_formula_mismatches << " rank-steps\n";
    return kExitOverTolerance;
  }
  if (!(max_error <= tolerance)) {
    std::cerr << "burst: FAILED: decode error " << max_error << " over tolerance " << tolerance << "\n";
    return kExitOverTolerance;
  }
  return kExitOk;
}

}  // namespace burst::cli
