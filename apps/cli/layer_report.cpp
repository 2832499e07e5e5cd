#include "layer_report.h"

#include <cstdio>

#include "json.h"
#include "kernels/blas.h"

namespace burst::cli {
namespace {

std::string mb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f MB", bytes / 1e6);
  return buf;
}

}  // namespace

void print_layer(std::ostream& os, const RunArgs& args, const LayerProblem& p, const LayerReport& r) {
  char line[512];
  os << "layer     b " << p.batch << ", seqlen " << p.seqlen << ", D " << p.shape.model_dim << ", heads "
     << p.shape.heads << "/" << p.shape.kv_heads << ", head_dim " << p.shape.head_dim << ", "
     << dtype_name(args.dtype) << " attention core, mask " << (args.causal ? "causal" : "none")
     << (args.has_window() ? " + window" : "") << ", rope base " << args.rope_base << ", "
     << (p.from_files ? "npy" : "random (seed " + std::to_string(args.seed) + ")") << "\n";
  os << "strategy  " << r.strategy << ": " << r.ranks << " ranks (" << r.backend << "), layout " << r.layout
     << ", threads per rank " << r.threads << ", blas " << kernels::blas_info().core << ", median of "
     << args.repeat << "\n\n";
  std::snprintf(line, sizeof line, "%-9s %10s %10s %12s %12s %10s\n", "pass", "seconds", "attention",
                "projections", "collectives", "exposed");
  os << line;
  auto row = [&](const char* name, const PassFigures& f) {
    std::snprintf(line, sizeof line, "%-9s %10.4f %10.4f %12.4f %12.4f %10.4f\n", name, f.seconds, f.attention,
                  f.projections, f.collectives, f.exposed);
    os << line;
  };
  row("forward", r.forward);
  if (r.has_backward) row("backward", r.backward);
  os << "\nsent per rank (mean)\n";
  auto sent = [&](const char* name, const PassFigures& f) {
    os << "  " << name << ": attention core " << mb(f.core_bytes) << ", layer collectives " << mb(f.layer_bytes)
       << " (formula " << mb(f.layer_formula) << ")";
    if (f.grad_formula > 0 || f.grad_bytes > 0)
      os << ", weight-gradient all-reduce " << mb(f.grad_bytes) << " (formula " << mb(f.grad_formula) << ")";
    os << "; total " << mb(f.core_bytes + f.layer_bytes + f.grad_bytes) << "\n";
  };
  sent("forward ", r.forward);
  if (r.has_backward) sent("backward", r.backward);
  os << "memory    per rank: parameters " << mb(r.param_mb * 1e6) << ", saved activations " << mb(r.saved_mb * 1e6)
     << "; peak Burst allocations " << mb(r.peak_alloc_mb * 1e6) << " (per " << r.memory_scope << "), estimated "
     << mb(r.estimate_mb * 1e6) << " for this machine\n";
  os << "\nverified  y on " << r.verified_rows << " of " << p.seqlen << " rows: " << std::scientific;
  os.precision(2);
  os << r.y_error;
  if (r.backward_verified) {
    os << "; dx " << r.dx_error << ", weight gradients " << r.dw_error;
  } else if (r.has_backward) {
    os << "; gradients not verified (too large for the reference)";
  }
  os << std::defaultfloat << "\nresult    " << (r.passed() ? "ok" : "FAILED") << " (tolerance " << r.tolerance << ")\n";
}

std::string layer_json(const RunArgs& args, const LayerProblem& p, const LayerReport& r) {
  JsonObject j;
  j.boolean("layer", true);
  j.integer("batch", p.batch);
  j.integer("seqlen", p.seqlen);
  j.integer("model_dim", p.shape.model_dim);
  j.integer("heads", p.shape.heads);
  j.integer("kv_heads", p.shape.kv_heads);
  j.integer("head_dim", p.shape.head_dim);
  j.string("dtype", std::string(dtype_name(args.dtype)));
  j.boolean("causal", args.causal);
  j.number("rope_base", args.rope_base);
  j.string("strategy", r.strategy);
  j.string("backend", r.backend);
  j.integer("ranks", r.ranks);
  j.integer("threads_per_rank", r.threads);
  j.string("layout", r.layout);
  j.integer("repeat", args.repeat);
  auto list = [](const auto& values) {
    std::string text;
    for (const auto x : values) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.17g", static_cast<double>(x));
      text += (text.empty() ? "" : ", ") + std::string(buf);
    }
    return "[" + text + "]";
  };
  j.raw("node_of_rank", list(r.node_of_rank));
  auto pass = [&](const PassFigures& f) {
    JsonObject o;
    o.number("seconds", f.seconds);
    o.number("attention_seconds", f.attention);
    o.number("projection_seconds", f.projections);
    o.number("collective_seconds", f.collectives);
    o.number("exposed_seconds", f.exposed);
    o.number("attention_bytes_sent_per_rank", f.core_bytes);
    o.number("layer_bytes_sent_per_rank", f.layer_bytes);
    o.number("layer_bytes_formula", f.layer_formula);
    o.number("grad_bytes_sent_per_rank", f.grad_bytes);
    o.number("grad_bytes_formula", f.grad_formula);
    o.number("bytes_sent_per_rank", f.core_bytes + f.layer_bytes + f.grad_bytes);
    o.raw("intra_node_bytes_by_rank", list(f.intra_node_bytes));
    o.raw("inter_node_bytes_by_rank", list(f.inter_node_bytes));
    return o.text();
  };
  j.raw("forward", pass(r.forward));
  j.raw("backward", r.has_backward ? pass(r.backward) : "null");
  j.number("parameters_mb_per_rank", r.param_mb);
  j.number("saved_activations_mb_per_rank", r.saved_mb);
  j.number("peak_alloc_mb", r.peak_alloc_mb);
  j.number("memory_estimate_mb", r.estimate_mb);
  j.string("memory_scope", r.memory_scope);
  j.integer("verified_rows", r.verified_rows);
  j.boolean("backward_verified", r.backward_verified);
  j.number("y_error", r.y_error);
  j.optional("dx_error", r.backward_verified ? std::optional<double>(r.dx_error) : std::nullopt);
  j.optional("weight_grad_error", r.backward_verified ? std::optional<double>(r.dw_error) : std::nullopt);
  j.number("tolerance", r.tolerance);
  j.boolean("passed", r.passed());
  return j.text();
}


}  // namespace burst::cli
