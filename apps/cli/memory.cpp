#include "memory.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "block_inputs.h"
#include "burst/block.h"
#include "burst/layer.h"
#include "burst/plan.h"
#include "burst/strategy.h"
#include "burst/layout.h"
#include "burst/npy.h"
#include "burst/error.h"
#include "burst/kernels.h"
#include "distributed.h"
#include "problem.h"
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
  double mlp_dim = 0;  // --block: F
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
  if (args.whole_layer()) {
    if (!args.x_path.empty()) {
      const auto x = file_shape(args.x_path, "--x", 3, "[b, s, D]");
      z.b = static_cast<double>(x[0]);
      z.seqlen = z.seqlen_k = static_cast<double>(x[1]);
      z.model_dim = static_cast<double>(x[2]);
    }
    if (args.block) z.mlp_dim = static_cast<double>(mlp_dim_of(args, static_cast<std::int64_t>(z.model_dim)));
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

// The tiled kernels' scratch of one call on `threads` threads: the kernels' own count
// (kernels::workspace_bytes, for the run's tile, route and mask), each pass rounded as
// Burst's allocations are.
algo::PassBytes kernel_workspace(const RunArgs& args, double d, int threads, const kernels::MaskSpec& mask) {
  // A head_dim the kernels refuse is reported by the problem's own check, naming the flag.
  if (d < 1 || d > static_cast<double>(kernels::kMaxHeadDim)) return {};
  kernels::AttentionOptions o;
  o.mask = mask;
  o.threads = threads;
  o.block_m = args.block_m;
  o.block_n = args.block_n;
  o.isa = args.isa;
  const kernels::WorkspaceBytes w = kernels::workspace_bytes(args.dtype, static_cast<std::int64_t>(d), o);
  return {aligned(static_cast<double>(w.forward)), aligned(static_cast<double>(w.backward))};
}

// Threads of one rank: as given, else the hardware shared among the ranks of a node, as
// distributed.cpp and layer_run.cpp choose them.
int threads_per_rank(const RunArgs& args, int ranks_here) {
  if (args.threads_given || args.strategy == algo::Strategy::kLocal)
    return std::max(1, args.threads);
  const int hardware = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const int per_node = args.ranks_per_node > 0 ? std::min(args.ranks_per_node, ranks_here) : ranks_here;
  return std::max(1, hardware / std::max(1, per_node));
}

// Shard lengths of the run's layout; doc-zigzag and balanced read the mask, documents included.
std::vector<std::int64_t> lengths_of(const RunArgs& args, double seqlen, int ranks, const kernels::MaskSpec& mask) {
  // A sequence shorter than the ranks is refused by the run itself, with its own message;
  // the estimate sizes one token per rank meanwhile (and its documents no longer fit).
  const auto n = std::max(static_cast<std::int64_t>(seqlen), static_cast<std::int64_t>(ranks));
  kernels::MaskSpec m = mask;
  if (!m.documents.empty() && m.documents.back() != n) m.documents = {};
  // The layouts that read the mask weigh every token (16 bytes a token while planning): past
  // 2^27 tokens the estimate takes equal shards instead of allocating gigabytes to size a
  // problem that large (whose plan the estimate does not count either).
  constexpr std::int64_t kPlannedTokens = std::int64_t{1} << 27;
  if (algo::layout_reads_mask(args.layout) && n > kPlannedTokens)
    return algo::shard_lengths(n, ranks, algo::Layout::kContiguous);
  return algo::shard_lengths(n, ranks, args.layout, m);
}

using Parts = std::vector<algo::MemoryPart>;

// One rank's peak as the larger of its forward and backward phases, with their parts.
void take_peak(MemoryEstimate& m, Parts forward, Parts backward) {
  auto total = [](const Parts& parts) {
    double sum = 0;
    for (const algo::MemoryPart& part : parts) sum += part.bytes;
    return sum;
  };
  const bool backward_larger = total(backward) > total(forward);
  auto& peak = backward_larger ? backward : forward;
  m.per_rank = total(peak);
  for (algo::MemoryPart& part : peak)
    if (part.bytes > 0) m.parts.emplace_back(std::move(part.name), part.bytes);
}

// The strategy's problem on this run's shards.
algo::ProblemShape shape_of(const Sizes& z) {
  algo::ProblemShape s;
  s.batch = static_cast<std::int64_t>(z.b);
  s.n_heads_q = static_cast<std::int64_t>(z.h);
  s.n_heads_kv = static_cast<std::int64_t>(z.g);
  s.head_dim = static_cast<std::int64_t>(z.d);
  s.element_bytes = s.output_bytes = static_cast<std::size_t>(z.e);  // burst run writes O in the input dtype
  return s;
}

algo::StrategyOptions options_of(const RunArgs& args, double seqlen, const kernels::MaskSpec& mask) {
  kernels::AttentionOptions kernel;
  kernel.mask = mask;
  return strategy_options(args, static_cast<std::int64_t>(seqlen), kernel);
}

// Every process builds (or reads) the global Q, K, V and dO; each rank copies its shards
// (distributed.cpp), then rank 0 gathers the results in global order, one shard at a time.
// The one rank of strategy local computes on the global inputs themselves.
void estimate_attention(MemoryEstimate& m, const RunArgs& args, const Sizes& z, int ranks, int threads,
                        const kernels::MaskSpec& mask) {
  const algo::Strategy strategy = args.strategy;
  const bool local = strategy == algo::Strategy::kLocal;
  algo::ProblemShape shape = shape_of(z);
  if (local) shape.seqlen_k = static_cast<std::int64_t>(z.seqlen_k);
  const std::vector<std::int64_t> lengths = local ? std::vector<std::int64_t>{static_cast<std::int64_t>(z.seqlen)}
                                                  : lengths_of(args, z.seqlen, ranks, mask);
  const algo::RankMemory r =
      algo::rank_memory(strategy, shape, lengths, options_of(args, z.seqlen, mask), kernel_workspace(args, z.d, threads, mask));
  // The global problem's tensors, as the one rank of strategy local holds them.
  algo::ProblemShape global = shape;
  global.seqlen_k = static_cast<std::int64_t>(z.seqlen_k);
  const algo::RankMemory whole =
      algo::rank_memory(algo::Strategy::kLocal, global, {static_cast<std::int64_t>(z.seqlen)}, {}, {});
  m.per_process = z.backward ? whole.inputs.backward : whole.inputs.forward;
  const std::string name = algo::strategy_name(args.strategy) + " workspace";
  if (local) {
    take_peak(m, {{"O and lse", r.outputs.forward}, {name + " (forward)", r.workspace.forward}},
              z.backward ? Parts{{"O, lse and gradients", r.outputs.backward}, {name + " (backward)", r.workspace.backward}}
                         : Parts{});
    return;
  }
  take_peak(m, {{"shards", r.inputs.forward + r.outputs.forward}, {name + " (forward)", r.workspace.forward}},
            z.backward ? Parts{{"shards", r.inputs.backward + r.outputs.backward}, {name + " (backward)", r.workspace.backward}}
                       : Parts{});
  // While rank 0 gathers, a rank still holds its shards, and the results' last shard in
  // flight (fp32 dq, or O in the input dtype).
  const double n = static_cast<double>(*std::max_element(lengths.begin(), lengths.end()));
  m.per_rank_held = r.inputs.forward + r.outputs.forward +
                    (z.backward ? r.inputs.backward - r.inputs.forward + r.outputs.backward - r.outputs.forward +
                                      z.b * n * z.h * z.d * 4
                                : z.b * n * z.h * z.d * z.e);
  m.root_extra = z.backward ? whole.outputs.backward : whole.outputs.forward;
}

// The attention layer (algo::layer_memory under layer_run.cpp), plus what this program holds
// besides: the global X (and dY) and the full weights in every process, tensor parallelism's
// copy of a rank's weights, and rank 0's gathered results.
void estimate_layer(MemoryEstimate& m, const RunArgs& args, const Sizes& z, int ranks, int threads,
                    const kernels::MaskSpec& mask) {
  const algo::Strategy strategy = args.strategy;
  const bool tp = algo::layer_only(strategy), local = strategy == algo::Strategy::kLocal;
  const int p = local ? 1 : ranks;
  const algo::LayerShape shape{static_cast<std::int64_t>(z.model_dim), static_cast<std::int64_t>(z.h),
                               static_cast<std::int64_t>(z.g), static_cast<std::int64_t>(z.d)};
  const std::vector<std::int64_t> lengths = lengths_of(args, z.seqlen, p, mask);
  const algo::LayerMemory l =
      algo::layer_memory(strategy, shape, static_cast<std::int64_t>(z.b), lengths, args.dtype, z.backward,
                         options_of(args, z.seqlen, mask), kernel_workspace(args, z.d, threads, mask));
  const double row = 4 * z.b * z.model_dim, n = static_cast<double>(*std::max_element(lengths.begin(), lengths.end()));
  const double weights = 4 * z.model_dim * (2 * z.h + 2 * z.g) * z.d;
  m.per_process = row * z.seqlen * (z.backward ? 2 : 1) + weights;
  Parts forward = l.forward, backward = l.backward;
  if (tp) {  // a copy of this rank's weights (shard_parameters)
    forward.insert(forward.begin(), {"weights", l.parameters});
    if (z.backward) backward.insert(backward.begin(), {"weights", l.parameters});
  }
  take_peak(m, std::move(forward), std::move(backward));
  // Rank 0 gathers Y (and dX, and the tensor-parallel weight gradients) in global order; the
  // other ranks send through a packed copy of their rows.
  m.per_rank_held = l.held + (tp ? l.parameters : 0) +
                    (strategy == algo::Strategy::kTpV1 || p == 1 ? 0 : row * n);
  m.root_extra = row * z.seqlen * (z.backward ? 2 : 1) + (z.backward && tp ? weights : 0);
}

// A stack of blocks (algo::block_memory under block_run.cpp), plus, as for the layer, what
// this program holds besides: the global X (and dY) and every block's full weights in every
// process, tensor parallelism's copy of a rank's weights, and rank 0's gathered results
// (tensor parallelism: every block's full gradient, and one block's gathered buffers).
void estimate_block(MemoryEstimate& m, const RunArgs& args, const Sizes& z, int ranks, int threads,
                    const kernels::MaskSpec& mask) {
  const algo::Strategy strategy = args.strategy;
  const bool tp = algo::layer_only(strategy), local = strategy == algo::Strategy::kLocal;
  const int p = local ? 1 : ranks;
  algo::BlockShape shape;
  shape.attention = {static_cast<std::int64_t>(z.model_dim), static_cast<std::int64_t>(z.h),
                     static_cast<std::int64_t>(z.g), static_cast<std::int64_t>(z.d)};
  shape.mlp_dim = static_cast<std::int64_t>(z.mlp_dim);
  const std::vector<std::int64_t> lengths = lengths_of(args, z.seqlen, p, mask);
  if (ranks > 0) check_block_runs(strategy, shape, p, options_of(args, z.seqlen, mask));  // before sizing by heads
  const algo::LayerMemory l =
      algo::block_memory(strategy, shape, static_cast<std::int64_t>(z.b), lengths, args.dtype, z.backward,
                         options_of(args, z.seqlen, mask), kernel_workspace(args, z.d, threads, mask), args.layers);
  const double row = 4 * z.b * z.model_dim, n = static_cast<double>(*std::max_element(lengths.begin(), lengths.end()));
  const double one_block = 4 * (z.model_dim * (2 * z.h + 2 * z.g) * z.d + 2 * z.model_dim + 3 * z.model_dim * z.mlp_dim);
  const double weights = args.layers * one_block;
  m.per_process = row * z.seqlen * (z.backward ? 2 : 1) + weights;
  m.block_saved = l.saved;
  Parts forward = l.forward, backward = l.backward;
  if (tp) {  // a copy of this rank's weights (shard_block_parameters)
    forward.insert(forward.begin(), {"weights", l.parameters});
    if (z.backward) backward.insert(backward.begin(), {"weights", l.parameters});
  }
  take_peak(m, std::move(forward), std::move(backward));
  // Rank 0 gathers Y and dX (tp-v1: copies them); tensor parallelism all-gathers one block's
  // gradient shards at a time on every rank.
  const double gathered = z.backward && tp ? l.parameters / args.layers * p : 0;
  m.per_rank_held = l.held + (tp ? l.parameters : 0) + gathered +
                    (strategy == algo::Strategy::kTpV1 || p == 1 ? 0 : row * n);
  m.root_extra = row * z.seqlen * (z.backward ? 2 : 1) + (z.backward && tp ? weights : 0);
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
  // The run's mask, documents included (they shape the doc-zigzag and balanced shards); the
  // documents' errors (lengths that do not sum to the sequence) surface here, before the run.
  const bool from_file = args.whole_layer() ? !args.x_path.empty() : args.from_files();
  const char* source = from_file ? (args.whole_layer() ? "the --x file" : "the --k file") : args.seqlen_k ? "--seqlen-k" : "--seqlen";
  const std::vector<std::int64_t> documents =
      documents_of(args, static_cast<std::int64_t>(args.whole_layer() ? z.seqlen : z.seqlen_k), source);
  const kernels::MaskSpec mask = mask_of(args, documents);
  MemoryEstimate m;
  if (args.block) {
    estimate_block(m, args, z, p, threads, mask);
  } else if (args.layer) {
    estimate_layer(m, args, z, p, threads, mask);
  } else {
    estimate_attention(m, args, z, p, threads, mask);
  }
  // The phases above follow every allocation of more than a few kilobytes; the margin covers
  // 64-byte rounding and the small ones, so the estimate stays an upper bound.
  constexpr double kMargin = 1.02;
  m.this_machine = kMargin * (processes_here * m.per_process +
                              std::max(here * m.per_rank, here * m.per_rank_held + m.root_extra));
  return m;
}

void check_memory(const RunArgs& args, const MemoryEstimate& m) {
  const double available = plan::available_memory();
  const double limit = args.max_memory > 0 ? args.max_memory : available;
  if (limit <= 0 || m.this_machine <= limit) return;
  fail("memory: this run needs about ", gb(m.this_machine), " on this machine but ",
       args.max_memory > 0 ? "--max-memory allows " : "only ", gb(limit),
       args.max_memory > 0 ? "" : " are available", "; ", m.summary(),
       ". Try more ranks (--ranks), a shorter --seqlen, --dtype bf16, or --strategy burst");
}

}  // namespace burst::cli
