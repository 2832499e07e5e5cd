#include "block_report.h"

#include <cstdio>
#include <numeric>

#include "json.h"
#include "kernels/blas.h"

namespace burst::cli {
namespace {

std::string mb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f MB", bytes / 1e6);
  return buf;
}

std::string fixed2(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", x);
  return buf;
}

double sum(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0); }

void print_bytes(std::ostream& os, const char* name, const BlockBytes& b, bool backward) {
  os << "  " << name << ": attention core " << mb(b.core) << " (formula " << mb(b.core_formula);
  if (b.core_spared > 0) os << ", of which spared by the mask " << mb(b.core_spared);
  os << "), layer collectives " << mb(b.layer) << " (formula " << mb(b.layer_formula) << "), MLP collectives "
     << mb(b.mlp) << " (formula " << mb(b.mlp_formula) << ")";
  if (backward)
    os << ", weight-gradient all-reduce " << mb(b.grads) << " (formula " << mb(b.grads_formula) << ")";
  os << "; total " << mb(b.total()) << ", activations " << mb(b.activations()) << "\n";
}

std::string list(const std::vector<double>& values) {
  std::string text;
  for (const double x : values) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", x);
    if (!text.empty()) text += ", ";
    text += buf;
  }
  return "[" + text + "]";
}

std::string pass_json(const BlockPassFigures& f) {
  JsonObject o;
  o.number("seconds", f.seconds);
  o.number("attention_seconds", f.attention);
  o.number("projection_seconds", f.projections);
  o.number("mlp_seconds", f.mlp);
  o.number("norm_seconds", f.norms);
  o.number("collective_seconds", f.collectives);
  o.number("exposed_seconds", f.exposed);
  const BlockBytes& b = f.bytes;
  o.number("attention_bytes_sent_per_rank", b.core);
  o.number("attention_bytes_spared_per_rank", b.core_spared);
  o.number("attention_bytes_formula", b.core_formula);
  o.number("layer_bytes_sent_per_rank", b.layer);
  o.number("layer_bytes_formula", b.layer_formula);
  o.number("mlp_bytes_sent_per_rank", b.mlp);
  o.number("mlp_bytes_formula", b.mlp_formula);
  o.number("grad_bytes_sent_per_rank", b.grads);
  o.number("grad_bytes_formula", b.grads_formula);
  o.number("activation_bytes_sent_per_rank", b.activations());
  o.number("bytes_sent_per_rank", b.total());
  o.raw("intra_node_bytes_by_rank", list(f.intra_node_bytes));
  o.raw("inter_node_bytes_by_rank", list(f.inter_node_bytes));
  return o.text();
}

}  // namespace

void print_block(std::ostream& os, const RunArgs& args, const BlockProblem& p, const BlockReport& r) {
  const algo::LayerShape& a = p.shape.attention;
  os << "block     b " << p.batch << ", seqlen " << p.seqlen << ", D " << a.model_dim << ", heads " << a.heads << "/"
     << a.kv_heads << ", head_dim " << a.head_dim << ", mlp dim " << p.shape.mlp_dim << ", layers " << p.layers << ", "
     << dtype_name(args.dtype) << " attention core, mask " << (args.causal ? "causal" : "none")
     << (args.has_window() ? " + window" : "") << ", rope base " << args.rope_base << ", "
     << (p.from_files ? "npy" : "random (seed " + std::to_string(args.seed) + ")") << "\n";
  os << "strategy  " << r.strategy << ": " << r.ranks << " ranks (" << r.backend << "), layout " << r.layout
     << ", threads per rank " << r.threads << ", blas " << kernels::blas_info().core << ", median of "
     << args.repeat << "\n\n";
  char line[512];
  std::snprintf(line, sizeof line, "%-9s %10s %10s %12s %10s %10s %12s %10s\n", "pass", "seconds", "attention",
                "projections", "mlp", "norms", "collectives", "exposed");
  os << line;
  auto row = [&](const char* name, const BlockPassFigures& f) {
    std::snprintf(line, sizeof line, "%-9s %10.4f %10.4f %12.4f %10.4f %10.4f %12.4f %10.4f\n", name, f.seconds,
                  f.attention, f.projections, f.mlp, f.norms, f.collectives, f.exposed);
    os << line;
  };
  row("forward", r.forward);
  if (r.has_backward) row("backward", r.backward);
  os << "\nsent per rank (mean over ranks, all " << p.layers << " layers)\n";
  print_bytes(os, "forward ", r.forward.bytes, false);
  if (r.has_backward) print_bytes(os, "backward", r.backward.bytes, true);
  if (r.byte_mismatches.empty()) {
    os << "bytes     every rank's bytes equal their formulas (core, layer, MLP, weight gradients)\n";
  } else {
    os << "bytes     MISMATCH against the formulas:\n";
    for (const std::string& m : r.byte_mismatches) os << "          " << m << "\n";
  }
  const double inter = sum(r.forward.inter_node_bytes) + sum(r.backward.inter_node_bytes);
  const double intra = sum(r.forward.intra_node_bytes) + sum(r.backward.intra_node_bytes);
  os << "links     all ranks, both passes: inter-node " << mb(inter) << ", intra-node " << mb(intra) << "\n";
  os << "memory    per rank: parameters " << mb(r.param_mb * 1e6) << ", saved activations " << mb(r.saved_mb * 1e6)
     << " (block_memory " << mb(r.saved_formula_mb * 1e6) << "), block_memory peak " << mb(r.rank_estimate_mb * 1e6)
     << "; peak Burst allocations " << mb(r.peak_alloc_mb * 1e6) << " per " << r.memory_scope << ", estimated "
     << mb(r.estimate_mb * 1e6) << " (measured / estimated " << fixed2(r.peak_alloc_mb / r.estimate_mb) << ")\n";
  if (r.verified) {
    os << "\nverified  every row against the double block reference: y " << std::scientific;
    os.precision(2);
    os << r.y_error;
    if (r.backward_verified) os << "; dx " << r.dx_error << ", weight gradients " << r.dw_error;
    os << std::defaultfloat;
  } else {
    os << "\nverified  no: " << r.not_verified;
  }
  os << "\nresult    " << (r.passed() ? "ok" : "FAILED") << " (tolerance " << r.tolerance
     << (r.byte_mismatches.empty() ? "" : "; bytes differ from their formulas") << ")\n";
}

std::string block_json(const RunArgs& args, const BlockProblem& p, const BlockReport& r) {
  const algo::LayerShape& a = p.shape.attention;
  JsonObject j;
  j.boolean("block", true);
  j.integer("layers", p.layers);
  j.integer("batch", p.batch);
  j.integer("seqlen", p.seqlen);
  j.integer("model_dim", a.model_dim);
  j.integer("heads", a.heads);
  j.integer("kv_heads", a.kv_heads);
  j.integer("head_dim", a.head_dim);
  j.integer("mlp_dim", p.shape.mlp_dim);
  j.string("dtype", std::string(dtype_name(args.dtype)));
  j.boolean("causal", args.causal);
  j.number("rope_base", args.rope_base);
  j.string("strategy", r.strategy);
  j.string("backend", r.backend);
  j.integer("ranks", r.ranks);
  j.integer("threads_per_rank", r.threads);
  j.string("layout", r.layout);
  j.integer("repeat", args.repeat);
  std::vector<double> nodes(r.node_of_rank.begin(), r.node_of_rank.end());
  j.raw("node_of_rank", list(nodes));
  j.raw("forward", pass_json(r.forward));
  j.raw("backward", r.has_backward ? pass_json(r.backward) : "null");
  j.boolean("bytes_match", r.byte_mismatches.empty());
  std::string mismatches;
  for (const std::string& m : r.byte_mismatches) mismatches += (mismatches.empty() ? "" : ", ") + JsonObject::quote(m);
  j.raw("byte_mismatches", "[" + mismatches + "]");
  j.number("parameters_mb_per_rank", r.param_mb);
  j.number("saved_activations_mb_per_rank", r.saved_mb);
  j.number("saved_activations_formula_mb", r.saved_formula_mb);
  j.number("block_memory_mb_per_rank", r.rank_estimate_mb);
  j.number("peak_alloc_mb", r.peak_alloc_mb);
  j.number("memory_estimate_mb", r.estimate_mb);
  j.string("memory_scope", r.memory_scope);
  j.boolean("verified", r.verified);
  j.boolean("backward_verified", r.backward_verified);
  j.string("not_verified", r.not_verified);
  j.optional("y_error", r.verified ? std::optional<double>(r.y_error) : std::nullopt);
  j.optional("dx_error", r.backward_verified ? std::optional<double>(r.dx_error) : std::nullopt);
  j.optional("weight_grad_error", r.backward_verified ? std::optional<double>(r.dw_error) : std::nullopt);
  j.number("tolerance", r.tolerance);
  j.boolean("passed", r.passed());
  return j.text();
}

}  // namespace burst::cli
