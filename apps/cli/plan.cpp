#include "plan.h"
#include "flags.h"
#include "output.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include "args.h"
#include "burst/plan.h"
#include "burst/world.h"
#include "burst/error.h"
#include "json.h"
#include "plan_calibration.h"
#include "plan_report.h"

namespace burst::cli {
namespace {

using plan::Candidate;
using plan::Cluster;
using plan::ModelShape;
using plan::Prediction;
using plan::Row;
using plan::Scope;
using plan::Workload;

struct PlanArgs {
  std::string cluster = "8xA100-PCIe";
  std::string calibration = "out/calibration.json";
  std::string model = "llama2-7b";
  std::optional<std::int64_t> layers, heads, kv_heads, head_dim, model_dim, mlp_dim;
  std::vector<std::int64_t> seqlens;
  std::int64_t batch = 1;
  std::optional<int> ranks, nodes;
  std::optional<double> flops, backward_flops, link_gbps, intra_gbps, latency_us, memory_gb;
  std::optional<int> nics_per_node;
  std::optional<DType> dtype;
  Scope scope = Scope::kModel;
  // Defaults as burst run and bench: causal, forward and backward (a training step).
  bool backward = true, causal = true, paper = false, calibrate = false, help = false;
  bool cluster_given = false;
  std::vector<Candidate> strategies;  // empty: all
  std::string json_path;
  int rounds = 7;  // --calibrate: the kernels' interleaved rounds
  std::optional<double> speed;          // --speed: compute rates scaled by it
  std::optional<double> probe_seconds;  // --probe: measure the kernels' rate now for that long
  int top = 0;  // > 0: rank every choice (USP at every Ulysses degree, every layout) and list the best `top`
  std::optional<algo::Layout> layout;  // of the strategies whose work depends on it
  std::int64_t window_left = -1, window_right = -1;  // --window; negative: unbounded
  bool masked() const { return causal || window_left >= 0 || window_right >= 0; }
};


constexpr std::int64_t kMaxCount = std::int64_t{1} << 20;

constexpr Flag<PlanArgs> kFlags[] = {
    {"--cluster", "8xA100-PCIe|4x8xA100-RoCE600|this",
     "cluster preset; 'this' is this machine from --calibrate (default: this when --calibration exists, "
     "else 8xA100-PCIe)",
     [](PlanArgs& a, std::string_view f, std::string_view v) {
       if (v != "this") plan::cluster_preset(std::string(v), std::string(f));
       a.cluster = v;
       a.cluster_given = true;
     }},
    {"--calibration", "FILE", "calibration file written by --calibrate, read by --cluster this (default out/calibration.json)",
     [](PlanArgs& a, std::string_view, std::string_view v) { a.calibration = v; }},
    {"--model", "llama2-7b|llama2-13b|custom", "model shape; custom takes --heads, --head-dim, ... (default llama2-7b)",
     [](PlanArgs& a, std::string_view f, std::string_view v) {
       if (v != "custom") plan::model_preset(std::string(v), std::string(f));
       a.model = v;
     }},
    {"--layers", "L", "transformer layers (overrides the model's)",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.layers = parse_count_at_most(f, v, 4096); }},
    {"--heads", "H", "query heads",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.heads = parse_count_at_most(f, v, kMaxCount); }},
    {"--kv-heads", "G", "key/value heads, dividing H (default: H for custom)",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.kv_heads = parse_count_at_most(f, v, kMaxCount); }},
    {"--head-dim", "D", "head dimension",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.head_dim = parse_count_at_most(f, v, 256); }},
    {"--model-dim", "D", "width of X (default heads x head_dim for custom)",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.model_dim = parse_count_at_most(f, v, kMaxCount); }},
    {"--mlp-dim", "F", "SwiGLU MLP width (default 0 for custom: no MLP)",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.mlp_dim = parse_count_at_most(f, v, kMaxCount); }},
    {"--seqlen", "S[,S...]", "sequence lengths, K = 1024, M = 1048576 (default 32K,64K,128K,256K,512K,1M)",
     [](PlanArgs& a, std::string_view f, std::string_view v) {
       a.seqlens.clear();
       for_each_item(v, [&](std::string_view item) { a.seqlens.push_back(parse_tokens(f, item)); });
     }},
    {"--batch", "B", "sequences per batch (default 1)",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.batch = parse_count_at_most(f, v, kMaxCount); }},
    {"--ranks", "P", "ranks in all (default: the cluster's; this: 2)",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.ranks = static_cast<int>(parse_count_at_most(f, v, 1 << 16)); }},
    {"--nodes", "I", "nodes, each with ranks / nodes ranks (default: the cluster's)",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.nodes = static_cast<int>(parse_count_at_most(f, v, 1 << 16)); }},
    {"--flops", "F[,B]", "FLOP/s of one rank (GPU) or core for attention and GEMMs alike, e.g. 150T or 80G; "
     "F,B: the attention backward at B (as burst run --emulate-compute F,B)",
     [](PlanArgs& a, std::string_view f, std::string_view v) {
       const std::size_t comma = v.find(',');
       a.flops = parse_real(f, v.substr(0, comma), true);
       if (comma != std::string_view::npos) a.backward_flops = parse_real(f, v.substr(comma + 1), true);
     }},
    {"--link-gbps", "G", "inter-node link per rank, Gb/s",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.link_gbps = parse_real(f, v); }},
    {"--nics-per-node", "K", "with --link-gbps: each node has K NICs of that rate, shared by its ranks (0: a link per "
     "rank, the default unless the preset says otherwise)",
     [](PlanArgs& a, std::string_view f, std::string_view v) {
       a.nics_per_node = static_cast<int>(parse_real(f, v));
     }},
    {"--intra-gbps", "G", "intra-node link per rank, Gb/s",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.intra_gbps = parse_real(f, v); }},
    {"--latency-us", "US", "latency per message on both links, microseconds",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.latency_us = parse_real(f, v); }},
    {"--memory-gb", "GB", "memory per rank, GB (10^9 bytes)",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.memory_gb = parse_real(f, v); }},
    {"--dtype", "fp32|bf16", "attention inputs, weights and activations (default bf16; this: fp32)",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.dtype = parse_dtype(v, f); }},
    {"--scope", "core|layer|model|block", "attention core (burst run), one layer (burst run --layer), the model, or "
     "transformer blocks (burst run --block) (default model)",
     [](PlanArgs& a, std::string_view f, std::string_view v) {
       a.scope = plan::parse_scope(std::string(v), std::string(f));
     }},
    {"--block", "", "the same as --scope block: --layers blocks (default 1) of width --mlp-dim (default: the "
     "model's, else round(8 D / 3) up to a multiple of 64), fp32, as burst run --block runs them",
     [](PlanArgs& a, std::string_view, std::string_view) { a.scope = Scope::kBlock; }},
    {"--backward", "", "forward and backward, a training step (the default)",
     [](PlanArgs& a, std::string_view, std::string_view) { a.backward = true; }},
    {"--forward-only", "", "the forward alone (first-token latency)",
     [](PlanArgs& a, std::string_view, std::string_view) { a.backward = false; }},
    {"--causal", "", "causal mask (the default); the rings and allgather shard tokens zigzag unless --layout or --top "
     "says otherwise",
     [](PlanArgs& a, std::string_view, std::string_view) { a.causal = true; }},
    {"--no-causal", "", "no mask (contiguous layout)",
     [](PlanArgs& a, std::string_view, std::string_view) { a.causal = false; }},
    {"--window", "LEFT,RIGHT", "a sliding window, as burst run's: keys in [query-LEFT, query+RIGHT], a negative side "
     "unbounded (with the causal default: LEFT,0 or LEFT,-1 is a causal window of LEFT + 1 keys)",
     [](PlanArgs& a, std::string_view f, std::string_view v) {
       std::tie(a.window_left, a.window_right) = parse_window_sides(f, v);
     }},
    {"--strategy", "S[,S...]", "only these strategies (burst, burst-double, ring, ring-rsa, ulysses, usp, usp:U for "
     "U ranks per Ulysses group, allgather, tp-v1, tp-v3); S@L runs burst, ring, usp or allgather with layout L "
     "(burst@striped)",
     [](PlanArgs& a, std::string_view f, std::string_view v) {
       a.strategies.clear();
       for_each_item(v, [&](std::string_view item) { a.strategies.push_back(plan::parse_candidate(std::string(item), std::string(f))); });
     }},
    {"--layout", "zigzag|striped|contiguous", "under a mask (causal, a window), the token layout of burst, ring, usp and "
     "allgather (default zigzag; --top without --layout tries every one)",
     [](PlanArgs& a, std::string_view f, std::string_view v) {
       a.layout = plan::parse_planned_layout(std::string(v), std::string(f));
     }},
    {"--top", "N", "also try USP at every Ulysses degree and, under a mask (causal, a window), every layout, and list the N "
     "fastest choices that fit, with their time and memory per rank",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.top = static_cast<int>(parse_real(f, v)); }},
    {"--paper", "", "the paper's table: LLaMA-2 7b first-token latency on 8xA100-PCIe, 32K..256K, predicted next to published",
     [](PlanArgs& a, std::string_view, std::string_view) { a.paper = true; }},
    {"--json", "FILE", "write every prediction as one JSON object to FILE",
     [](PlanArgs& a, std::string_view, std::string_view v) { a.json_path = v; }},
    {"--calibrate", "", "measure this machine (kernels, GEMM, memory, link) and write --calibration",
     [](PlanArgs& a, std::string_view, std::string_view) { a.calibrate = true; }},
    {"--rounds", "N", "with --calibrate: interleaved rounds of the kernel measurements, the median kept (default 7)",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.rounds = static_cast<int>(parse_count_at_most(f, v, 100)); }},
    {"--speed", "F", "scale the cluster's compute rates (attention kernels, GEMM, ring-rsa) by F: plan for cores that "
     "run at F times the calibrated or preset rate (e.g. the speed --probe reads)",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.speed = parse_real(f, v); }},
    {"--probe", "SECONDS", "measure the fp32 kernels' rate on every core now, for about SECONDS, and print it against "
     "--calibration's as 'speed F' (a shared machine's speed moves: scripts/plan_check.sh probes before and after "
     "every run)",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.probe_seconds = parse_real(f, v); }},
    {"--help", "", "print this help", [](PlanArgs& a, std::string_view, std::string_view) { a.help = true; }},
};

PlanArgs parse_plan_args(std::span<char* const> args) {
  PlanArgs a;
  const std::vector<std::string> given = parse_flags<PlanArgs>("plan", kFlags, args, a);
  auto was_given = [&](std::string_view f) { return std::find(given.begin(), given.end(), f) != given.end(); };
  for (auto [one, other] : {std::pair{"--forward-only", "--backward"}, {"--no-causal", "--causal"}})
    BURST_CHECK(!was_given(one) || !was_given(other), one, " cannot be combined with ", other, ": they ask for opposites");
  BURST_CHECK(!was_given("--block") || !was_given("--scope"), "--block cannot be combined with --scope: --block is --scope block");
  BURST_CHECK(!was_given("--rounds") || a.calibrate, "--rounds: it sets --calibrate's measurements; give --calibrate too");
  BURST_CHECK(!a.calibrate || !a.probe_seconds, "--probe cannot be combined with --calibrate: the probe reads a calibration");
  BURST_CHECK(!a.layout || a.masked(),
              "--layout: without a mask every layout gives every rank the same work; it needs --causal or --window");
  for (const Candidate& c : a.strategies) {
    BURST_CHECK(!a.layout || c.layout == algo::Layout::kZigzag, "--layout cannot be combined with a layout in --strategy (",
                c.name(), "): give one or the other");
    BURST_CHECK(a.masked() || c.layout == algo::Layout::kZigzag, "--strategy ", c.name(),
                ": without a mask every layout gives every rank the same work; a layout needs --causal or --window");
  }
  // A calibrated machine is the natural subject of a plan; a preset is for the paper's clusters.
  if (!a.cluster_given && !a.paper && std::filesystem::exists(a.calibration)) a.cluster = "this";
  return a;
}

ModelShape make_model(const PlanArgs& a) {
  ModelShape m;
  if (a.model == "custom") {
    BURST_CHECK(a.heads && a.head_dim, "--model: custom needs --heads and --head-dim");
    m.name = "custom";
    m.layers = 1;
    m.heads = *a.heads;
    m.kv_heads = a.kv_heads.value_or(*a.heads);
    m.head_dim = *a.head_dim;
    m.model_dim = a.model_dim.value_or(m.heads * m.head_dim);
    m.mlp_dim = 0;
  } else {
    m = plan::model_preset(a.model, "--model");
  }
  if (a.layers) m.layers = static_cast<int>(*a.layers);
  if (a.heads) m.heads = *a.heads;
  if (a.kv_heads) m.kv_heads = *a.kv_heads;
  if (a.head_dim) m.head_dim = *a.head_dim;
  if (a.model_dim) m.model_dim = *a.model_dim;
  if (a.mlp_dim) m.mlp_dim = *a.mlp_dim;
  BURST_CHECK(m.heads % m.kv_heads == 0, "--kv-heads: expected a divisor of the ", m.heads, " heads, got ", m.kv_heads);
  if (a.scope == Scope::kBlock) {  // burst run --block's defaults
    if (!a.layers) m.layers = 1;
    if (m.mlp_dim == 0) m.mlp_dim = block_mlp_dim(m.model_dim);
  }
  return m;
}

Cluster make_cluster(const PlanArgs& a, DType dtype) {
  Cluster c;
  if (a.cluster == "this") {
    c = plan::cluster_from_calibration(load_calibration(a.calibration, "--cluster this"), a.ranks.value_or(2), dtype);
  } else {
    c = plan::cluster_preset(a.cluster, "--cluster");
  }
  const int nodes = a.nodes.value_or(c.nodes);
  c = plan::resize(c, nodes, a.ranks.value_or(a.nodes ? nodes * c.ranks_per_node : c.ranks()), "--ranks");
  if (a.flops) {
    c.attention_forward_flops = c.attention_backward_flops = c.gemm_flops = *a.flops;
    if (a.backward_flops) c.attention_backward_flops = *a.backward_flops;
    c.attention_forward_flops_causal = c.attention_backward_flops_causal = 0;
  }
  if (a.intra_gbps) c.intra.bandwidth = *a.intra_gbps * 1e9 / 8;
  if (a.link_gbps) c.inter.bandwidth = *a.link_gbps * 1e9 / 8;
  if (a.nics_per_node) c.nics_per_node = *a.nics_per_node;
  if (a.latency_us) c.intra.latency = c.inter.latency = *a.latency_us * 1e-6;
  if (a.memory_gb) c.memory_bytes = *a.memory_gb * 1e9;
  if (a.speed) c = plan::at_speed(std::move(c), *a.speed);
  return c;
}

// The kernels' rate now against the calibration's: the speed to plan with.
int run_probe(const PlanArgs& a) {
  const plan::Calibration c = load_calibration(a.calibration, "--probe");
  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const double rate = plan::probe_kernel_rate(cores, *a.probe_seconds);
  std::cout << "speed " << fmt("%.4f", rate / c.attention_forward_f32) << " (fp32 forward " << fmt("%.1f", rate * 1e-9)
            << " GFLOP/s per core now, " << fmt("%.1f", c.attention_forward_f32 * 1e-9) << " in " << a.calibration
            << ", " << cores << " cores)\n";
  return 0;
}

int run_calibrate(const PlanArgs& a) {
  Outputs outputs(comm::launcher_rank() == 0);
  outputs.expect_file("--calibration", a.calibration);  // before the minutes of measuring
  bool root = false;
  // Under mpirun every process measures its own core; in one process, one thread per core.
  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  plan::Calibration c = plan::measure_compute(std::cerr, comm::launched_by_mpi() ? 1 : cores, a.rounds);
  std::cerr << "calibrating: link (ring steps of 8 B and 64 MiB between 2 ranks)\n" << std::flush;
  std::mutex mutex;
  comm::run_world(2, [&](comm::Communicator& comm) {
    plan::measure_link(comm, c);
    if (comm.rank() == 0) {
      std::lock_guard lock(mutex);
      root = true;
    }
  });
  if (!root) return 0;
  outputs.write_text(a.calibration, calibration_json(c));
  outputs.commit();
  print_calibration(std::cout, c);
  std::cout << "written to " << a.calibration << "\n";
  return 0;
}

}  // namespace

std::string plan_usage() {
  return flag_usage<PlanArgs>(
      "plan",
      "Predicts time, bytes and memory per rank of every strategy for a cluster and a model shape and "
      "recommends one (docs/plan.md). burst plan --calibrate measures this machine first; later plans use that "
      "calibration unless --cluster names a preset.",
      kFlags);
}

int run_plan(std::span<char* const> args) {
  PlanArgs a = parse_plan_args(args);
  if (a.help) {
    std::cout << plan_usage();
    return 0;
  }
  if (a.calibrate) return run_calibrate(a);
  if (a.probe_seconds) return run_probe(a);
  // Under mpirun only the calibration is collective; the predictions are printed once.
  if (comm::launcher_rank() != 0) return 0;
  Outputs outputs;
  if (!a.json_path.empty()) outputs.expect_file("--json", a.json_path);
  if (a.paper) {
    BURST_CHECK(a.model == "llama2-7b", "--paper: the paper's table is for llama2-7b, got --model ", a.model);
    a.scope = Scope::kModel;
    a.backward = false;
  }
  const DType dtype = a.dtype.value_or(a.cluster == "this" ? DType::kF32 : DType::kBF16);
  const ModelShape m = make_model(a);
  const Cluster c = make_cluster(a, dtype);
  Workload w = plan::make_workload(a.batch, a.causal, a.backward, a.scope, dtype);
  w.window_left = a.window_left;
  w.window_right = a.window_right;
  std::vector<std::int64_t> seqlens = a.seqlens;
  if (seqlens.empty()) {
    seqlens = a.paper ? kPaperSeqlens
                      : std::vector<std::int64_t>{32768, 65536, 131072, 262144, 524288, 1048576};
  }
  std::vector<Candidate> choices = a.strategies.empty() ? plan::candidates() : a.strategies;
  if (a.layout) choices = plan::with_layout(std::move(choices), *a.layout);
  if (a.top > 0) {
    choices = plan::with_ulysses_degrees(choices, m, c);
    if (!a.layout) choices = plan::with_layouts(choices, a.masked());
  }

  print_header(std::cout, c, m, w);
  const std::vector<Row> rows = plan::predict_all(c, m, w, seqlens, choices);
  for (const Row& row : rows) {
    print_row(std::cout, row);
    if (a.top > 0) print_top(std::cout, row, a.top);
  }
  for (const Row& row : rows)
    if (row.best < 0) std::cout << what_would_fit(c, m, w, row.seqlen, choices) << "\n";
  if (a.paper) print_paper(std::cout, c, m, w);
  if (!a.json_path.empty()) {
    outputs.write_text(a.json_path, plan_json(c, m, w, rows));
    outputs.commit();
  }
  return 0;
}

}  // namespace burst::cli
