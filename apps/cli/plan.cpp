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
#include <optional>
#include <sstream>
#include <string_view>
#include <vector>

#include "burst/world.h"
#include "burst/error.h"
#include "json.h"
#include "plan_calibrate.h"
#include "plan_model.h"

namespace burst::cli {
namespace {

using plan::Choice;
using plan::Cluster;
using plan::ModelShape;
using plan::Prediction;
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
  std::optional<double> flops, link_gbps, intra_gbps, latency_us, memory_gb;
  std::optional<DType> dtype;
  Scope scope = Scope::kModel;
  // Defaults as burst run and bench: causal, forward and backward (a training step).
  bool backward = true, causal = true, paper = false, calibrate = false, help = false;
  bool cluster_given = false;
  std::vector<Choice> strategies;  // empty: all
  std::string json_path;
};

std::string fmt(const char* f, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}

// An integer with an optional binary suffix K (1024) or M (1048576): "32K", "1M", "4096".
std::int64_t parse_tokens(std::string_view flag, std::string_view text) {
  std::int64_t unit = 1;
  std::string_view digits = text;
  if (!text.empty() && (text.back() == 'K' || text.back() == 'k')) unit = 1024;
  if (!text.empty() && (text.back() == 'M' || text.back() == 'm')) unit = 1024 * 1024;
  if (unit != 1) digits.remove_suffix(1);
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  BURST_CHECK(ec == std::errc() && end == digits.data() + digits.size() && value >= 1 && value <= (std::int64_t{1} << 32) / unit,
              flag, ": expected a positive integer with an optional K or M suffix, got '", text, "'");
  return value * unit;
}

std::int64_t parse_count(std::string_view flag, std::string_view text, std::int64_t max) {
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  BURST_CHECK(ec == std::errc() && end == text.data() + text.size() && value >= 1 && value <= max, flag,
              ": expected an integer in [1, ", max, "], got '", text, "'");
  return value;
}

// A positive finite number with an optional decimal suffix (K, M, G, T: 1e3 .. 1e12).
double parse_positive(std::string_view flag, std::string_view text, bool suffixes = false) {
  double unit = 1;
  std::string_view digits = text;
  if (suffixes && !text.empty()) {
    switch (text.back()) {
      case 'K': unit = 1e3; break;
      case 'M': unit = 1e6; break;
      case 'G': unit = 1e9; break;
      case 'T': unit = 1e12; break;
      default: break;
    }
    if (unit != 1) digits.remove_suffix(1);
  }
  double value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  BURST_CHECK(ec == std::errc() && end == digits.data() + digits.size() && std::isfinite(value) && value > 0, flag,
              ": expected a positive number", suffixes ? " (optional suffix K, M, G, T)" : "", ", got '", text, "'");
  return value * unit;
}

template <class Fn>
void for_each_item(std::string_view text, Fn&& fn) {
  std::size_t start = 0;
  while (true) {
    const auto comma = text.find(',', start);
    fn(text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (comma == std::string_view::npos) return;
    start = comma + 1;
  }
}

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
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.layers = parse_count(f, v, 4096); }},
    {"--heads", "H", "query heads",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.heads = parse_count(f, v, kMaxCount); }},
    {"--kv-heads", "G", "key/value heads, dividing H (default: H for custom)",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.kv_heads = parse_count(f, v, kMaxCount); }},
    {"--head-dim", "D", "head dimension",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.head_dim = parse_count(f, v, 256); }},
    {"--model-dim", "D", "width of X (default heads x head_dim for custom)",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.model_dim = parse_count(f, v, kMaxCount); }},
    {"--mlp-dim", "F", "SwiGLU MLP width (default 0 for custom: no MLP)",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.mlp_dim = parse_count(f, v, kMaxCount); }},
    {"--seqlen", "S[,S...]", "sequence lengths, K = 1024, M = 1048576 (default 32K,64K,128K,256K,512K,1M)",
     [](PlanArgs& a, std::string_view f, std::string_view v) {
       a.seqlens.clear();
       for_each_item(v, [&](std::string_view item) { a.seqlens.push_back(parse_tokens(f, item)); });
     }},
    {"--batch", "B", "sequences per batch (default 1)",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.batch = parse_count(f, v, kMaxCount); }},
    {"--ranks", "P", "ranks in all (default: the cluster's; this: 2)",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.ranks = static_cast<int>(parse_count(f, v, 1 << 16)); }},
    {"--nodes", "I", "nodes, each with ranks / nodes ranks (default: the cluster's)",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.nodes = static_cast<int>(parse_count(f, v, 1 << 16)); }},
    {"--flops", "F", "FLOP/s of one rank (GPU) or core for attention and GEMMs alike, e.g. 150T or 80G",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.flops = parse_positive(f, v, true); }},
    {"--link-gbps", "G", "inter-node link per rank, Gb/s",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.link_gbps = parse_positive(f, v); }},
    {"--intra-gbps", "G", "intra-node link per rank, Gb/s",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.intra_gbps = parse_positive(f, v); }},
    {"--latency-us", "US", "latency per message on both links, microseconds",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.latency_us = parse_positive(f, v); }},
    {"--memory-gb", "GB", "memory per rank, GB (10^9 bytes)",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.memory_gb = parse_positive(f, v); }},
    {"--dtype", "fp32|bf16", "attention inputs, weights and activations (default bf16; this: fp32)",
     [](PlanArgs& a, std::string_view f, std::string_view v) { a.dtype = parse_dtype(v, f); }},
    {"--scope", "core|layer|model", "attention core (burst run), one layer (burst run --layer) or the model (default model)",
     [](PlanArgs& a, std::string_view f, std::string_view v) {
       if (v == "core") {
         a.scope = Scope::kCore;
       } else if (v == "layer") {
         a.scope = Scope::kLayer;
       } else {
         BURST_CHECK(v == "model", f, ": expected core, layer or model, got '", v, "'");
         a.scope = Scope::kModel;
       }
     }},
    {"--backward", "", "forward and backward, a training step (the default)",
     [](PlanArgs& a, std::string_view, std::string_view) { a.backward = true; }},
    {"--forward-only", "", "the forward alone (first-token latency)",
     [](PlanArgs& a, std::string_view, std::string_view) { a.backward = false; }},
    {"--causal", "", "causal mask, zigzag layout for the rings (the default)",
     [](PlanArgs& a, std::string_view, std::string_view) { a.causal = true; }},
    {"--no-causal", "", "no mask (contiguous layout)",
     [](PlanArgs& a, std::string_view, std::string_view) { a.causal = false; }},
    {"--strategy", "S[,S...]", "only these strategies (burst, burst-double, ring, ring-rsa, ulysses, usp, allgather, tp-v1, tp-v3)",
     [](PlanArgs& a, std::string_view f, std::string_view v) {
       a.strategies.clear();
       for_each_item(v, [&](std::string_view item) { a.strategies.push_back(plan::parse_choice(std::string(item), std::string(f))); });
     }},
    {"--paper", "", "the paper's table: LLaMA-2 7b first-token latency on 8xA100-PCIe, 32K..256K, predicted next to published",
     [](PlanArgs& a, std::string_view, std::string_view) { a.paper = true; }},
    {"--json", "FILE", "write every prediction as one JSON object to FILE",
     [](PlanArgs& a, std::string_view, std::string_view v) { a.json_path = v; }},
    {"--calibrate", "", "measure this machine (kernels, GEMM, memory, link) and write --calibration",
     [](PlanArgs& a, std::string_view, std::string_view) { a.calibrate = true; }},
    {"--help", "", "print this help", [](PlanArgs& a, std::string_view, std::string_view) { a.help = true; }},
};

PlanArgs parse_plan_args(std::span<char* const> args) {
  PlanArgs a;
  const std::vector<std::string> given = parse_flags<PlanArgs>("plan", kFlags, args, a);
  auto was_given = [&](std::string_view f) { return std::find(given.begin(), given.end(), f) != given.end(); };
  for (auto [one, other] : {std::pair{"--forward-only", "--backward"}, {"--no-causal", "--causal"}})
    BURST_CHECK(!was_given(one) || !was_given(other), one, " cannot be combined with ", other, ": they ask for opposites");
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
  return m;
}

Cluster make_cluster(const PlanArgs& a, DType dtype) {
  Cluster c;
  if (a.cluster == "this") {
    c = plan::cluster_from_calibration(plan::load_calibration(a.calibration, "--cluster this"), a.ranks.value_or(2), dtype);
  } else {
    c = plan::cluster_preset(a.cluster, "--cluster");
  }
  const int nodes = a.nodes.value_or(c.nodes);
  const int ranks = a.ranks.value_or(a.nodes ? nodes * c.ranks_per_node : c.ranks());
  BURST_CHECK(ranks % nodes == 0, "--ranks: expected a multiple of the ", nodes, " nodes, got ", ranks);
  const int per_node = ranks / nodes;
  if (a.cluster != "this") {
    // GPUs: one compute slot per rank.
    c.compute_slots = per_node;
  } else {
    // Pretended nodes (burst run --ranks-per-node) share this machine's cores (its memory is
    // already divided among the ranks).
    c.compute_slots = std::max(1, c.compute_slots / nodes);
  }
  c.nodes = nodes;
  c.ranks_per_node = per_node;
  if (a.flops) {
    c.attention_forward_flops = c.attention_backward_flops = c.gemm_flops = *a.flops;
    c.attention_forward_flops_causal = c.attention_backward_flops_causal = 0;
  }
  if (a.intra_gbps) c.intra.bandwidth = *a.intra_gbps * 1e9 / 8;
  if (a.link_gbps) c.inter.bandwidth = *a.link_gbps * 1e9 / 8;
  if (a.latency_us) c.intra.latency = c.inter.latency = *a.latency_us * 1e-6;
  if (a.memory_gb) c.memory_bytes = *a.memory_gb * 1e9;
  return c;
}

std::string describe_model(const ModelShape& m) {
  std::ostringstream s;
  s << m.name << " (" << m.layers << " layers, " << m.heads << "/" << m.kv_heads << " heads, d " << m.head_dim << ", D "
    << m.model_dim << ", MLP " << m.mlp_dim << ")";
  return s.str();
}

std::string seqlen_label(std::int64_t s) {
  if (s % (1024 * 1024) == 0) return std::to_string(s / (1024 * 1024)) + "M";
  if (s % 1024 == 0) return std::to_string(s / 1024) + "K";
  return std::to_string(s);
}

struct Row {
  std::int64_t seqlen = 0;
  std::vector<Prediction> predictions;
  int best = -1;
};

std::vector<Row> predict_all(const Cluster& c, const ModelShape& m, const Workload& base,
                             const std::vector<std::int64_t>& seqlens, const std::vector<Choice>& choices) {
  std::vector<Row> rows;
  for (std::int64_t s : seqlens) {
    Workload w = base;
    w.seqlen = s;
    Row row;
    row.seqlen = s;
    for (Choice ch : choices) row.predictions.push_back(plan::predict(ch, c, m, w));
    row.best = plan::recommend(row.predictions);
    rows.push_back(std::move(row));
  }
  return rows;
}

// For a length no strategy fits in memory: the longest length that fits on these ranks, and
// how many ranks (whole nodes more) this length needs.
std::string what_would_fit(const Cluster& c, const ModelShape& m, const Workload& w, std::int64_t seqlen,
                           const std::vector<Choice>& choices) {
  auto fits = [&](const Cluster& cl, std::int64_t s) {
    return predict_all(cl, m, w, {s}, choices).front().best >= 0;
  };
  std::string text = "fit       nothing fits " + std::to_string(seqlen) + " tokens in memory";
  std::int64_t shorter = seqlen / 2;
  while (shorter >= std::max<std::int64_t>(c.ranks(), 1) && !fits(c, shorter)) shorter /= 2;
  if (shorter >= c.ranks()) text += "; on " + std::to_string(c.ranks()) + " ranks " + std::to_string(shorter) + " tokens fit";
  for (int factor = 2; factor <= 1024; factor *= 2) {
    Cluster more = c;
    more.nodes = c.nodes * factor;
    if (fits(more, seqlen)) return text + "; " + std::to_string(more.ranks()) + " ranks (" + std::to_string(more.nodes) +
                                   " nodes) fit " + std::to_string(seqlen);
  }
  return text;
}

void print_header(std::ostream& os, const Cluster& c, const ModelShape& m, const Workload& w) {
  os << "cluster   " << c.name << ": " << c.nodes << " node(s) x " << c.ranks_per_node << " ranks; " << c.description << "\n";
  os << "rates     per rank: attention forward " << fmt("%.4g", c.attention_forward_flops * c.rank_share() * 1e-12)
     << " / backward " << fmt("%.4g", c.attention_backward_flops * c.rank_share() * 1e-12) << " TFLOP/s, GEMM "
     << fmt("%.4g", c.gemm_flops * c.rank_share() * 1e-12) << " TFLOP/s\n";
  os << "links     intra " << fmt("%.3g", c.intra.bandwidth * 1e-9) << " GB/s + " << fmt("%.3g", c.intra.latency * 1e6)
     << " us/message";
  if (c.nodes > 1) os << ", inter " << fmt("%.3g", c.inter.bandwidth * 1e-9) << " GB/s + " << fmt("%.3g", c.inter.latency * 1e6) << " us";
  os << (c.overlap ? "; ring transfers overlap compute" : "; transfers add to compute (no overlap)") << "; memory "
     << fmt("%.1f", c.memory_bytes * 1e-9) << " GB per rank\n";
  os << "model     " << describe_model(m) << "\n";
  os << "workload  scope " << plan::scope_name(w.scope) << ", " << (w.backward ? "forward + backward" : "forward")
     << ", batch " << w.batch << ", " << (w.causal ? "causal (zigzag)" : "no mask") << ", "
     << (w.element_bytes == 2 ? "bf16" : "fp32") << "\n";
}

void print_row(std::ostream& os, const Row& row) {
  os << "\nseqlen " << row.seqlen << " (" << seqlen_label(row.seqlen) << ")\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-13s %10s %10s %10s %10s %10s %12s %10s\n", "strategy", "forward s", "backward s",
                "total s", "compute s", "exposed s", "GB sent/rank", "memory GB");
  os << line;
  for (std::size_t i = 0; i < row.predictions.size(); ++i) {
    const Prediction& p = row.predictions[i];
    const std::string name = plan::choice_name(p.choice) + (static_cast<int>(i) == row.best ? " *" : "");
    if (!p.infeasible.empty()) {
      std::snprintf(line, sizeof line, "%-13s cannot run: %s\n", name.c_str(), p.infeasible.c_str());
    } else {
      std::snprintf(line, sizeof line, "%-13s %10.4g %10.4g %10.4g %10.4g %10.4g %12.4g %10.4g%s\n", name.c_str(),
                    p.forward_seconds, p.backward_seconds, p.seconds(), p.compute_seconds, p.exposed_seconds,
                    (p.forward_bytes + p.backward_bytes) * 1e-9, p.memory_bytes * 1e-9, p.out_of_memory ? "  OOM" : "");
    }
    os << line;
  }
  if (row.best < 0) {
    os << "recommended: none (every strategy is out of memory or cannot split the heads)\n";
    return;
  }
  const Prediction& best = row.predictions[static_cast<std::size_t>(row.best)];
  os << "recommended: " << plan::choice_name(best.choice) << " (" << fmt("%.4g", best.seconds()) << " s";
  int second = -1;
  for (std::size_t i = 0; i < row.predictions.size(); ++i) {
    const Prediction& p = row.predictions[i];
    if (static_cast<int>(i) == row.best || !p.runs()) continue;
    if (second < 0 || p.seconds() < row.predictions[static_cast<std::size_t>(second)].seconds()) second = static_cast<int>(i);
  }
  if (second >= 0) {
    const Prediction& s = row.predictions[static_cast<std::size_t>(second)];
    os << "; next " << plan::choice_name(s.choice) << " " << fmt("%.4g", s.seconds()) << " s";
  }
  os << ")\n";
}

// The paper's Table (first-token latency of LLaMA-2 7b on 8 x A100 PCIe, seconds; 0 = OOM),
// as restated in the project's spec notes.
struct PaperRow {
  const char* method;
  Choice choice;
  double seconds[4];
};
constexpr std::int64_t kPaperSeqlens[4] = {32768, 65536, 131072, 262144};
constexpr PaperRow kPaper[] = {
    {"RingAttention", Choice::kRingRsa, {5.13, 0, 0, 0}},
    {"TP (Megatron V3)", Choice::kTpV3, {5.67, 12.25, 28.73, 75.52}},
    {"BurstAttention", Choice::kBurst, {3.27, 6.49, 16.01, 49.32}},
};

void print_paper(std::ostream& os, const Cluster& c, const ModelShape& m, const Workload& base) {
  std::vector<std::int64_t> seqlens(std::begin(kPaperSeqlens), std::end(kPaperSeqlens));
  std::vector<Choice> choices;
  for (const PaperRow& r : kPaper) choices.push_back(r.choice);
  const std::vector<Row> rows = predict_all(c, m, base, seqlens, choices);
  os << "\nLLaMA-2 7b first-token latency on " << c.name << ", seconds: predicted (paper)"
     << (base.causal ? ", causal attention FLOPs" : ", full attention FLOPs") << "\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-26s %16s %16s %16s %16s\n", "method", "32K", "64K", "128K", "256K");
  os << line;
  auto cell = [](const Prediction& p, double paper) {
    const std::string pred = p.out_of_memory ? "OOM" : fmt("%.2f", p.seconds());
    return pred + " (" + (paper > 0 ? fmt("%.2f", paper) : std::string("OOM")) + ")";
  };
  for (std::size_t k = 0; k < std::size(kPaper); ++k) {
    const std::string label = std::string(kPaper[k].method) + " [" + plan::choice_name(kPaper[k].choice) + "]";
    std::snprintf(line, sizeof line, "%-26s", label.c_str());
    os << line;
    for (std::size_t s = 0; s < rows.size(); ++s) {
      std::snprintf(line, sizeof line, " %16s", cell(rows[s].predictions[k], kPaper[k].seconds[s]).c_str());
      os << line;
    }
    os << "\n";
  }
  std::snprintf(line, sizeof line, "%-26s", "TP-V3 / Burst");
  os << line;
  for (std::size_t s = 0; s < rows.size(); ++s) {
    const double ratio = rows[s].predictions[1].seconds() / rows[s].predictions[2].seconds();
    const double paper = kPaper[1].seconds[s] / kPaper[2].seconds[s];
    std::snprintf(line, sizeof line, " %16s", (fmt("%.2f", ratio) + " (" + fmt("%.2f", paper) + ")").c_str());
    os << line;
  }
  os << "\n";
}

std::string prediction_json(const Prediction& p, bool best) {
  JsonObject o;
  o.string("strategy", plan::choice_name(p.choice));
  o.boolean("runs", p.runs());
  o.string("cannot_run", p.infeasible);
  o.boolean("out_of_memory", p.out_of_memory);
  o.boolean("recommended", best);
  o.number("forward_seconds", p.forward_seconds);
  o.number("backward_seconds", p.backward_seconds);
  o.number("seconds", p.seconds());
  o.number("compute_seconds", p.compute_seconds);
  o.number("comm_seconds", p.comm_seconds);
  o.number("exposed_seconds", p.exposed_seconds);
  o.number("forward_bytes_per_rank", p.forward_bytes);
  o.number("backward_bytes_per_rank", p.backward_bytes);
  o.number("inter_node_bytes_per_rank", p.inter_bytes);
  o.number("memory_bytes_per_rank", p.memory_bytes);
  return o.text();
}

std::string plan_json(const Cluster& c, const ModelShape& m, const Workload& w,
                const std::vector<Row>& rows) {
  JsonObject j;
  JsonObject cj;
  cj.string("name", c.name);
  cj.string("description", c.description);
  cj.integer("nodes", c.nodes);
  cj.integer("ranks_per_node", c.ranks_per_node);
  cj.integer("compute_slots_per_node", c.compute_slots);
  cj.number("attention_forward_flops_per_rank", c.attention_forward_flops * c.rank_share());
  cj.number("attention_backward_flops_per_rank", c.attention_backward_flops * c.rank_share());
  cj.number("gemm_flops_per_rank", c.gemm_flops * c.rank_share());
  cj.number("intra_bandwidth", c.intra.bandwidth);
  cj.number("intra_latency", c.intra.latency);
  cj.number("inter_bandwidth", c.inter.bandwidth);
  cj.number("inter_latency", c.inter.latency);
  cj.number("memory_bytes_per_rank", c.memory_bytes);
  cj.boolean("overlap", c.overlap);
  j.raw("cluster", cj.text());
  JsonObject mj;
  mj.string("name", m.name);
  mj.integer("layers", m.layers);
  mj.integer("heads", m.heads);
  mj.integer("kv_heads", m.kv_heads);
  mj.integer("head_dim", m.head_dim);
  mj.integer("model_dim", m.model_dim);
  mj.integer("mlp_dim", m.mlp_dim);
  j.raw("model", mj.text());
  j.string("scope", plan::scope_name(w.scope));
  j.boolean("backward", w.backward);
  j.boolean("causal", w.causal);
  j.integer("batch", w.batch);
  j.string("dtype", w.element_bytes == 2 ? "bf16" : "fp32");
  std::string list;
  for (const Row& row : rows) {
    JsonObject r;
    r.integer("seqlen", row.seqlen);
    r.string("recommended", row.best >= 0 ? plan::choice_name(row.predictions[static_cast<std::size_t>(row.best)].choice) : "");
    std::string strategies;
    for (std::size_t i = 0; i < row.predictions.size(); ++i)
      strategies += (i ? ", " : "") + prediction_json(row.predictions[i], static_cast<int>(i) == row.best);
    r.raw("strategies", "[" + strategies + "]");
    list += (list.empty() ? "" : ", ") + r.text();
  }
  j.raw("results", "[" + list + "]");
  return j.text();
}

int run_calibrate(const PlanArgs& a) {
  Outputs outputs(comm::launcher_rank() == 0);
  outputs.expect_file("--calibration", a.calibration);  // before the minutes of measuring
  bool root = false;
  const plan::Calibration c = plan::calibrate(std::cerr, root);
  if (!root) return 0;
  outputs.write_text(a.calibration, plan::calibration_json(c));
  outputs.commit();
  std::cout << "calibration (" << c.cores << " cores, one thread each):\n"
            << "  attention fp32 forward " << fmt("%.1f", c.attention_forward_f32 * 1e-9) << " GFLOP/s, backward "
            << fmt("%.1f", c.attention_backward_f32 * 1e-9) << "\n"
            << "  attention bf16 forward " << fmt("%.1f", c.attention_forward_bf16 * 1e-9) << " GFLOP/s, backward "
            << fmt("%.1f", c.attention_backward_bf16 * 1e-9) << "\n"
            << "  causal fp32 / bf16     forward " << fmt("%.1f", c.attention_forward_f32_causal * 1e-9) << " / "
            << fmt("%.1f", c.attention_forward_bf16_causal * 1e-9) << " GFLOP/s, backward "
            << fmt("%.1f", c.attention_backward_f32_causal * 1e-9) << " / "
            << fmt("%.1f", c.attention_backward_bf16_causal * 1e-9) << "\n"
            << "  projection GEMM fp32   " << fmt("%.1f", c.gemm_f32 * 1e-9) << " GFLOP/s\n"
            << "  memory copy            " << fmt("%.2f", c.memory_bandwidth * 1e-9) << " GB/s\n"
            << "  link (" << c.link_backend << ")           " << fmt("%.2f", c.link_bandwidth * 1e-9) << " GB/s, "
            << fmt("%.1f", c.link_latency * 1e6) << " us per message\n"
            << "  memory available       " << fmt("%.1f", c.memory_bytes * 1e-9) << " GB\n"
            << "written to " << a.calibration << "\n";
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
  Workload w;
  w.batch = a.batch;
  w.causal = a.causal;
  w.backward = a.backward;
  w.scope = a.scope;
  w.element_bytes = dtype_size(dtype);
  // burst run writes O in the input dtype; the layer keeps an fp32 O.
  w.output_bytes = a.scope == Scope::kLayer ? sizeof(float) : dtype_size(dtype);
  w.weight_bytes = dtype_size(dtype);
  w.activation_bytes = a.scope == Scope::kLayer ? sizeof(float) : dtype_size(dtype);
  std::vector<std::int64_t> seqlens = a.seqlens;
  if (seqlens.empty()) {
    seqlens = a.paper ? std::vector<std::int64_t>(std::begin(kPaperSeqlens), std::end(kPaperSeqlens))
                      : std::vector<std::int64_t>{32768, 65536, 131072, 262144, 524288, 1048576};
  }
  std::vector<Choice> choices = a.strategies.empty() ? plan::all_choices() : a.strategies;

  print_header(std::cout, c, m, w);
  const std::vector<Row> rows = predict_all(c, m, w, seqlens, choices);
  for (const Row& row : rows) print_row(std::cout, row);
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
