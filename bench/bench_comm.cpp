// Communication benchmark: latency and bandwidth of a ring step (sendrecv) and of all-to-all
// over message sizes, and an experiment showing whether a posted transfer moves while its
// rank computes without making communication calls.
//
//   build/bin/bench_comm [--ranks N] [--min-bytes B] [--max-bytes B] [--iters K] [--json FILE]
//   build/bin/bench_comm --overlap [--max-bytes M]
//   scripts/mpirun.sh -np 4 build/bin/bench_comm --max-bytes 1048576
//
// A plain main rather than Google Benchmark: under mpirun every process is one rank, and all
// ranks must run the same sequence of transfers and collectives, which a harness that decides
// repetitions per process cannot promise. Without mpirun the ranks are threads of this process.
//
// Every time is the slowest rank's (the per-rank times are all-gathered and the maximum
// taken), measured from a barrier; the iteration count is chosen from that same maximum, so
// every rank runs the same number of iterations. GB/s means 1e9 bytes per second.
#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "burst/communicator.h"
#include "burst/world.h"
#include "burst/error.h"

namespace burst {
namespace {

using comm::Clock;
using comm::Communicator;
using comm::Op;
using comm::Request;

constexpr double kTargetSeconds = 0.2;  // timed loop length the iteration count aims at
constexpr double kProbeSeconds = 0.02;  // calibration runs until a probe lasts this long
constexpr std::size_t kMinIterations = 3;
constexpr std::size_t kMaxIterations = 1'000'000;
constexpr int kRingTag = 1;
constexpr int kOverlapTag = 2;
constexpr int kOverlapTrials = 5;
constexpr double kMinComputeSeconds = 0.2;
constexpr double kComputeOverTransfer = 3.0;
constexpr double kProgressInterval = 0.5e-3;  // seconds of compute between progress() calls

constexpr const char* kRingFormula = "algbw = bytes / time, busbw = algbw";
constexpr const char* kAllToAllFormula = "algbw = bytes_per_rank * P / time, busbw = algbw * (P-1)/P";

struct Options {
  int ranks = 2;
  bool ranks_given = false;
  std::size_t min_bytes = 8;
  std::size_t max_bytes = std::size_t{64} << 20;
  std::size_t iters = 0;  // 0: chosen per size
  std::string json;
  bool overlap = false;
  bool help = false;
  bool sizes_given = false;  // --min-bytes or --iters, which --overlap does not use
};

constexpr const char* kUsage =
    "usage: bench_comm [--ranks N] [--min-bytes B] [--max-bytes B] [--iters K] [--json FILE] [--overlap]\n"
    "  --ranks N      thread ranks without mpirun (default 2); under mpirun the MPI world size\n"
    "  --min-bytes B  smallest message (default 8); sizes grow 8x from it\n"
    "  --max-bytes B  largest message, always measured (default 67108864 = 64 MiB);\n"
    "                 with --overlap the message size M\n"
    "  --iters K      timed iterations per size (default: enough for ~0.2 s, at least 3)\n"
    "  --json FILE    write the results as one JSON document (rank 0)\n"
    "  --overlap      progress-during-compute experiment instead of the sweep (2 ranks)\n";

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::size_t parse_count(const std::string& flag, const char* text) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text, &end, 10);
  BURST_CHECK(text[0] >= '0' && text[0] <= '9' && end != text && *end == '\0' && v > 0 &&
                  v <= (1ull << 40),
              flag, ": expected an integer in [1, 2^40], got '", text, "'");
  return static_cast<std::size_t>(v);
}

Options parse_options(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&]() -> const char* {
      BURST_CHECK(i + 1 < argc, arg, ": expected a value after it, got the end of the arguments");
      return argv[++i];
    };
    if (arg == "--ranks") {
      const std::size_t n = parse_count(arg, value());
      BURST_CHECK(n <= 1024, "--ranks: expected at most 1024, got ", n);
      opt.ranks = static_cast<int>(n);
      opt.ranks_given = true;
    } else if (arg == "--min-bytes") {
      opt.min_bytes = parse_count(arg, value());
      opt.sizes_given = true;
    } else if (arg == "--max-bytes") {
      opt.max_bytes = parse_count(arg, value());
    } else if (arg == "--iters") {
      opt.iters = parse_count(arg, value());
      opt.sizes_given = true;
    } else if (arg == "--json") {
      opt.json = value();
    } else if (arg == "--overlap") {
      opt.overlap = true;
    } else if (arg == "--help" || arg == "-h") {
      opt.help = true;
    } else {
      fail("unknown argument '", arg, "' (expected --ranks, --min-bytes, --max-bytes, --iters, --json, --overlap)");
    }
  }
  BURST_CHECK(opt.overlap || opt.min_bytes <= opt.max_bytes, "--min-bytes: expected at most --max-bytes (",
              opt.max_bytes, "), got ", opt.min_bytes);
  BURST_CHECK(!(opt.overlap && opt.sizes_given),
              "--overlap: --min-bytes and --iters do not apply (the message size is --max-bytes)");
  return opt;
}

// min, 8 min, 64 min, ... below max, then max itself, so the default ends at 64 MiB exactly.
std::vector<std::size_t> message_sizes(std::size_t min_bytes, std::size_t max_bytes) {
  std::vector<std::size_t> sizes;
  for (std::size_t b = min_bytes; b < max_bytes; b = b > max_bytes / 8 ? max_bytes : b * 8) sizes.push_back(b);
  sizes.push_back(max_bytes);
  return sizes;
}

std::string size_label(std::size_t bytes) {
  if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) return std::to_string(bytes >> 20) + " MiB";
  if (bytes >= (1u << 10) && bytes % (1u << 10) == 0) return std::to_string(bytes >> 10) + " KiB";
  return std::to_string(bytes) + " B";
}

// ---- data pattern ------------------------------------------------------------------------
// The bytes rank `source` sends to rank `dest` differ for every (source, dest) pair, so a
// block that reaches the wrong rank or the wrong place in the buffer is caught.

std::uint64_t mix(std::uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::uint64_t block_key(int source, int dest) {
  return ((static_cast<std::uint64_t>(source) << 32) | static_cast<std::uint32_t>(dest)) * 0x9E3779B97F4A7C15ull;
}

unsigned char pattern_byte(int source, int dest, std::size_t offset) {
  return static_cast<unsigned char>(mix(block_key(source, dest) + offset / 8) >> (8 * (offset % 8)));
}

void fill_pattern(unsigned char* out, std::size_t bytes, int source, int dest) {
  const std::uint64_t key = block_key(source, dest);
  for (std::size_t w = 0; w * 8 < bytes; ++w) {
    const std::uint64_t word = mix(key + w);
    const std::size_t n = std::min<std::size_t>(8, bytes - w * 8);
    for (std::size_t i = 0; i < n; ++i) out[w * 8 + i] = static_cast<unsigned char>(word >> (8 * i));
  }
}

// Checks the first, middle and last bytes and a few scattered ones; returns a message naming
// the first wrong byte, or "" when all match.
std::string check_block(const unsigned char* got, std::size_t bytes, int source, int dest) {
  if (bytes == 0) return "";
  std::vector<std::size_t> offsets = {0, bytes / 2, bytes - 1};
  for (std::uint64_t i = 0; i < 5; ++i) offsets.push_back(static_cast<std::size_t>(mix(i + 1) % bytes));
  for (std::size_t o : offsets) {
    const unsigned char want = pattern_byte(source, dest, o);
    if (got[o] != want) {
      return "rank " + std::to_string(dest) + " got " + std::to_string(got[o]) + " at byte " + std::to_string(o) +
             " of the " + std::to_string(bytes) + "-byte block from rank " + std::to_string(source) +
             ", expected " + std::to_string(want) + " (data misrouted or corrupted)";
    }
  }
  return "";
}

// ---- collective helpers -------------------------------------------------------------------

double max_over_ranks(Communicator& comm, double value) {
  std::vector<double> all(static_cast<std::size_t>(comm.world_size()));
  comm.all_gather(&value, all.data(), sizeof(double));
  return *std::max_element(all.begin(), all.end());
}

// Throws on every rank when any rank found an error, with the message of the lowest such
// rank, so no rank is left waiting for a peer that has stopped.
void fail_together(Communicator& comm, const std::string& error) {
  const std::uint64_t mine = error.size();
  std::vector<std::uint64_t> lengths(static_cast<std::size_t>(comm.world_size()));
  comm.all_gather(&mine, lengths.data(), sizeof(mine));
  const auto first = std::find_if(lengths.begin(), lengths.end(), [](std::uint64_t n) { return n > 0; });
  if (first == lengths.end()) return;
  const int root = static_cast<int>(first - lengths.begin());
  std::string message = comm.rank() == root ? error : std::string(*first, ' ');
  comm.broadcast(message.data(), message.size(), root);
  fail(message);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// ---- sweep --------------------------------------------------------------------------------

struct Result {
  std::string op;
  std::size_t bytes = 0;
  double seconds_per_iter = 0, algbw_gbps = 0, busbw_gbps = 0;
  std::size_t iters = 0;
};

// Runs `step` n times after a barrier; returns the slowest rank's seconds.
template <class Step>
double time_slowest(Communicator& comm, std::size_t n, Step& step) {
  comm.barrier();
  const auto t0 = Clock::now();
  for (std::size_t i = 0; i < n; ++i) step();
  return max_over_ranks(comm, seconds_since(t0));
}

// Warms up (first touch of the buffers, connection set-up), then picks the timed iteration
// count: --iters, else enough for kTargetSeconds from probes that double until one lasts
// kProbeSeconds. Every rank computes the same count from the same gathered maximum.
template <class Step>
std::size_t choose_iterations(Communicator& comm, std::size_t fixed, Step& step) {
  step();
  if (fixed > 0) {
    step();
    return fixed;
  }
  for (std::size_t n = 1;; n *= 2) {
    const double t = time_slowest(comm, n, step);
    if (t >= kProbeSeconds || n >= kMaxIterations) {
      const double per_iter = t / static_cast<double>(n);
      const double want = per_iter > 0 ? std::ceil(kTargetSeconds / per_iter) : static_cast<double>(kMaxIterations);
      return std::clamp(static_cast<std::size_t>(std::min(want, static_cast<double>(kMaxIterations))),
                        kMinIterations, kMaxIterations);
    }
  }
}

void print_sweep_header(const char* title, const char* formula) {
  std::printf("\n%s: %s\n", title, formula);
  std::printf("%10s %12s %9s %15s %13s %13s\n", "size", "bytes", "iters", "time/iter (us)", "algbw (GB/s)",
              "busbw (GB/s)");
  std::fflush(stdout);
}

void print_result(const Result& r) {
  std::printf("%10s %12zu %9zu %15.2f %13.4f %13.4f\n", size_label(r.bytes).c_str(), r.bytes, r.iters,
              r.seconds_per_iter * 1e6, r.algbw_gbps, r.busbw_gbps);
  std::fflush(stdout);
}

// Step: rank r sends `bytes` to r + 1 and receives `bytes` from r - 1 (a ring step).
Result bench_ring(Communicator& comm, std::size_t bytes, std::size_t fixed_iters) {
  const int p = comm.world_size(), me = comm.rank();
  const int right = (me + 1) % p, left = (me - 1 + p) % p;
  std::vector<unsigned char> send(bytes), recv(bytes);
  fill_pattern(send.data(), bytes, me, right);
  auto step = [&] { comm.sendrecv(send.data(), bytes, right, recv.data(), bytes, left, kRingTag); };
  const std::size_t iters = choose_iterations(comm, fixed_iters, step);
  const std::uint64_t sent_before = comm.traffic().total_sent(Op::kPointToPoint);
  const double seconds = time_slowest(comm, iters, step);
  const std::uint64_t sent = comm.traffic().total_sent(Op::kPointToPoint) - sent_before;

  std::string error = check_block(recv.data(), bytes, left, me);
  if (error.empty() && sent != iters * bytes) {
    error = "ring: rank " + std::to_string(me) + " recorded " + std::to_string(sent) + " bytes sent, expected " +
            std::to_string(iters) + " x " + std::to_string(bytes);
  }
  fail_together(comm, error.empty() ? "" : "ring sendrecv of " + std::to_string(bytes) + " bytes: " + error);

  Result r{"ring_sendrecv", bytes, seconds / static_cast<double>(iters), 0, 0, iters};
  r.algbw_gbps = static_cast<double>(bytes) / r.seconds_per_iter / 1e9;
  r.busbw_gbps = r.algbw_gbps;  // each rank sends and receives `bytes` once per step
  return r;
}

// Step: all_to_all with `bytes` per destination; each rank's buffers hold P blocks.
Result bench_all_to_all(Communicator& comm, std::size_t bytes, std::size_t fixed_iters) {
  const int p = comm.world_size(), me = comm.rank();
  const auto np = static_cast<std::size_t>(p);
  std::vector<unsigned char> send(np * bytes), recv(np * bytes);
  for (int d = 0; d < p; ++d) fill_pattern(send.data() + static_cast<std::size_t>(d) * bytes, bytes, me, d);
  auto step = [&] { comm.all_to_all(send.data(), recv.data(), bytes); };
  const std::size_t iters = choose_iterations(comm, fixed_iters, step);
  const std::uint64_t sent_before = comm.traffic().total_sent(Op::kAllToAll);
  const double seconds = time_slowest(comm, iters, step);
  const std::uint64_t sent = comm.traffic().total_sent(Op::kAllToAll) - sent_before;

  std::string error;
  for (int s = 0; s < p && error.empty(); ++s)
    error = check_block(recv.data() + static_cast<std::size_t>(s) * bytes, bytes, s, me);
  // The block a rank keeps for itself is copied locally, so (P-1) blocks cross per step: the
  // (P-1)/P of busbw.
  if (error.empty() && sent != iters * (np - 1) * bytes) {
    error = "all_to_all: rank " + std::to_string(me) + " recorded " + std::to_string(sent) +
            " bytes sent, expected " + std::to_string(iters) + " x " + std::to_string(np - 1) + " x " +
            std::to_string(bytes);
  }
  fail_together(comm, error.empty() ? "" : "all_to_all of " + std::to_string(bytes) + " bytes per rank: " + error);

  Result r{"all_to_all", bytes, seconds / static_cast<double>(iters), 0, 0, iters};
  r.algbw_gbps = static_cast<double>(bytes) * static_cast<double>(p) / r.seconds_per_iter / 1e9;
  r.busbw_gbps = r.algbw_gbps * static_cast<double>(p - 1) / static_cast<double>(p);
  return r;
}

// ---- overlap ------------------------------------------------------------------------------

// A dense float loop over a buffer that stays in L1/L2 (32 KiB) and makes no communication
// call unless told to poll. x = 0.999 x + 0.001 converges to 1, so the values never overflow
// or turn denormal (which would slow the loop down).
class ComputeLoop {
 public:
  ComputeLoop() : x_(8192) {
    for (std::size_t i = 0; i < x_.size(); ++i) x_[i] = static_cast<float>(i % 97) / 97.0f;
  }

  // Computes for `seconds` of wall time, reading the clock after every pass (8192 updates, a
  // few microseconds); with `poll`, calls comm.progress() once kProgressInterval has passed
  // since the last call. Returns the number of progress() calls.
  std::size_t run(double seconds, Communicator& comm, bool poll) {
    const auto t0 = Clock::now();
    const auto end = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    const auto interval = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(kProgressInterval));
    auto last_poll = t0;
    std::size_t polls = 0;
    for (;;) {
      for (float& v : x_) v = v * 0.999f + 0.001f;
      const auto now = Clock::now();
      if (poll && now - last_poll >= interval) {
        comm.progress();
        last_poll = now;
        ++polls;
      }
      if (now >= end) break;
    }
    float sum = 0;
    for (float v : x_) sum += v;
    sink_ = sink_ + sum;  // kept, so the loop cannot be optimised away
    return polls;
  }

 private:
  std::vector<float> x_;
  volatile float sink_ = 0;
};

struct OverlapResult {
  std::size_t bytes = 0;
  double xfer = 0;          // transfer alone, post to completion
  double compute = 0;       // compute length C
  double post = 0;          // time inside isend + irecv when compute follows
  double wait_after = 0;    // wait after compute without progress calls
  double wait_polled = 0;   // wait after compute that called progress()
  std::size_t polls = 0;    // progress() calls per polled trial (rank 0)
  std::string verdict_after, verdict_polled;
};

// `post` counts too: a backend that copies inside isend/irecv leaves nothing to wait for, yet
// nothing moved behind the compute of the rank that made the copy.
std::string verdict(double wait, double xfer, double post) {
  const double f = wait / xfer;
  if (f <= 0.25 && post >= 0.5 * xfer)
    return "was complete before the wait, but it moved inside isend/irecv (a blocking copy), not behind compute";
  if (f <= 0.25) return "moved during compute (asynchronous progress)";
  if (f >= 0.75) return "did not move during compute (no asynchronous progress)";
  return "partly moved during compute";
}

// Ring transfer of M bytes between the two ranks (each sends to and receives from the other),
// posted once; in (b) and (c) a compute loop runs between posting and waiting.
OverlapResult measure_overlap(Communicator& comm, std::size_t bytes) {
  BURST_CHECK(comm.world_size() == 2, "--overlap: expected exactly 2 ranks, got ", comm.world_size());
  const int me = comm.rank(), peer = 1 - me;
  std::vector<unsigned char> send(bytes), recv(bytes);
  fill_pattern(send.data(), bytes, me, peer);
  const auto post = [&] {
    return std::array<Request, 2>{comm.irecv(recv.data(), bytes, peer, kOverlapTag),
                                  comm.isend(send.data(), bytes, peer, kOverlapTag)};
  };
  ComputeLoop loop;
  OverlapResult r;
  r.bytes = bytes;

  // (a) transfer alone; the first round is untimed (page faults, connection set-up).
  std::vector<double> xfer;
  for (int trial = -1; trial < kOverlapTrials; ++trial) {
    comm.barrier();
    const auto t0 = Clock::now();
    auto requests = post();
    comm::wait_all(requests, comm.deadline());
    const double t = max_over_ranks(comm, seconds_since(t0));
    if (trial >= 0) xfer.push_back(t);
  }
  r.xfer = median(xfer);
  r.compute = std::max(kComputeOverTransfer * r.xfer, kMinComputeSeconds);

  // (b) and (c): post, compute for C, then time the wait.
  for (bool poll : {false, true}) {
    std::vector<double> waits, posts;
    std::size_t polls = 0;
    for (int trial = 0; trial < kOverlapTrials; ++trial) {
      comm.barrier();
      const auto t0 = Clock::now();
      auto requests = post();
      const double posted = seconds_since(t0);
      polls = loop.run(r.compute, comm, poll);
      const auto t1 = Clock::now();
      comm::wait_all(requests, comm.deadline());
      const double waited = seconds_since(t1);
      waits.push_back(max_over_ranks(comm, waited));
      posts.push_back(max_over_ranks(comm, posted));
    }
    (poll ? r.wait_polled : r.wait_after) = median(waits);
    if (poll) {
      r.polls = polls;
    } else {
      r.post = median(posts);
    }
  }
  fail_together(comm, check_block(recv.data(), bytes, peer, me));
  r.verdict_after = verdict(r.wait_after, r.xfer, r.post);
  r.verdict_polled = verdict(r.wait_polled, r.xfer, r.post);
  return r;
}

void print_overlap(const OverlapResult& r, std::string_view backend) {
  std::printf("\noverlap: %s ring transfer between 2 ranks, medians of %d trials, slowest rank's times\n",
              size_label(r.bytes).c_str(), kOverlapTrials);
  std::printf("  (a) transfer alone (post, wait)             T_xfer        = %9.3f ms\n", r.xfer * 1e3);
  std::printf("      compute length C = max(3 T_xfer, 200 ms)               %9.3f ms\n", r.compute * 1e3);
  std::printf("  (b) post, compute C without comm calls, wait T_wait_after  = %9.3f ms (%5.1f%% of T_xfer)\n",
              r.wait_after * 1e3, 100.0 * r.wait_after / r.xfer);
  std::printf("  (c) same, progress() every %.1f ms of compute T_wait_polled = %9.3f ms (%5.1f%% of T_xfer), %zu progress() calls\n",
              kProgressInterval * 1e3, r.wait_polled * 1e3, 100.0 * r.wait_polled / r.xfer, r.polls);
  std::printf("      time inside isend + irecv in (b)                       %9.3f ms\n", r.post * 1e3);
  std::printf("  reading: T_wait close to T_xfer means the transfer did not move during compute (no\n"
              "  asynchronous progress); close to 0 means it did.\n");
  std::printf("  verdict (%.*s):\n", static_cast<int>(backend.size()), backend.data());
  std::printf("    without progress calls: the transfer %s\n", r.verdict_after.c_str());
  std::printf("    with progress() every %.1f ms: the transfer %s\n", kProgressInterval * 1e3, r.verdict_polled.c_str());
  if (r.post >= 0.5 * r.xfer) {
    std::printf("  note: posting took %.0f%% of T_xfer: the rank that posts second copies the data inside its\n"
                "  isend/irecv, so it does not compute while the data moves.\n",
                100.0 * r.post / r.xfer);
  }
  std::fflush(stdout);
}

// ---- output -------------------------------------------------------------------------------

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

void write_json(const std::string& path, std::string_view backend, int world_size,
                const std::vector<Result>& results, const std::optional<OverlapResult>& overlap) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  BURST_CHECK(f != nullptr, "--json: cannot open '", path, "' for writing: ", std::strerror(errno));
  std::fprintf(f, "{\n  \"benchmark\": \"bench_comm\",\n  \"backend\": %s,\n  \"world_size\": %d,\n",
               json_string(backend).c_str(), world_size);
  std::fprintf(f, "  \"formulas\": {\"ring_sendrecv\": %s, \"all_to_all\": %s},\n",
               json_string(kRingFormula).c_str(), json_string(kAllToAllFormula).c_str());
  std::fprintf(f, "  \"results\": [");
  for (std::size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    std::fprintf(f,
                 "%s\n    {\"op\": %s, \"bytes\": %zu, \"seconds_per_iter\": %.9g, \"algbw_GBps\": %.6g, "
                 "\"busbw_GBps\": %.6g, \"iters\": %zu}",
                 i == 0 ? "" : ",", json_string(r.op).c_str(), r.bytes, r.seconds_per_iter, r.algbw_gbps,
                 r.busbw_gbps, r.iters);
  }
  std::fprintf(f, "%s]", results.empty() ? "" : "\n  ");
  if (overlap) {
    const OverlapResult& o = *overlap;
    std::fprintf(f,
                 ",\n  \"overlap\": {\"bytes\": %zu, \"trials\": %d, \"xfer_seconds\": %.9g, "
                 "\"compute_seconds\": %.9g, \"post_seconds\": %.9g, \"wait_after_compute_seconds\": %.9g, "
                 "\"wait_polled_seconds\": %.9g, \"progress_interval_seconds\": %.9g, \"progress_calls\": %zu, "
                 "\"verdict_without_progress\": %s, \"verdict_with_progress\": %s}",
                 o.bytes, kOverlapTrials, o.xfer, o.compute, o.post, o.wait_after, o.wait_polled,
                 kProgressInterval, o.polls, json_string(o.verdict_after).c_str(),
                 json_string(o.verdict_polled).c_str());
  }
  std::fprintf(f, "\n}\n");
  const bool ok = std::fclose(f) == 0;
  BURST_CHECK(ok, "--json: writing '", path, "' failed");
}

// ---- driver -------------------------------------------------------------------------------

void run_rank(Communicator& comm, const Options& opt) {
  const bool root = comm.rank() == 0;
  if (root) {
    std::printf("bench_comm: backend %.*s (%s), world size %d\n", static_cast<int>(comm.backend().size()),
                comm.backend().data(), comm.backend() == "mpi" ? "one process per rank" : "thread ranks",
                comm.world_size());
    std::printf("times: slowest rank's, per iteration, after a barrier; GB/s = 1e9 bytes/s\n");
    std::fflush(stdout);
  }
  std::vector<Result> results;
  std::optional<OverlapResult> overlap;
  if (opt.overlap) {
    overlap = measure_overlap(comm, opt.max_bytes);
    if (root) print_overlap(*overlap, comm.backend());
  } else {
    const std::vector<std::size_t> sizes = message_sizes(opt.min_bytes, opt.max_bytes);
    if (root) print_sweep_header("ring sendrecv (rank r sends to r+1, receives from r-1)", kRingFormula);
    for (std::size_t b : sizes) {
      results.push_back(bench_ring(comm, b, opt.iters));
      if (root) print_result(results.back());
    }
    if (root) print_sweep_header("all_to_all (bytes = block per destination)", kAllToAllFormula);
    for (std::size_t b : sizes) {
      results.push_back(bench_all_to_all(comm, b, opt.iters));
      if (root) print_result(results.back());
    }
  }
  if (root && !opt.json.empty()) {
    write_json(opt.json, comm.backend(), comm.world_size(), results, overlap);
    std::printf("\nwrote %s\n", opt.json.c_str());
  }
}

void run(const Options& opt) {
  const bool mpi = comm::launched_by_mpi();
  BURST_CHECK(mpi || !opt.overlap || opt.ranks == 2, "--overlap: expected exactly 2 ranks, got --ranks ", opt.ranks);
  // Under mpirun the launcher sets the world size; --ranks, when given, must agree with it.
  comm::run_world(mpi ? (opt.ranks_given ? opt.ranks : 0) : opt.ranks,
                  [&](Communicator& comm) { run_rank(comm, opt); });
}

}  // namespace
}  // namespace burst

int main(int argc, char** argv) {
  burst::Options opt;
  try {
    opt = burst::parse_options(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_comm: error: %s\n%s", e.what(), burst::kUsage);
    return 2;
  }
  if (opt.help) {
    std::fputs(burst::kUsage, stdout);
    return 0;
  }
  try {
    burst::run(opt);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_comm: error: %s\n", e.what());
    return 1;
  }
}
