#include "memory.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "burst/burst_attention.h"
#include "burst/layout.h"
#include "burst/npy.h"
#include "burst/error.h"
#include "burst/kernels.h"
#include "kernels/tile_ops.h"

namespace burst::cli {
namespace {

std::string gb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, bytes >= 1e9 ? "%.2f GB" : "%.0f MB", bytes >= 1e9 ? bytes / 1e9 : bytes / 1e6);
  return buf;
}

// Every AlignedBuffer is rounded up to 64 bytes (core/tensor.cpp).
double aligned(double bytes) { return std::ceil(bytes / 64) * 64; }

// The problem's sizes: from the size flags, or from the headers of the input files (the data
// is read once, later, by make_problem or the layer).
struct Sizes {
  double b = 1, seqlen = 1, seqlen_k = 1, h = 1, g = 1, d = 1, model_dim = 1;
  double e = 4;  // bytes of one stored element of Q, K, V, dO
  bool backward = false;
};

std::vector<std::int64_t> file_shape(const std::string& path, const char* flag, std::size_t dims,
                                     const char* layout) {
  std::vector<std::int64_t> shape = read_npy_shape(path, flag);
  BURST_CHECK(shape.size() == dims, flag, ": expected a ", dims, "-D array ", layout, ", got ", shape.size(),
              " dimensions in '", path, "'");
  return shape;
}

Sizes sizes_of(const RunArgs& args) {
  Sizes z;
  z.b = static_cast<double>(args.batch);
  z.seqlen = static_cast<double>(args.seqlen);
  z.seqlen_k = static_cast<double>(args.seqlen_k.value_or(args.seqlen));
  z.h = static_cast<double>(args.heads);
  z.g = static_cast<double>(args.kv_heads.value_or(args.heads));
  z.d = static_cast<double>(args.head_dim);
  z.model_dim = static_cast<double>(args.model_dim.value_or(args.heads * args.head_dim));
  z.e = static_cast<double>(dtype_size(args.dtype));
  z.backward = args.backward || !args.do_path.empty();
  if (args.layer) {
    if (!args.x_path.empty()) {
      const auto x = file_shape(args.x_path, "--x", 3, "[b, s, D]");
      z.b = static_cast<double>(x[0]);
      z.seqlen = z.seqlen_k = static_cast<double>(x[1]);
      z.model_dim = static_cast<double>(x[2]);
    }
    return z;
  }
  if (!args.q_path.empty()) {
    const auto q = file_shape(args.q_path, "--q", 4, "[b, s, h, d]");
    z.b = static_cast<double>(q[0]);
    z.seqlen = z.seqlen_k = static_cast<double>(q[1]);
    z.h = z.g = static_cast<double>(q[2]);
    z.d = static_cast<double>(q[3]);
    // K and V share a shape (make_problem checks it); without --k the run fails there.
    if (!args.k_path.empty()) {
      const auto k = file_shape(args.k_path, "--k", 4, "[b, s, h, d]");
      z.seqlen_k = static_cast<double>(k[1]);
      z.g = static_cast<double>(k[2]);
    }
  }
  return z;
}

// One attention problem as a strategy sees it: heads of this rank's problem, the longest
// shard and the whole sequence in tokens, element sizes.
struct Core {
  double b = 1, h = 1, g = 1, d = 1;
  double n = 1, total = 1, total_k = 1;
  double e = 4, eo = 4, wire = 4;     // bytes of an element of Q/K/V/dO, of O, of wire partials
  std::vector<std::int64_t> lengths;  // every rank's shard, tokens

  double q(double tokens, double elem) const { return b * tokens * h * d * elem; }
  double kv(double tokens, double elem) const { return b * tokens * g * d * elem; }
  double stats(double tokens) const { return 4 * b * h * tokens; }
};

// The tiled kernels' scratch of one call: per worker thread, each array rounded to 64 bytes,
// the lists of forward_workspace (kernels/forward.cpp) and attention_backward's Workspace
// (kernels/backward.cpp). A change there shows in tests/faults/memory.sh.
struct Kernel {
  double forward = 0, backward = 0;
};
Kernel kernel_workspace(const RunArgs& args, double d, int threads) {
  const kernels::Tile tile = kernels::default_tile(static_cast<std::int64_t>(d));
  const double m = args.block_m > 0 ? args.block_m : tile.block_m;
  const double n = args.block_n > 0 ? args.block_n : tile.block_n;
  // bf16 keys are packed for the dot-product route where the instruction set has one.
  const bool packed_route =
      args.dtype == DType::kBF16 && kernels::tile_ops(kernels::resolve_isa(args.isa)).gemm_bf16_qkt != nullptr;
  const double packed =
      packed_route ? 4.0 * static_cast<double>(kernels::bf16_packed_words(static_cast<std::int64_t>(n),
                                                                          static_cast<std::int64_t>(d)))
                   : 0.0;
  const double f = 4, ints = aligned(8 * m) + aligned(8 * n);
  Kernel k;
  // Forward: Q, acc (m x d); K, V, finite V (n x d); scores; row max, sum, factor; packed keys.
  k.forward = 2 * aligned(f * m * d) + 3 * aligned(f * n * d) + aligned(f * m * n) + 3 * aligned(f * m) +
              aligned(packed) + ints;
  // Backward: Q, dO; K, V; P, dS; two accumulators and a finite copy (max(m, n) x d); packed
  // keys and values.
  k.backward = 2 * aligned(f * m * d) + 2 * aligned(f * n * d) + 2 * aligned(f * m * n) +
               3 * aligned(f * std::max(m, n) * d) + 2 * aligned(packed) + ints;
  k.forward = aligned(k.forward * threads);
  k.backward = aligned(k.backward * threads);
  return k;
}

// BurstAttention's buffers (algo/burst.cpp). Forward: two K/V messages in flight (four on the
// double ring) and an fp32 running state when O is not fp32. Backward: delta, the stationary
// side's accumulators, this rank's bundle, two travelling bundles (four on the double ring),
// the home accumulator, the step's contribution and its wire copies in and out (two more on
// the double ring: to home, from away).
double burst_forward_bytes(const Core& c, const Kernel& k, bool double_ring) {
  const double message = 2 * c.kv(c.n, c.e);
  return (double_ring ? 4 : 2) * message + (c.eo != 4 ? c.q(c.n, 4) : 0) + k.forward;
}
double burst_backward_bytes(const Core& c, algo::BackwardScheme scheme, const Kernel& k, bool double_ring) {
  const double travelling = double_ring ? 4 : 2;
  if (scheme == algo::BackwardScheme::kQuery) {
    const double bundle = 2 * c.q(c.n, c.e) + 2 * c.stats(c.n), acc = c.q(c.n, 4), wire = c.q(c.n, c.wire);
    return c.stats(c.n) + 2 * c.kv(c.n, 4) + bundle + acc + travelling * bundle + acc + travelling * wire + k.backward;
  }
  const double bundle = 2 * c.kv(c.n, c.e), acc = 2 * c.kv(c.n, 4), wire = 2 * c.kv(c.n, c.wire);
  return c.stats(c.n) + c.q(c.n, 4) + bundle + acc + travelling * bundle + acc + travelling * wire + k.backward;
}

algo::BackwardScheme scheme_of(const std::string& strategy, const RunArgs& args, const Core& c) {
  if (strategy == "ring") return algo::BackwardScheme::kKeyValue;
  const algo::BackwardScheme asked = algo::parse_scheme(args.bwd_scheme, "--bwd-scheme");
  if (asked != algo::BackwardScheme::kAuto) return asked;
  return algo::choose_scheme(c.lengths, static_cast<std::int64_t>(c.b), static_cast<std::int64_t>(c.h),
                             static_cast<std::int64_t>(c.g), static_cast<std::int64_t>(c.d),
                             static_cast<std::size_t>(c.e));
}

// What strategy_forward and strategy_backward allocate on one rank beyond the caller's shards,
// from each algorithm's buffers (src/algo/*.cpp).
struct Workspace {
  double forward = 0, backward = 0;
};
Workspace core_workspace(const std::string& s, const RunArgs& args, const Core& c, int ranks, const Kernel& k) {
  const double p = ranks;
  Workspace w;
  if (s == "allgather") {
    // Padded blocks (this rank's and everyone's) beside the gathered K/V while gathering;
    // backward: full-length fp32 dK/dV, their per-rank padded copy and this rank's sums.
    const double gathered = 2 * c.kv(c.total, c.e), blocks = 2 * c.kv(c.n, c.e) * (p + 1);
    w.forward = std::max(blocks + gathered, gathered + k.forward);
    w.backward = std::max(blocks + gathered, gathered + c.stats(c.n) + 2 * c.kv(c.n, 4) * p + 2 * c.kv(c.total, 4) +
                                                 std::max(k.backward, 2 * c.kv(c.n, 4)));
  } else if (s == "ulysses") {
    // Head shards (b, N, h/P, d) of everything; each all-to-all adds a send and a receive
    // buffer.
    const double qh = c.q(c.total, c.e) / p, kvh = c.kv(c.total, c.e) / p, oh = c.q(c.total, c.eo) / p;
    const double lh = c.stats(c.total) / p, qfh = c.q(c.total, 4) / p, kvfh = c.kv(c.total, 4) / p;
    w.forward = std::max(qh + 3 * kvh + c.kv(c.n, c.e), qh + 2 * kvh + oh + lh + std::max(k.forward, oh + c.q(c.n, c.eo)));
    const double held = c.stats(c.n) + 2 * qh + 2 * kvh;
    w.backward = std::max(held + qh + c.q(c.n, c.e),
                          held + 2 * lh + qfh + 2 * kvfh + std::max(k.backward, qfh + c.q(c.n, 4)));
  } else if (s == "usp") {
    // Head shards of the Ulysses group (its U ranks' tokens, h/U heads), then BurstAttention
    // over the ring of groups on them.
    const int u = args.ulysses_degree >= 1 && ranks % args.ulysses_degree == 0 ? args.ulysses_degree : 1;
    Core ring = c;
    ring.h = c.h / u;
    ring.g = c.g / u;
    ring.lengths.clear();
    for (std::size_t i = 0; i + static_cast<std::size_t>(u) <= c.lengths.size(); i += static_cast<std::size_t>(u)) {
      std::int64_t tokens = 0;
      for (int j = 0; j < u; ++j) tokens += c.lengths[i + static_cast<std::size_t>(j)];
      ring.lengths.push_back(tokens);
    }
    ring.n = static_cast<double>(*std::max_element(ring.lengths.begin(), ring.lengths.end()));
    const double qg = ring.q(ring.n, c.e), kvg = ring.kv(ring.n, c.e), og = ring.q(ring.n, c.eo);
    const double lg = ring.stats(ring.n), qfg = ring.q(ring.n, 4), kvfg = ring.kv(ring.n, 4);
    w.forward = std::max(qg + 3 * kvg + c.kv(c.n, c.e),
                         qg + 2 * kvg + og + lg +
                             std::max(burst_forward_bytes(ring, k, args.double_ring), og + c.q(c.n, c.eo)));
    const double held = 2 * qg + 2 * kvg + og;
    w.backward = std::max(held + qg + c.q(c.n, c.e),
                          held + lg + qfg + 2 * kvfg +
                              std::max(burst_backward_bytes(ring, scheme_of(s, args, ring), k, args.double_ring),
                                       qfg + c.q(c.n, 4)));
  } else if (s == "ring-rsa") {
    // Score rows [b, h, n, N] fp32 (two in the backward: P and dS), one K or V shard pass
    // (two buffers), the fp32 accumulator, and full-length fp32 dK/dV.
    const double scores = 4 * c.b * c.h * c.n * c.total, pass = 2 * c.kv(c.n, c.e);
    w.forward = scores + c.q(c.n, 4) + pass;
    w.backward = c.stats(c.n) + 2 * scores + 2 * c.kv(c.total, 4) + c.q(c.n, 4) + pass;
  } else {  // burst, ring
    w.forward = burst_forward_bytes(c, k, args.double_ring);
    w.backward = burst_backward_bytes(c, scheme_of(s, args, c), k, args.double_ring);
  }
  return w;
}

// Threads of one rank: as given, else the hardware shared among the ranks of a node, as
// distributed.cpp and layer_run.cpp choose them.
int threads_per_rank(const RunArgs& args, int ranks_here) {
  if (args.strategy == "local" || args.threads_given) return std::max(1, args.threads);
  const int hardware = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const int per_node = args.ranks_per_node > 0 ? std::min(args.ranks_per_node, ranks_here) : ranks_here;
  return std::max(1, hardware / std::max(1, per_node));
}

std::vector<std::int64_t> lengths_of(const RunArgs& args, double seqlen, int ranks) {
  // A sequence shorter than the ranks is refused by the run itself, with its own message;
  // the estimate sizes one token per rank meanwhile.
  const auto n = std::max(static_cast<std::int64_t>(seqlen), static_cast<std::int64_t>(ranks));
  return algo::shard_lengths(n, ranks, algo::parse_layout(args.layout, "--layout"));
}

// One rank's peak as the larger of its forward and backward phases, with their parts.
void take_peak(MemoryEstimate& m, std::vector<std::pair<std::string, double>> forward,
               std::vector<std::pair<std::string, double>> backward) {
  auto total = [](const auto& parts) {
    double sum = 0;
    for (const auto& part : parts) sum += part.second;
    return sum;
  };
  const bool backward_larger = total(backward) > total(forward);
  auto& peak = backward_larger ? backward : forward;
  m.per_rank = total(peak);
  for (auto& part : peak)
    if (part.second > 0) m.parts.push_back(std::move(part));
}

void estimate_attention(MemoryEstimate& m, const RunArgs& args, const Sizes& z, int ranks, int threads) {
  Core c;
  c.b = z.b;
  c.h = z.h;
  c.g = z.g;
  c.d = z.d;
  c.e = c.eo = z.e;
  c.wire = static_cast<double>(dtype_size(args.grad_wire));
  c.total = z.seqlen;
  c.total_k = z.seqlen_k;
  const Kernel k = kernel_workspace(args, z.d, threads);
  // Every process builds (or reads) the global Q, K, V and dO.
  m.per_process = c.q(c.total, c.e) + 2 * c.kv(c.total_k, c.e) + (z.backward ? c.q(c.total, c.e) : 0);
  if (args.strategy == "local") {
    // One rank over the whole sequence: O and lse, then delta and the gradients.
    const double outputs = c.q(c.total, c.e) + c.stats(c.total);
    const double grads = c.q(c.total, 4) + 2 * c.kv(c.total_k, 4);
    take_peak(m, {{"O and lse", outputs}, {"kernel workspace", k.forward}},
              z.backward ? std::vector<std::pair<std::string, double>>{{"O and lse", outputs},
                                                                       {"delta and gradients", c.stats(c.total) + grads},
                                                                       {"kernel workspace", k.backward}}
                         : std::vector<std::pair<std::string, double>>{});
    return;
  }
  c.lengths = lengths_of(args, c.total, ranks);
  c.n = static_cast<double>(*std::max_element(c.lengths.begin(), c.lengths.end()));
  const Workspace w = core_workspace(args.strategy, args, c, ranks, k);
  // distributed.cpp: each rank's Q, K, V shards, O and lse; for the backward dO and the fp32
  // dQ, dK, dV too. Rank 0 then gathers the results in global order, one shard at a time.
  const double shards = 2 * c.q(c.n, c.e) + 2 * c.kv(c.n, c.e) + c.stats(c.n);
  const double grad_shards = c.q(c.n, c.e) + c.q(c.n, 4) + 2 * c.kv(c.n, 4);
  const std::string name = args.strategy + " workspace";
  take_peak(m, {{"shards", shards}, {name + " (forward)", w.forward}},
            z.backward ? std::vector<std::pair<std::string, double>>{{"shards", shards + grad_shards},
                                                                     {name + " (backward)", w.backward}}
                       : std::vector<std::pair<std::string, double>>{});
  m.per_rank_held = shards + (z.backward ? grad_shards + c.q(c.n, 4) : c.q(c.n, c.e));
  m.root_extra = c.q(c.total, c.e) + c.stats(c.total) + (z.backward ? c.q(c.total, 4) + 2 * c.kv(c.total, 4) : 0);
}

// The attention layer (algo/layer.cpp under layer_run.cpp): weights, X and Y rows, the saved
// activations (X rows, Q/K/V after RoPE, fp32 O, lse), then the backward's dO, dQ, dK, dV and
// the tensor-parallel partial sums and sequence all-gathers.
void estimate_layer(MemoryEstimate& m, const RunArgs& args, const Sizes& z, int ranks, int threads) {
  const std::string& s = args.strategy;
  const bool tp = s == "tp-v1" || s == "tp-v3", local = s == "local";
  const int p = local ? 1 : ranks;
  const double b = z.b, big_n = z.seqlen, dim = z.model_dim, d = z.d, e = z.e;
  const std::vector<std::int64_t> lengths = lengths_of(args, big_n, p);
  const double n = static_cast<double>(*std::max_element(lengths.begin(), lengths.end()));
  // Heads of this rank: tensor parallelism splits them (kv heads shared when fewer than ranks).
  const double hr = tp ? z.h / p : z.h;
  const double gr = tp ? (static_cast<std::int64_t>(z.g) % p == 0 ? z.g / p : 1) : z.g;
  const double tokens = tp ? big_n : n;             // rows the heads cover
  const double rows = s == "tp-v1" ? big_n : n;     // rows of X and Y held
  const double weights = 4 * dim * (2 * z.h + 2 * z.g) * d, weights_rank = 4 * dim * (2 * hr + 2 * gr) * d;
  const double row = 4 * b * dim;  // one token of X, Y, dY or dX
  const Kernel k = kernel_workspace(args, d, threads);

  m.per_process = row * big_n * (z.backward ? 2 : 1) + weights;
  const double base = (tp ? weights_rank : 0) + 2 * row * rows;  // shard of the weights; X, Y rows
  const double x_rows = row * tokens;
  const double qkv32 = 4 * b * tokens * (hr + 2 * gr) * d, qkv = e / 4 * qkv32;
  const double out = 4 * b * tokens * hr * d, lse = 4 * b * hr * tokens;
  const double gather = s == "tp-v3" ? row * big_n + row * n : 0;               // tp-v3's all-gather
  const double scatter = s == "tp-v3" ? row * big_n + row * n * p : 0;          // tp-v3's reduce-scatter
  const double partial = tp ? row * tokens : 0;                                  // Y or dX before summing
  Workspace w;
  if (tp) {
    w.forward = k.forward;
    w.backward = 4 * b * hr * tokens + k.backward;  // delta
  } else {
    Core c;
    c.b = b;
    c.h = z.h;
    c.g = z.g;
    c.d = d;
    c.e = e;
    c.eo = 4;  // the layer keeps O in fp32
    c.wire = static_cast<double>(dtype_size(args.grad_wire));
    c.total = c.total_k = big_n;
    c.lengths = lengths;
    c.n = n;
    // Strategy local is BurstAttention on one rank (layer_run.cpp).
    w = core_workspace(local ? "burst" : s, args, c, p, k);
  }
  const double saved = x_rows + qkv + out + lse;
  std::vector<std::pair<std::string, double>> forward = {
      {"weights and X, Y rows", base},
      {"activations",
       std::max({x_rows + gather, x_rows + qkv32 + (e != 4 ? qkv : 0), saved + w.forward, saved + partial + scatter})}};
  std::vector<std::pair<std::string, double>> backward;
  const double grads = tp ? weights_rank : weights;  // layer_run allocates them after the forward
  if (z.backward) {
    const double gathered = s == "tp-v3" ? row * big_n : 0;
    const double dout = 4 * b * tokens * hr * d * (e != 4 ? 1 + e / 4 : 1), dqkv = qkv32;
    backward = {{"weights, X, Y, dY, dX rows and gradients", base + 2 * row * rows + grads},
                {"saved activations", saved},
                {"backward temporaries", std::max(gathered + gather, gathered + dout + dqkv +
                                                                         std::max(w.backward, partial + scatter))}};
  }
  take_peak(m, std::move(forward), std::move(backward));
  // Rank 0 gathers Y (and dX, and the tensor-parallel weight gradients) in global order; the
  // other ranks send through a packed copy of their rows.
  m.per_rank_held = base + saved + grads + (z.backward ? 2 * row * rows : 0) + (s == "tp-v1" || p == 1 ? 0 : row * n);
  m.root_extra = row * big_n * (z.backward ? 2 : 1) + (z.backward && tp ? weights : 0);
}

}  // namespace

std::string MemoryEstimate::summary() const {
  std::ostringstream os;
  os << "per rank " << gb(per_rank) << " (";
  for (std::size_t i = 0; i < parts.size(); ++i) os << (i ? ", " : "") << parts[i].first << " " << gb(parts[i].second);
  os << "), per process " << gb(per_process) << ", rank 0's results " << gb(root_extra);
  return os.str();
}

MemoryEstimate estimate_memory(const RunArgs& args, int ranks, int ranks_here, int processes_here) {
  const Sizes z = sizes_of(args);
  const int p = std::max(1, ranks), here = std::max(1, ranks_here);
  const int threads = threads_per_rank(args, here);
  MemoryEstimate m;
  if (args.layer) {
    estimate_layer(m, args, z, p, threads);
  } else {
    estimate_attention(m, args, z, p, threads);
  }
  // The phases above follow every allocation of more than a few kilobytes; the margin covers
  // 64-byte rounding and the small ones, so the estimate stays an upper bound.
  constexpr double kMargin = 1.02;
  m.this_machine = kMargin * (processes_here * m.per_process +
                              std::max(here * m.per_rank, here * m.per_rank_held + m.root_extra));
  return m;
}

double available_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  double kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit) {
    if (key == "MemAvailable:") return kb * 1024.0;
  }
  return 0;
}

void check_memory(const RunArgs& args, const MemoryEstimate& m) {
  const double available = available_memory();
  const double limit = args.max_memory > 0 ? args.max_memory : available;
  if (limit <= 0 || m.this_machine <= limit) return;
  fail("memory: this run needs about ", gb(m.this_machine), " on this machine but ",
       args.max_memory > 0 ? "--max-memory allows " : "only ", gb(limit),
       args.max_memory > 0 ? "" : " are available", "; ", m.summary(),
       ". Try more ranks (--ranks), a shorter --seqlen, --dtype bf16, or --strategy burst");
}

}  // namespace burst::cli
