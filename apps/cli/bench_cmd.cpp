#include "bench_cmd.h"
#include "bench_chart.h"
#include "bench_files.h"
#include "block_run.h"
#include "output.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "burst/documents.h"
#include "burst/layout.h"
#include "burst/strategy.h"
#include "args.h"
#include "burst/world.h"
#include "burst/error.h"
#include "distributed.h"
#include "flags.h"
#include "json.h"
#include "memory.h"
#include "problem.h"
#include "verify.h"

namespace burst::cli {
namespace {

struct BenchArgs {
  std::vector<std::string> strategies = {"burst", "ring", "allgather", "ulysses", "ring-rsa", "usp"};
  std::vector<std::int64_t> seqlens = {2048, 4096, 8192, 16384};
  std::vector<int> ranks;             // empty: hardware threads (threads) or the MPI world
  std::vector<std::string> masks = {"causal"};
  std::vector<std::int64_t> kv_heads;  // empty: heads
  std::int64_t heads = 8, head_dim = 128, batch = 1;
  DType dtype = DType::kF32;
  int repeat = 1;
  int threads = 0;  // per rank; 0: hardware / ranks
  std::vector<std::string> layouts = {"zigzag"};
  std::vector<std::string> doc_dists = {"none"};  // "none" or a distribution of burst/documents.h
  double link_gbps = 0, link_latency_us = 0;
  std::string out = "out/bench";
  bool block = false;  // transformer blocks (burst run --block) instead of the attention core
  int layers = 1;
  std::int64_t mlp_dim = 0;  // 0: block_mlp_dim(heads x head_dim)
  bool help = false;
};

template <class T>
std::vector<T> parse_list(std::string_view flag, std::string_view text, T (*one)(std::string_view, std::string_view)) {
  std::vector<T> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    out.push_back(one(flag, text.substr(start, comma - start)));
    start = comma + 1;
  }
  return out;
}

std::int64_t positive(std::string_view flag, std::string_view text) {
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  BURST_CHECK(ec == std::errc() && end == text.data() + text.size() && v > 0, flag,
              ": expected positive integers separated by commas, got '", text, "'");
  return v;
}
int positive_int(std::string_view flag, std::string_view text) {
  const std::int64_t v = positive(flag, text);
  BURST_CHECK(v <= 1024, flag, ": expected at most 1024, got ", v);
  return static_cast<int>(v);
}
double number(std::string_view flag, std::string_view text) {
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  BURST_CHECK(ec == std::errc() && end == text.data() + text.size() && v > 0 && std::isfinite(v), flag,
              ": expected a positive number, got '", text, "'");
  return v;
}
std::string word(std::string_view, std::string_view text) { return std::string(text); }

constexpr Flag<BenchArgs> kBenchFlags[] = {
    {"--strategies", "LIST", "burst,ring,allgather,ulysses,ring-rsa,usp (default: all six)",
     [](BenchArgs& b, std::string_view f, std::string_view v) {
       b.strategies = parse_list<std::string>(f, v, word);
       for (const std::string& s : b.strategies) algo::parse_strategy(s, "--strategies");
     }},
    {"--block", "", "run transformer blocks (burst run --block: norms, attention layer, SwiGLU MLP) instead of the "
     "attention core; tp-v1 and tp-v3 may join --strategies",
     [](BenchArgs& b, std::string_view, std::string_view) { b.block = true; }},
    {"--layers", "L", "--block: blocks in the stack (default 1)",
     [](BenchArgs& b, std::string_view f, std::string_view v) { b.layers = positive_int(f, v); }},
    {"--mlp-dim", "F", "--block: the MLP's width (default round(8 D / 3) up to a multiple of 64, D = heads x head_dim)",
     [](BenchArgs& b, std::string_view f, std::string_view v) { b.mlp_dim = positive(f, v); }},
    {"--seqlens", "LIST", "sequence lengths (default 2048,4096,8192,16384)",
     [](BenchArgs& b, std::string_view f, std::string_view v) { b.seqlens = parse_list<std::int64_t>(f, v, positive); }},
    {"--ranks", "LIST", "in-process rank counts (default: the hardware threads)",
     [](BenchArgs& b, std::string_view f, std::string_view v) { b.ranks = parse_list<int>(f, v, positive_int); }},
    {"--masks", "LIST", "causal and/or full (default causal)",
     [](BenchArgs& b, std::string_view f, std::string_view v) {
       b.masks = parse_list<std::string>(f, v, word);
       for (const std::string& m : b.masks)
         BURST_CHECK(m == "causal" || m == "full", "--masks: expected causal and/or full, got '", m, "'");
     }},
    {"--kv-heads", "LIST", "key/value head counts, dividing --heads (default: --heads)",
     [](BenchArgs& b, std::string_view f, std::string_view v) { b.kv_heads = parse_list<std::int64_t>(f, v, positive); }},
    {"--heads", "H", "query heads (default 8)",
     [](BenchArgs& b, std::string_view f, std::string_view v) { b.heads = positive(f, v); }},
    {"--head-dim", "D", "head dimension (default 128)",
     [](BenchArgs& b, std::string_view f, std::string_view v) { b.head_dim = positive(f, v); }},
    {"--batch", "B", "batch size (default 1)",
     [](BenchArgs& b, std::string_view f, std::string_view v) { b.batch = positive(f, v); }},
    {"--dtype", "fp32|bf16", "storage of q, k, v (default fp32)",
     [](BenchArgs& b, std::string_view f, std::string_view v) { b.dtype = parse_dtype(v, f); }},
    {"--layouts", "LIST", "token layouts: contiguous, zigzag, striped, doc-zigzag, balanced (default zigzag)",
     [](BenchArgs& b, std::string_view f, std::string_view v) {
       b.layouts = parse_list<std::string>(f, v, word);
       for (const std::string& l : b.layouts) algo::parse_layout(l, std::string(f));
     }},
    {"--doc-dists", "LIST", "packed documents: none, or distributions NAME[:L] of burst run --doc-dist, lengths "
     "drawn with seed 0 for each sequence length (default none)",
     [](BenchArgs& b, std::string_view f, std::string_view v) {
       b.doc_dists = parse_list<std::string>(f, v, word);
       for (std::string& d : b.doc_dists)
         if (d != "none") d = parse_doc_dist(f, d);
     }},
    {"--threads", "T", "threads per rank (default: hardware threads / ranks)",
     [](BenchArgs& b, std::string_view f, std::string_view v) { b.threads = positive_int(f, v); }},
    {"--repeat", "N", "timed runs per point; the median is kept (default 1)",
     [](BenchArgs& b, std::string_view f, std::string_view v) { b.repeat = positive_int(f, v); }},
    {"--link-gbps", "G", "emulate links of G Gbit/s between ranks (burst/throttle.h)",
     [](BenchArgs& b, std::string_view f, std::string_view v) { b.link_gbps = number(f, v); }},
    {"--link-latency-us", "US", "and their latency",
     [](BenchArgs& b, std::string_view f, std::string_view v) { b.link_latency_us = number(f, v); }},
    {"--out", "DIR", "output folder (default out/bench)",
     [](BenchArgs& b, std::string_view, std::string_view v) { b.out = std::string(v); }},
    {"--help", "", "print this help", [](BenchArgs& b, std::string_view, std::string_view) { b.help = true; }},
};

BenchArgs parse_bench(std::span<char* const> args) {
  BenchArgs b;
  const std::vector<std::string> given = parse_flags<BenchArgs>("bench", kBenchFlags, args, b);
  for (const std::string& s : b.strategies)
    BURST_CHECK(b.block || !algo::layer_only(algo::parse_strategy(s, "--strategies")), "--strategies: ", s,
                " runs only as a layer or a block; add --block, or compare it with scripts/compare.sh --layer");
  for (const std::string& flag : given)
    BURST_CHECK(b.block || (flag != "--layers" && flag != "--mlp-dim"), flag, ": describes the transformer block: add --block");
  if (b.kv_heads.empty()) b.kv_heads = {b.heads};
  for (std::int64_t g : b.kv_heads)
    BURST_CHECK(b.heads % g == 0, "--kv-heads: expected divisors of --heads ", b.heads, ", got ", g);
  return b;
}

std::string bench_usage() {
  return flag_usage<BenchArgs>(
      "bench",
      "Runs every listed strategy forward + backward on random problems for each sequence length, rank count, "
      "mask, kv-head count, document distribution and layout; writes DIR/bench.json, DIR/bench.csv and one chart "
      "per (ranks, mask, kv heads[, layout][, documents]) group, DIR/bench_P<ranks>_<mask>_kv<G>[_<layout>]"
      "[_<documents>].svg: time and bytes sent per rank against sequence length (the layout is named when several "
      "are swept, the documents when there are some). Under mpirun the ranks are the MPI world's.\n\n"
      "With --block every point runs a stack of transformer blocks as burst run --block does (bytes per rank: "
      "attention core, layer and MLP collectives and the weight-gradient all-reduces, each checked against its "
      "formula); tp-v1 and tp-v3 may join the strategies.",
      kBenchFlags,
      "A strategy that cannot run a point (Ulysses with heads not divisible by the ranks, a problem\n"
      "over the machine's memory) is recorded as skipped with the reason.\n");
}



// The MPI world's size from the launcher's environment (Open MPI, MPICH/Hydra), 1 if unknown.
int launcher_world_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"})
    if (const char* v = std::getenv(name); v != nullptr && std::atoi(v) > 0) return std::atoi(v);
  return 1;
}

// Why a strategy cannot run a point, before trying (under MPI a failure would end the job):
// the registry's reason, the message the run would fail with.
std::string cannot_run(const RunArgs& a, int ranks, const kernels::MaskSpec& mask) {
  algo::ProblemShape shape;
  shape.n_heads_q = a.heads;
  shape.n_heads_kv = a.kv_heads.value_or(a.heads);
  const algo::StrategyInfo& info = algo::strategy_info(a.strategy);
  kernels::AttentionOptions kernel;
  kernel.mask = mask;
  return info.cannot_run(shape, ranks, strategy_options(a, a.seqlen, kernel), false);
}

// "pretrain:2000" -> "pretrain-2000": a file name's part.
std::string file_part(std::string text) {
  std::replace(text.begin(), text.end(), ':', '-');
  return text;
}

}  // namespace

int run_bench(std::span<char* const> raw) {
  const BenchArgs b = parse_bench(raw);
  if (b.help) {
    std::cout << bench_usage();
    return 0;
  }
  const bool mpi = comm::launched_by_mpi();
  const int hardware = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  std::vector<int> rank_counts = b.ranks;
  if (mpi) {
    BURST_CHECK(b.ranks.empty(), "--ranks: under mpirun the ranks are the MPI world's; drop --ranks");
    rank_counts = {0};
  } else if (rank_counts.empty()) {
    rank_counts = {hardware};
  }
  // Checked before the sweep; written all or nothing once it is done (output.h).
  Outputs outputs(comm::launcher_rank() == 0);
  outputs.expect_dir("--out", b.out, {"bench.json", "bench.csv"});
  std::vector<BenchRow> rows;
  bool root = !mpi;
  for (int ranks : rank_counts)
    for (const std::string& mask : b.masks)
      for (std::int64_t kv : b.kv_heads)
        for (const std::string& docs : b.doc_dists)
          for (const std::string& layout : b.layouts)
            for (std::int64_t n : b.seqlens)
              for (const std::string& s : b.strategies) {
                RunArgs a;
                a.strategy = algo::parse_strategy(s, "--strategies");
                a.ranks = ranks;
                a.seqlen = n;
                a.heads = b.heads;
                a.kv_heads = kv;
                a.head_dim = b.head_dim;
                a.batch = b.batch;
                a.dtype = b.dtype;
                a.causal = mask == "causal";
                a.backward = true;
                a.repeat = b.repeat;
                a.layout = algo::parse_layout(layout, "--layouts");
                if (docs != "none") a.doc_dist = docs;
                a.link_gbps = b.link_gbps;
                a.link_latency_us = b.link_latency_us;
                a.progress = ProgressMode::kOff;
                a.block = b.block;
                a.layers = b.layers;
                if (b.mlp_dim > 0) a.mlp_dim = b.mlp_dim;
                const int world = ranks > 0 ? ranks : launcher_world_size();
                a.threads = b.threads > 0 ? b.threads : std::max(1, hardware / (mpi ? 1 : world));
                a.threads_given = true;
                // usp: groups of two ranks where the ranks pair up.
                if (a.strategy == algo::Strategy::kUsp) a.ulysses_degree = world % 2 == 0 ? 2 : 1;
                BenchRow row;
                MemoryEstimate estimate;
                row.point = Point{s, mask, "", world, n, kv};
                row.layout = layout;
                row.documents = docs;
                Point& pt = row.point;
                try {
                  const std::vector<std::int64_t> documents = documents_of(a, n, "--seqlens");
                  const kernels::MaskSpec run_mask = mask_of(a, documents);
                  row.document_count = documents.empty() ? 0 : static_cast<std::int64_t>(documents.size()) - 1;
                  row.work_ratio = algo::document_work_ratio(run_mask, n);
                  pt.skipped = b.block ? "" : cannot_run(a, world, run_mask);
                  if (pt.skipped.empty()) {  // a block that cannot run throws here, with its reason
                    estimate = estimate_memory(a, world, mpi ? 1 : world, 1);
                    check_memory(a, estimate);
                    pt.memory_mb = estimate.this_machine / 1e6;
                  }
                } catch (const Error& e) {
                  pt.skipped = e.what();
                }
                if (pt.skipped.empty() && b.block) {
                  std::cerr << "bench: block " << s << " P=" << world << " " << mask << " kv=" << kv << " s=" << n << "\n";
                  if (!run_block_point(a, estimate, row)) continue;
                  root = true;
                } else if (pt.skipped.empty()) {
                  std::cerr << "bench: " << s << " P=" << world << " " << mask << " kv=" << kv << " docs=" << docs
                            << " layout=" << layout << " s=" << n << "\n";
                  const Problem problem = make_problem(a);
                  DistributedResult r = run_burst(a, problem);
                  if (!r.root) continue;
                  root = true;
                  pt.forward_s = r.forward_seconds;
                  pt.backward_s = r.backward_seconds.value_or(0);
                  pt.forward_bytes = r.figures.forward_bytes;
                  pt.backward_bytes = r.figures.backward_bytes;
                  pt.exposed_forward = r.figures.forward_exposed;
                  pt.exposed_backward = r.figures.backward_exposed;
                  pt.error = check_forward(problem, r.fwd, a.threads).o_error;
                  row.ran = true;
                  row.fig = std::move(r.figures);
                }
                rows.push_back(std::move(row));
              }
  if (!root) return 0;

  // JSON, CSV (bench_files.h), charts.
  BenchSettings settings{b.heads, b.head_dim, b.batch, b.dtype, b.layouts, b.doc_dists, b.link_gbps, b.repeat,
                         b.block ? b.layers : 0, b.mlp_dim > 0 ? b.mlp_dim : block_mlp_dim(b.heads * b.head_dim)};
  const std::string json = bench_json(settings, rows), csv = bench_csv(rows);
  // One chart per group; the layout and the documents name it only when they vary or exist,
  // so a plain sweep keeps its file names.
  std::map<std::string, std::vector<const BenchRow*>> groups;
  for (const BenchRow& row : rows) {
    std::string key = "P" + std::to_string(row.point.ranks) + "_" + row.point.mask + "_kv" + std::to_string(row.point.kv_heads);
    if (b.layouts.size() > 1) key += "_" + row.layout;
    if (row.documents != "none") key += "_" + file_part(row.documents);
    groups[key].push_back(&row);
  }
  std::vector<std::string> charts;
  for (const auto& [key, group] : groups) {
    const std::string path = b.out + "/bench_" + key + ".svg";
    const BenchRow& first = *group.front();
    std::ostringstream title;
    title << first.point.ranks << " ranks, " << first.point.mask << ", " << b.heads << "/" << first.point.kv_heads
          << " heads, d " << b.head_dim << ", " << dtype_name(b.dtype) << ", layout " << first.layout
          << (first.documents != "none" ? ", documents " + first.documents : "")
          << (b.link_gbps > 0 ? ", links " + format_number(b.link_gbps) + " Gbit/s" : "");
    std::vector<Point> points;
    for (const BenchRow* row : group) points.push_back(row->point);
    const std::string svg = svg_text(title.str(), points, b.strategies);
    if (svg.empty()) continue;
    outputs.write_text(path, svg);
    charts.push_back(path);
  }
  outputs.write_text(b.out + "/bench.json", json);
  outputs.write_text(b.out + "/bench.csv", csv);
  outputs.commit();
  // The table on stdout.
  std::printf("%-10s %5s %-7s %4s %-10s %-14s %8s %10s %10s %12s %12s %10s %9s\n", "strategy", "ranks", "mask", "kv",
              "layout", "documents", "seqlen", "fwd s", "bwd s", "fwd MB/rank", "bwd MB/rank", "o error", "steps");
  for (const BenchRow& row : rows) {
    const Point& p = row.point;
    std::printf("%-10s %5d %-7s %4lld %-10s %-14s %8lld", p.strategy.c_str(), p.ranks, p.mask.c_str(),
                static_cast<long long>(p.kv_heads), row.layout.c_str(), row.documents.c_str(),
                static_cast<long long>(p.seqlen));
    if (const DistributedFigures* f = row.figures()) {
      const std::string steps = std::to_string(f->forward_steps_computed) + "/" +
                                std::to_string(f->forward_steps_computed + f->forward_steps_skipped);
      std::printf(" %10.4f %10.4f %12.2f %12.2f %10.2e %9s\n", p.forward_s, p.backward_s, p.forward_bytes / 1e6,
                  p.backward_bytes / 1e6, p.error, steps.c_str());
    } else {
      std::printf("   skipped: %s\n", p.skipped.c_str());
    }
  }
  std::cout << "steps: forward ring steps computed / all, over the ranks\n";
  std::cout << "wrote " << b.out << "/bench.json, " << b.out << "/bench.csv";
  for (const std::string& c : charts) std::cout << ", " << c;
  std::cout << "\n";
  double worst = 0;
  for (const BenchRow& row : rows)
    if (row.ran) worst = std::max(worst, row.point.error);
  return worst <= (b.dtype == DType::kF32 ? 1e-4 : 1e-2) ? 0 : 1;
}

}  // namespace burst::cli
