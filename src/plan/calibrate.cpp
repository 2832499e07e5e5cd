#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "burst/error.h"
#include "burst/kernels.h"
#include "burst/linear.h"
#include "burst/local_world.h"
#include "burst/plan.h"
#include "burst/strategy.h"
#include "burst/tensor.h"
#include "steps.h"

namespace burst::plan {
namespace {

using Clock = std::chrono::steady_clock;

// Median wall time of `repeat` calls of fn, after one untimed warm-up call.
template <class Fn>
double median_seconds(int repeat, Fn&& fn) {
  fn();
  std::vector<double> s;
  for (int i = 0; i < repeat; ++i) {
    const auto t0 = Clock::now();
    fn();
    s.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(s.begin(), s.end());
  return s[s.size() / 2];
}

template <class Fn>
double seconds_of(Fn&& fn) {
  const auto t0 = Clock::now();
  fn();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void fill_random(const TensorView& t, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const auto n = static_cast<std::size_t>(t.numel());
  if (t.dtype == DType::kF32) {
    float* p = static_cast<float*>(t.data);
    for (std::size_t i = 0; i < n; ++i) p[i] = dist(rng);
  } else {
    auto* p = static_cast<bf16_bits*>(t.data);
    for (std::size_t i = 0; i < n; ++i) p[i] = float_to_bf16(dist(rng));
  }
}

// The attention kernels' configurations the calibration measures: fp32 and bf16, without and
// with a causal mask.
constexpr int kKernelConfigs = 4;
DType config_dtype(int i) { return i < 2 ? DType::kF32 : DType::kBF16; }
bool config_causal(int i) { return i % 2 == 1; }

// Forward and backward FLOP/s of each configuration on one thread, counted as the library
// counts them (forward 4 b h s^2 d, backward 2.5x), with the spread of the samples behind
// each (largest over smallest, less 1).
struct KernelRates {
  std::array<double, kKernelConfigs> forward{}, backward{}, forward_spread{}, backward_spread{};
  KernelRates operator+(const KernelRates& o) const {
    KernelRates r;
    for (int i = 0; i < kKernelConfigs; ++i) {
      const auto k = static_cast<std::size_t>(i);
      r.forward[k] = forward[k] + o.forward[k];
      r.backward[k] = backward[k] + o.backward[k];
      r.forward_spread[k] = forward_spread[k] + o.forward_spread[k];
      r.backward_spread[k] = backward_spread[k] + o.backward_spread[k];
    }
    return r;
  }
  KernelRates operator/(double x) const {
    KernelRates r = *this;
    for (std::size_t k = 0; k < kKernelConfigs; ++k) {
      r.forward[k] /= x;
      r.backward[k] /= x;
      r.forward_spread[k] /= x;
      r.backward_spread[k] /= x;
    }
    return r;
  }
};

// One configuration's problem: 8 heads x 4096 tokens, d = 128, random inputs. Eight heads
// as the models' (a token's heads lie side by side, so a head's rows are strided by every
// head): with two, the kernels ran 11% faster here than with 8 or 32, whose rates agree.
struct KernelProblem {
  static constexpr std::int64_t kSeq = 4096, kHeads = 8, kDim = 128;
  Tensor q, k, v, dout, out, dq, dk, dv;
  RowStats lse{1, kHeads, kSeq}, delta{1, kHeads, kSeq};
  kernels::AttentionOptions o;
  double flops = 0;

  KernelProblem(DType dtype, bool causal)
      : q(dtype, 1, kSeq, kHeads, kDim), k(dtype, 1, kSeq, kHeads, kDim), v(dtype, 1, kSeq, kHeads, kDim),
        dout(dtype, 1, kSeq, kHeads, kDim), out(dtype, 1, kSeq, kHeads, kDim), dq(DType::kF32, 1, kSeq, kHeads, kDim),
        dk(DType::kF32, 1, kSeq, kHeads, kDim), dv(DType::kF32, 1, kSeq, kHeads, kDim) {
    fill_random(q.view(), 1);
    fill_random(k.view(), 2);
    fill_random(v.view(), 3);
    fill_random(dout.view(), 4);
    o.threads = 1;
    o.mask.causal = causal;
    flops = 4.0 * kHeads * static_cast<double>(kSeq) * static_cast<double>(kSeq) * kDim *
            kernels::visible_fraction(kSeq, kSeq, o);
  }
  double forward() {
    return seconds_of([&] { kernels::attention_forward(q.view(), k.view(), v.view(), out.view(), lse.view(), o); });
  }
  double backward() {
    kernels::compute_delta(dout.view(), out.view(), delta.view(), 1);
    dq.fill_zero();
    dk.fill_zero();
    dv.fill_zero();
    return seconds_of([&] {
      kernels::attention_backward(q.view(), k.view(), v.view(), dout.view(), lse.view(), delta.view(), dq.view(),
                                  dk.view(), dv.view(), o);
    });
  }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
double spread(const std::vector<double>& v) {
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return *hi / *lo - 1.0;
}

// Every configuration's rates on this thread: `rounds` rounds, each timing one forward and one
// backward call of every configuration in turn (after a warm-up round), and the median round
// of each. Interleaved, a spell of a faster or slower machine (this one is shared) moves a
// sample of every configuration rather than all samples of one.
KernelRates kernel_rates(int rounds) {
  std::vector<std::unique_ptr<KernelProblem>> problems;
  for (int i = 0; i < kKernelConfigs; ++i) problems.push_back(std::make_unique<KernelProblem>(config_dtype(i), config_causal(i)));
  std::vector<std::vector<double>> fwd(kKernelConfigs), bwd(kKernelConfigs);
  for (int round = -1; round < rounds; ++round) {
    for (int i = 0; i < kKernelConfigs; ++i) {
      KernelProblem& p = *problems[static_cast<std::size_t>(i)];
      const double f = p.forward(), b = p.backward();
      if (round < 0) continue;
      fwd[static_cast<std::size_t>(i)].push_back(p.flops / f);
      bwd[static_cast<std::size_t>(i)].push_back(2.5 * p.flops / b);
    }
  }
  KernelRates r;
  for (std::size_t k = 0; k < kKernelConfigs; ++k) {
    r.forward[k] = median(fwd[k]);
    r.backward[k] = median(bwd[k]);
    r.forward_spread[k] = spread(fwd[k]);
    r.backward_spread[k] = spread(bwd[k]);
  }
  return r;
}

// The fp32 kernels without a mask on this thread: forward and backward rates averaged, the
// median of `rounds` rounds after a warm-up.
double shared_kernel_rate(int rounds) {
  KernelProblem p(DType::kF32, false);
  std::vector<double> rates;
  for (int round = -1; round < rounds; ++round) {
    const double f = p.forward(), b = p.backward();
    if (round >= 0) rates.push_back(0.5 * (p.flops / f + 2.5 * p.flops / b));
  }
  return median(rates);
}

// The fp32 forward without a mask, called until `seconds` have passed (at least 3 calls):
// the median call's rate.
double sustained_forward_rate(double seconds) {
  KernelProblem p(DType::kF32, false);
  std::vector<double> rates;
  const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  while (rates.size() < 3 || Clock::now() < end) rates.push_back(p.flops / p.forward());
  return median(rates);
}

// fp32 GEMM of projection shape (4096 tokens x 1024 -> 1024), one thread.
double gemm_rate() {
  constexpr std::int64_t kRows = 4096, kIn = 1024, kOut = 1024;
  Tensor a(DType::kF32, 1, kRows, 1, kIn), w(DType::kF32, 1, kIn, 1, kOut), c(DType::kF32, 1, kRows, 1, kOut);
  fill_random(a.view(), 5);
  fill_random(w.view(), 6);
  const algo::MatrixView ma = algo::batch_matrix(a.view(), 0), mw = algo::batch_matrix(w.view(), 0),
                         mc = algo::batch_matrix(c.view(), 0);
  const double s = median_seconds(5, [&] { algo::matmul(ma, false, mw, false, mc, 0.0f, 1); });
  return 2.0 * kRows * kIn * kOut / s;
}

// Tokens of ring-rsa's calibration problem: one head's score rows (4 s^2 bytes) at least twice
// the last-level cache, as a real run's rows are (8 heads x 8K tokens on 2 ranks hold 1 GiB of
// them per rank); rows that fit the cache ran 1.6x faster here. At least 8192 tokens.
std::int64_t ring_rsa_tokens() {
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  std::int64_t s = 8192;
  while (l3 > 0 && 4.0 * static_cast<double>(s) * static_cast<double>(s) < 2.0 * static_cast<double>(l3) && s < 65536) s *= 2;
  return s;
}

// ring-rsa's forward and backward FLOP/s on one rank, counted as the kernels' are (4 b h N^2 d
// forward, 2.5x backward, no mask): its GEMMs and its passes over the materialised score rows
// together, which a GEMM rate and a memory bandwidth alone predicted 3x too fast (its softmax
// makes several passes over rows far larger than the caches). One head, d = 128, one call
// each (every call allocates its rows afresh, so a warm-up call would not change that).
std::pair<double, double> ring_rsa_rates(std::int64_t tokens) {
  constexpr std::int64_t kHeads = 1, kDim = 128;
  const std::int64_t n = tokens;
  Tensor q(DType::kF32, 1, n, kHeads, kDim), k(DType::kF32, 1, n, kHeads, kDim), v(DType::kF32, 1, n, kHeads, kDim),
      dout(DType::kF32, 1, n, kHeads, kDim), out(DType::kF32, 1, n, kHeads, kDim);
  fill_random(q.view(), 11);
  fill_random(k.view(), 12);
  fill_random(v.view(), 13);
  fill_random(dout.view(), 14);
  Tensor dq(DType::kF32, 1, n, kHeads, kDim), dk(DType::kF32, 1, n, kHeads, kDim), dv(DType::kF32, 1, n, kHeads, kDim);
  RowStats lse(1, kHeads, n);
  const std::unique_ptr<comm::Communicator> one = comm::single_rank_communicator();
  const algo::StrategyInfo& rsa = algo::strategy_info(algo::Strategy::kRingRsa);
  algo::StrategyOptions o;
  o.seqlen = n;
  o.threads = 1;
  const double flops = 4.0 * kHeads * static_cast<double>(n) * static_cast<double>(n) * kDim;
  auto timed = [](auto&& fn) {
    const auto t0 = Clock::now();
    fn();
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  const double fwd = timed([&] { rsa.forward(*one, q.view(), k.view(), v.view(), out.view(), lse.view(), o); });
  const double bwd = timed([&] {
    rsa.backward(*one, q.view(), k.view(), v.view(), out.view(), lse.view(), dout.view(), dq.view(), dk.view(), dv.view(), o);
  });
  return {flops / fwd, 2.5 * flops / bwd};
}

double copy_bandwidth() {
  constexpr std::size_t kBytes = std::size_t{256} << 20;
  std::vector<char> from(kBytes, 1), to(kBytes, 0);
  const double s = median_seconds(3, [&] { std::memcpy(to.data(), from.data(), kBytes); });
  return 2.0 * static_cast<double>(kBytes) / s;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Forward and backward rates add and average as pairs.
std::pair<double, double> operator+(std::pair<double, double> a, std::pair<double, double> b) {
  return {a.first + b.first, a.second + b.second};
}
std::pair<double, double> operator/(std::pair<double, double> a, double x) { return {a.first / x, a.second / x}; }

// Runs fn on `threads` threads at once and returns the mean of its results: the rate of one
// compute slot while every slot is busy, as when burst run gives each core a rank.
template <class T, class Fn>
T on_every_core(int threads, Fn&& fn) {
  std::vector<T> results(static_cast<std::size_t>(threads));
  std::vector<std::thread> pool;
  std::mutex failure_mutex;
  std::string failure;
  for (int i = 0; i < threads; ++i) {
    pool.emplace_back([&, i] {
      try {
        results[static_cast<std::size_t>(i)] = fn();
      } catch (const std::exception& e) {
        std::lock_guard lock(failure_mutex);
        failure = e.what();
      }
    });
  }
  for (std::thread& t : pool) t.join();
  BURST_CHECK(failure.empty(), "--calibrate: ", failure);
  T sum{};
  for (const T& r : results) sum = sum + r;
  return sum / static_cast<double>(threads);
}

}  // namespace

double available_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  double kb = 0;
  while (in >> key >> kb >> unit) {
    if (key == "MemAvailable:") return kb * 1024.0;
  }
  return 0;
}

Calibration measure_compute(std::ostream& log, int threads, int rounds) {
  BURST_CHECK(rounds >= 1, "--rounds: expected at least 1 round, got ", rounds);
  Calibration c;
  c.cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  c.memory_bytes = available_memory();
  c.measured_at = utc_now();
  c.kernel_heads = KernelProblem::kHeads;
  c.kernel_tokens = KernelProblem::kSeq;
  const kernels::Tile tile = kernels::call_tile(KernelProblem::kDim, {});
  c.tile_rows = tile.block_m;
  c.tile_cols = tile.block_n;
  log << "calibrating: attention kernels fp32 and bf16, without and with a causal mask (" << c.kernel_heads
      << " heads x " << c.kernel_tokens << " tokens, d 128, tiles " << c.tile_rows << " x " << c.tile_cols << "), "
      << rounds << " interleaved rounds, one thread on each of " << threads << " core(s)\n" << std::flush;
  const KernelRates k = on_every_core<KernelRates>(threads, [&] { return kernel_rates(rounds); });
  double* forward[kKernelConfigs] = {&c.attention_forward_f32, &c.attention_forward_f32_causal, &c.attention_forward_bf16,
                                     &c.attention_forward_bf16_causal};
  double* backward[kKernelConfigs] = {&c.attention_backward_f32, &c.attention_backward_f32_causal,
                                      &c.attention_backward_bf16, &c.attention_backward_bf16_causal};
  for (std::size_t i = 0; i < kKernelConfigs; ++i) {
    *forward[i] = k.forward[i];
    *backward[i] = k.backward[i];
    const int n = static_cast<int>(i);
    log << "  " << dtype_name(config_dtype(n)) << (config_causal(n) ? " causal" : "       ") << "  forward "
        << std::fixed << std::setprecision(1) << k.forward[i] / 1e9 << " GFLOP/s (rounds spread "
        << std::setprecision(0) << 100 * k.forward_spread[i] << "%), backward " << std::setprecision(1)
        << k.backward[i] / 1e9 << " (spread " << std::setprecision(0) << 100 * k.backward_spread[i] << "%)\n"
        << std::defaultfloat << std::flush;
  }
  // Ranks beyond the cores share them (burst run with more ranks than cores): the same fp32
  // kernels on two threads per core, against one.
  log << "calibrating: the same fp32 kernels with two threads on each core\n" << std::flush;
  const double shared = on_every_core<double>(2 * threads, [&] { return shared_kernel_rate(std::min(rounds, 3)); });
  c.shared_core_efficiency = 2.0 * shared / (0.5 * (c.attention_forward_f32 + c.attention_backward_f32));
  log << "  " << std::fixed << std::setprecision(1) << 2.0 * shared / 1e9 << " GFLOP/s per core, "
      << std::setprecision(2) << c.shared_core_efficiency << " of one thread per core\n" << std::defaultfloat << std::flush;
  log << "calibrating: projection GEMM and memory copy\n" << std::flush;
  c.gemm_f32 = on_every_core<double>(threads, [] { return gemm_rate(); });
  c.memory_bandwidth = on_every_core<double>(threads, [] { return copy_bandwidth(); });
  const std::int64_t rsa_tokens = ring_rsa_tokens();
  log << "calibrating: ring-rsa (materialised scores, 1 head x " << rsa_tokens << " tokens)\n" << std::flush;
  std::tie(c.ring_rsa_forward_f32, c.ring_rsa_backward_f32) =
      on_every_core<std::pair<double, double>>(threads, [&] { return ring_rsa_rates(rsa_tokens); });
  return c;
}

double probe_kernel_rate(int threads, double seconds) {
  BURST_CHECK(threads >= 1 && seconds > 0, "--probe: expected threads >= 1 and seconds > 0, got ", threads, " and ",
              seconds);
  return on_every_core<double>(threads, [&] { return sustained_forward_rate(seconds); });
}

// Ring steps between the ranks: each sends to the next and receives from the previous; the
// slowest rank's time counts.
void measure_link(comm::Communicator& comm, Calibration& into) {
  const int p = comm.world_size(), r = comm.rank();
  BURST_CHECK(p >= 2, "--calibrate: the link needs at least 2 ranks, got ", p);
  constexpr std::size_t kBig = std::size_t{64} << 20;
  std::vector<char> send(kBig, 1), recv(kBig, 0);
  const int right = (r + 1) % p, left = (r - 1 + p) % p;
  auto step = [&](std::size_t bytes, int tag) { comm.sendrecv(send.data(), bytes, right, recv.data(), bytes, left, tag); };
  auto timed = [&](std::size_t bytes, int iterations) {
    comm.barrier();
    const auto t0 = Clock::now();
    for (int i = 0; i < iterations; ++i) step(bytes, 7);
    double s = std::chrono::duration<double>(Clock::now() - t0).count() / iterations;
    std::vector<double> all(static_cast<std::size_t>(p));
    comm.all_gather(&s, all.data(), sizeof(double));
    return *std::max_element(all.begin(), all.end());
  };
  timed(8, 10);
  const double small = timed(8, 200);
  timed(kBig, 1);
  const double big = timed(kBig, 5);
  if (r == 0) {
    into.link_backend = std::string(comm.backend());
    into.link_latency = small;
    into.link_bandwidth = static_cast<double>(kBig) / std::max(big - small, 1e-9);
  }
}

Cluster cluster_from_calibration(const Calibration& c, int ranks, DType dtype) {
  Cluster cl;
  cl.name = "this";
  cl.description = std::to_string(c.cores) + " cores, " + c.link_backend + " ranks (calibrated " + c.measured_at + ")";
  cl.nodes = 1;
  cl.ranks_per_node = ranks;
  cl.compute_slots = c.cores;
  const bool bf16 = dtype == DType::kBF16;
  cl.attention_forward_flops = bf16 ? c.attention_forward_bf16 : c.attention_forward_f32;
  cl.attention_backward_flops = bf16 ? c.attention_backward_bf16 : c.attention_backward_f32;
  cl.attention_forward_flops_causal = bf16 ? c.attention_forward_bf16_causal : c.attention_forward_f32_causal;
  cl.attention_backward_flops_causal = bf16 ? c.attention_backward_bf16_causal : c.attention_backward_f32_causal;
  if (cl.attention_forward_flops_causal > 0 && cl.attention_backward_flops_causal > 0) {
    const kernels::Tile fallback = kernels::call_tile(128, {});
    cl.tile_rows = c.tile_rows > 0 ? c.tile_rows : fallback.block_m;
    cl.tile_cols = c.tile_cols > 0 ? c.tile_cols : fallback.block_n;
    kernels::MaskSpec causal;
    causal.causal = true;
    const double visible = pair_work(algo::Layout::kContiguous, c.kernel_tokens, 1, causal).total();
    const double partial =
        partial_tiles(algo::Layout::kContiguous, c.kernel_tokens, 1, causal, cl.tile_rows, cl.tile_cols).total();
    auto extra = [&](double full, double masked) { return std::max(0.0, visible * (full / masked - 1.0) / partial); };
    cl.masked_tile_forward = extra(cl.attention_forward_flops, cl.attention_forward_flops_causal);
    cl.masked_tile_backward = extra(cl.attention_backward_flops, cl.attention_backward_flops_causal);
  }
  cl.gemm_flops = c.gemm_f32;
  cl.memory_bandwidth = c.memory_bandwidth;
  // Measured in fp32; ring-rsa's scores are fp32 whatever the inputs.
  cl.ring_rsa_forward_flops = c.ring_rsa_forward_f32;
  cl.ring_rsa_backward_flops = c.ring_rsa_backward_f32;
  cl.intra = {c.link_bandwidth, c.link_latency};
  cl.inter = cl.intra;
  cl.memory_bytes = c.memory_bytes / ranks;
  // MPI moves a posted transfer behind the kernels (their progress hook); the in-process
  // backend copies inside the posting call, on the rank's own time.
  cl.overlap = c.link_backend == "mpi";
  cl.slot_per_rank = false;  // the ranks share the measured cores
  if (c.shared_core_efficiency > 0) cl.shared_slot_efficiency = c.shared_core_efficiency;
  return cl;
}

}  // namespace burst::plan
