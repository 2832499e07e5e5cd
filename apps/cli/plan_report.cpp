#include "plan_report.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <sstream>

#include "json.h"

namespace burst::cli {

using plan::Candidate;
using plan::Cluster;
using plan::ModelShape;
using plan::Prediction;
using plan::Row;
using plan::Workload;

std::string fmt(const char* f, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}

namespace {

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

// The paper's Table (first-token latency of LLaMA-2 7b on 8 x A100 PCIe, seconds; 0 = OOM),
// as restated in the project's spec notes.
struct PaperRow {
  const char* method;
  Candidate candidate;
  double seconds[4];
};
constexpr PaperRow kPaper[] = {
    {"RingAttention", {algo::Strategy::kRingRsa}, {5.13, 0, 0, 0}},
    {"TP (Megatron V3)", {algo::Strategy::kTpV3}, {5.67, 12.25, 28.73, 75.52}},
    {"BurstAttention", {algo::Strategy::kBurst}, {3.27, 6.49, 16.01, 49.32}},
};

std::string prediction_json(const Prediction& p, bool best) {
  JsonObject o;
  o.string("strategy", p.candidate.name());
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

}  // namespace

const std::vector<std::int64_t> kPaperSeqlens = {32768, 65536, 131072, 262144};

std::string what_would_fit(const Cluster& c, const ModelShape& m, const Workload& w, std::int64_t seqlen,
                           const std::vector<Candidate>& choices) {
  auto fits = [&](const Cluster& cl, std::int64_t s) {
    return plan::predict_all(cl, m, w, {s}, choices).front().best >= 0;
  };
  std::string text = "fit       nothing fits " + std::to_string(seqlen) + " tokens in memory";
  std::int64_t shorter = seqlen / 2;
  while (shorter >= std::max<std::int64_t>(c.ranks(), 1) && !fits(c, shorter)) shorter /= 2;
  if (shorter >= c.ranks()) text += "; on " + std::to_string(c.ranks()) + " ranks " + std::to_string(shorter) + " tokens fit";
  // The least memory per rank any choice needs: once doubling the ranks no longer lowers it
  // (weights that no strategy here shards), more ranks will not fit either.
  auto least_memory = [](const plan::Row& row) {
    double least = std::numeric_limits<double>::infinity();
    for (const plan::Prediction& p : row.predictions)
      if (p.infeasible.empty()) least = std::min(least, p.memory_bytes);
    return least;
  };
  double before = std::numeric_limits<double>::infinity();
  for (int factor = 2; factor <= 1024; factor *= 2) {
    Cluster more = c;
    more.nodes = c.nodes * factor;
    if (more.ranks() > seqlen) break;  // every rank needs a token
    const plan::Row row = plan::predict_all(more, m, w, {seqlen}, choices).front();
    if (row.best >= 0)
      return text + "; " + std::to_string(more.ranks()) + " ranks (" + std::to_string(more.nodes) + " nodes) fit " +
             std::to_string(seqlen);
    const double least = least_memory(row);
    if (!(least < 0.99 * before)) {
      text += "; more ranks do not lower the memory per rank below " + fmt("%.1f", least * 1e-9) + " GB";
      break;
    }
    before = least;
  }
  return text;
}

std::string describe_mask(const Workload& w) {
  std::string s = w.causal ? "causal" : "";
  if (w.window_left >= 0 || w.window_right >= 0) {
    if (!s.empty()) s += ", ";
    s += "window " + std::to_string(w.window_left) + "," + std::to_string(w.window_right);
  }
  return s.empty() ? "no mask" : s + " (zigzag, or the layout after @)";
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
     << ", batch " << w.batch << ", " << describe_mask(w) << ", "
     << (w.element_bytes == 2 ? "bf16" : "fp32") << "\n";
}

void print_row(std::ostream& os, const Row& row) {
  os << "\nseqlen " << row.seqlen << " (" << seqlen_label(row.seqlen) << ")\n";
  char line[512];
  int width = 13;  // the longest name, "usp:16@contiguous *" included
  for (const Prediction& p : row.predictions) width = std::max(width, static_cast<int>(p.candidate.name().size()) + 2);
  std::snprintf(line, sizeof line, "%-*s %10s %10s %10s %10s %10s %12s %10s\n", width, "strategy", "forward s",
                "backward s", "total s", "compute s", "exposed s", "GB sent/rank", "memory GB");
  os << line;
  for (std::size_t i = 0; i < row.predictions.size(); ++i) {
    const Prediction& p = row.predictions[i];
    const std::string name = p.candidate.name() + (static_cast<int>(i) == row.best ? " *" : "");
    if (!p.infeasible.empty()) {
      std::snprintf(line, sizeof line, "%-*s cannot run: %s\n", width, name.c_str(), p.infeasible.c_str());
    } else {
      std::snprintf(line, sizeof line, "%-*s %10.4g %10.4g %10.4g %10.4g %10.4g %12.4g %10.4g%s\n", width, name.c_str(),
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
  os << "recommended: " << best.candidate.name() << " (" << fmt("%.4g", best.seconds()) << " s";
  int second = -1;
  for (std::size_t i = 0; i < row.predictions.size(); ++i) {
    const Prediction& p = row.predictions[i];
    if (static_cast<int>(i) == row.best || !p.runs()) continue;
    if (second < 0 || p.seconds() < row.predictions[static_cast<std::size_t>(second)].seconds()) second = static_cast<int>(i);
  }
  if (second >= 0) {
    const Prediction& s = row.predictions[static_cast<std::size_t>(second)];
    os << "; next " << s.candidate.name() << " " << fmt("%.4g", s.seconds()) << " s";
  }
  os << ")\n";
}

void print_top(std::ostream& os, const Row& row, int n) {
  std::vector<const Prediction*> runs;
  for (const Prediction& p : row.predictions)
    if (p.runs()) runs.push_back(&p);
  std::stable_sort(runs.begin(), runs.end(), [](const Prediction* a, const Prediction* b) { return a->seconds() < b->seconds(); });
  if (runs.size() > static_cast<std::size_t>(n)) runs.resize(static_cast<std::size_t>(n));
  os << "best " << runs.size() << ":";
  for (std::size_t i = 0; i < runs.size(); ++i) {
    os << (i ? "; " : " ") << runs[i]->candidate.name() << " " << fmt("%.4g", runs[i]->seconds()) << " s, "
       << fmt("%.3g", runs[i]->memory_bytes * 1e-9) << " GB/rank";
  }
  os << "\n";
}

void print_paper(std::ostream& os, const Cluster& c, const ModelShape& m, const Workload& base) {
  const std::vector<std::int64_t>& seqlens = kPaperSeqlens;
  std::vector<Candidate> choices;
  for (const PaperRow& r : kPaper) choices.push_back(r.candidate);
  const std::vector<Row> rows = plan::predict_all(c, m, base, seqlens, choices);
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
    const std::string label = std::string(kPaper[k].method) + " [" + kPaper[k].candidate.name() + "]";
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
  j.integer("window_left", w.window_left);
  j.integer("window_right", w.window_right);
  j.integer("batch", w.batch);
  j.string("dtype", w.element_bytes == 2 ? "bf16" : "fp32");
  std::string list;
  for (const Row& row : rows) {
    JsonObject r;
    r.integer("seqlen", row.seqlen);
    r.string("recommended", row.best >= 0 ? row.predictions[static_cast<std::size_t>(row.best)].candidate.name() : "");
    std::string strategies;
    for (std::size_t i = 0; i < row.predictions.size(); ++i)
      strategies += (i ? ", " : "") + prediction_json(row.predictions[i], static_cast<int>(i) == row.best);
    r.raw("strategies", "[" + strategies + "]");
    list += (list.empty() ? "" : ", ") + r.text();
  }
  j.raw("results", "[" + list + "]");
  return j.text();
}

}  // namespace burst::cli
