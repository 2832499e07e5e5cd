#include "report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "burst/error.h"
#include "json.h"

namespace burst::cli {
namespace {

std::string format(const char* fmt, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, x);
  return buf;
}

std::string mask_text(const Report& r) {
  std::ostringstream os;
  if (r.causal) os << "causal";
  if (r.causal && r.window) os << "+";
  if (r.window) os << "window " << r.window->first << "," << r.window->second;
  if (r.documents > 0) os << (r.causal || r.window ? "+" : "") << "documents";
  return r.causal || r.window || r.documents > 0 ? os.str() : "none";
}

// max / min of positive figures ("-" when the smallest is 0).
std::string spread(double lo, double hi) { return lo > 0 ? format("%.2f", hi / lo) : std::string("-"); }

std::string gflops(double flops, double seconds) {
  return seconds > 0.0 ? format("%.2f", flops / seconds * 1e-9) : "-";
}

}  // namespace

double Report::max_error() const {
  double m = 0.0;
  for (const TensorError& e : errors) m = std::isnan(e.error) || e.error > m ? e.error : m;
  return m;
}

std::vector<TensorError> Report::failures() const {
  std::vector<TensorError> out;
  for (const TensorError& e : errors) {
    const double limit = e.name == "o" ? tolerance : gradient_tolerance;
    if (!(e.error <= limit)) out.push_back(e);  // a NaN error fails too
  }
  if (!(lse_error <= tolerance)) out.push_back({"lse", lse_error});
  return out;
}

void print_table(std::ostream& os, const Report& r) {
  os << "problem   b " << r.batch << ", seqlen_q " << r.seqlen_q << ", seqlen_k " << r.seqlen_k
     << ", heads " << r.heads << "/" << r.kv_heads << ", head_dim " << r.head_dim << ", "
     << r.dtype << ", mask " << mask_text(r) << ", scale " << format("%.4g", r.scale) << ", "
     << r.input;
  if (r.input == "random") os << " (seed " << r.seed << ")";
  if (r.documents > 0) {
    os << "\ndocuments " << r.documents << " (" << r.documents_source << "), longest " << r.longest_document
       << " tokens; work " << format("%.4g", r.document_work_ratio) << " of the same mask over one document";
  }
  os << "\nmachine   threads " << r.threads << ", isa " << r.isa << ", blas " << r.blas_core
     << ", median of " << r.repeat << "\n\n";

  std::string errors_fwd, errors_bwd;
  for (const TensorError& e : r.errors) {
    std::string& into = e.name == "o" ? errors_fwd : errors_bwd;
    into += (into.empty() ? "" : "  ") + e.name + " " + format("%.2e", e.error);
  }
  errors_fwd += "  lse " + format("%.2e", r.lse_error);
  char line[256];
  std::snprintf(line, sizeof line, "%-10s %12s %12s   %s\n", "pass", "seconds", "GFLOP/s",
                "relative error");
  os << line;
  std::snprintf(line, sizeof line, "%-10s %12.6f %12s   %s\n", "forward", r.forward_seconds,
                gflops(r.forward_flops, r.forward_seconds).c_str(), errors_fwd.c_str());
  os << line;
  if (r.backward_seconds) {
    if (!r.backward_verified && !r.backward_sampled) errors_bwd = "gradients: not verified (too large)";
    std::snprintf(line, sizeof line, "%-10s %12.6f %12s   %s\n", "backward", *r.backward_seconds,
                  gflops(r.backward_flops(), *r.backward_seconds).c_str(), errors_bwd.c_str());
    os << line;
  }
  if (r.distributed) {
    const DistributedFigures& d = *r.distributed;
    auto mb = [](double bytes) { return format("%.2f MB", bytes / 1e6); };
    auto share = [](double part, double whole) { return whole > 0 ? format("%.1f%%", 100.0 * part / whole) : std::string("-"); };
    os << "\nstrategy  " << d.strategy << ": " << d.ranks << " ranks (" << d.backend << ") on " << d.nodes << (d.nodes == 1 ? " node" : " nodes")
       << (d.double_ring ? ", double ring" : "") << ", layout " << d.layout << ", threads per rank " << d.threads_per_rank;
    if (r.backward_seconds) os << ", backward scheme " << d.backward_scheme;
    os << "\nsent      forward " << mb(d.forward_bytes) << " per rank (formula " << mb(d.forward_bytes_formula)
       << ", not sent thanks to the mask " << mb(d.forward_bytes_saved) << ")";
    if (r.backward_seconds) {
      os << "; backward " << mb(d.backward_bytes) << " (formula " << mb(d.backward_bytes_formula);
      if (d.backward_bytes_saved > 0) os << ", not sent thanks to the mask " << mb(d.backward_bytes_saved);
      os << ")";
    }
    os << "\nsteps     forward " << d.forward_steps_computed << " computed, " << d.forward_steps_skipped
       << " skipped (all ranks)";
    if (r.backward_seconds) {
      os << "; backward " << d.backward_steps_computed << " computed, " << d.backward_steps_skipped << " skipped";
    }
    os << "\nexposed   communication: forward " << format("%.4f", d.forward_exposed) << " s ("
       << share(d.forward_exposed, r.forward_seconds) << ")";
    if (r.backward_seconds) {
      os << ", backward " << format("%.4f", d.backward_exposed) << " s (" << share(d.backward_exposed, *r.backward_seconds) << ")";
    }
    os << "\ncompute   per rank, forward " << format("%.4f", d.forward_compute_min) << " .. "
       << format("%.4f", d.forward_compute_max) << " s";
    if (r.backward_seconds) {
      os << ", backward " << format("%.4f", d.backward_compute_min) << " .. " << format("%.4f", d.backward_compute_max) << " s";
    }
    if (!d.work_pairs_by_rank.empty()) {
      const auto [lo, hi] = std::minmax_element(d.work_pairs_by_rank.begin(), d.work_pairs_by_rank.end());
      os << "\nbalance   work per rank " << format("%.4g", *lo) << " .. " << format("%.4g", *hi)
         << " visible pairs (max/min " << spread(*lo, *hi) << "); compute max/min forward "
         << spread(d.forward_compute_min, d.forward_compute_max);
      if (r.backward_seconds) os << ", backward " << spread(d.backward_compute_min, d.backward_compute_max);
    }
    os << "\n";
  }
  os << "memory    peak resident " << format("%.1f", r.peak_rss_mb) << " MB, Burst allocations "
     << format("%.1f", r.peak_alloc_mb) << " MB (per " << r.memory_scope << "); estimated "
     << format("%.1f", r.memory_estimate_mb) << " MB for this machine\n";
  if (r.emulated) {
    os << "\nemulated  compute: kernels waited for " << format("%.4g", r.emulated->first / 1e9) << " GFLOP/s forward, "
       << format("%.4g", r.emulated->second / 1e9)
       << " backward per rank (docs/emulation.md); results are not attention and were not verified\n";
    return;
  }
  os << "\nverified  " << r.verified_rows << " of " << r.seqlen_q
     << " query rows in every batch and head"
     << (r.backward_verified ? "; all gradients"
         : r.backward_sampled ? "; dq on those rows, dk and dv by their column-sum identities" : "")
     << "\n";
  std::string failed;
  for (const TensorError& e : r.failures()) failed += (failed.empty() ? "" : ", ") + e.name;
  os << "result    " << (failed.empty() ? "ok" : "FAILED (" + failed + ")") << ": max_error "
     << format("%.2e", r.max_error()) << (failed.empty() ? " <= " : ", tolerance ")
     << format("%.0e", r.tolerance)
     << (r.gradient_tolerance != r.tolerance && r.backward_seconds ? " (gradients " + format("%.0e", r.gradient_tolerance) + ")" : "")
     << "\n";
}

std::string report_json(const Report& r) {
  JsonObject j;
  j.integer("batch", r.batch);
  j.integer("seqlen_q", r.seqlen_q);
  j.integer("seqlen_k", r.seqlen_k);
  j.integer("heads", r.heads);
  j.integer("kv_heads", r.kv_heads);
  j.integer("head_dim", r.head_dim);
  j.string("dtype", r.dtype);
  j.boolean("causal", r.causal);
  j.raw("window", r.window ? "[" + std::to_string(r.window->first) + ", " +
                                 std::to_string(r.window->second) + "]"
                           : "null");
  if (r.documents > 0) {
    JsonObject docs;
    docs.integer("count", r.documents);
    docs.integer("longest", r.longest_document);
    docs.string("source", r.documents_source);
    docs.number("work_ratio", r.document_work_ratio);
    j.raw("documents", docs.text());
  } else {
    j.raw("documents", "null");
  }
  j.number("scale", r.scale);
  j.string("input", r.input);
  j.integer("seed", static_cast<std::int64_t>(r.seed));
  j.integer("threads", r.threads);
  j.string("isa", r.isa);
  j.string("blas_core", r.blas_core);
  j.integer("repeat", r.repeat);
  j.number("visible_fraction", r.visible_fraction);
  j.number("forward_seconds", r.forward_seconds);
  j.optional("backward_seconds", r.backward_seconds);
  j.number("forward_gflops", r.forward_flops / r.forward_seconds * 1e-9);
  std::optional<double> backward_gflops;
  if (r.backward_seconds) backward_gflops = r.backward_flops() / *r.backward_seconds * 1e-9;
  j.optional("backward_gflops", backward_gflops);
  if (r.emulated) {
    JsonObject e;
    e.number("forward_flops", r.emulated->first);
    e.number("backward_flops", r.emulated->second);
    j.raw("emulated_compute", e.text());
  } else {
    j.raw("emulated_compute", "null");
  }
  j.integer("verified_rows", r.verified_rows);
  j.boolean("backward_verified", r.backward_verified);
  j.boolean("backward_sampled", r.backward_sampled);
  std::string errors;
  for (const TensorError& e : r.errors) {
    errors += (errors.empty() ? "" : ", ") + JsonObject::quote(e.name) + ": " +
              (std::isfinite(e.error) ? format_number(e.error) : "null");
  }
  j.raw("errors", "{" + errors + "}");
  j.number("lse_error", r.lse_error);
  j.number("max_error", r.max_error());
  j.number("tolerance", r.tolerance);
  j.number("gradient_tolerance", r.gradient_tolerance);
  j.boolean("passed", r.failures().empty());
  j.string("strategy", r.distributed ? r.distributed->strategy : "local");
  j.number("peak_rss_mb", r.peak_rss_mb);
  j.number("peak_alloc_mb", r.peak_alloc_mb);
  j.number("memory_estimate_mb", r.memory_estimate_mb);
  j.string("memory_scope", r.memory_scope);
  if (r.distributed) {
    const DistributedFigures& d = *r.distributed;
    JsonObject o;
    o.string("backend", d.backend);
    o.integer("ranks", d.ranks);
    o.integer("threads_per_rank", d.threads_per_rank);
    o.string("layout", d.layout);
    o.integer("nodes", d.nodes);
    o.boolean("double_ring", d.double_ring);
    o.string("backward_scheme", d.backward_scheme);
    o.number("forward_bytes_sent_per_rank", d.forward_bytes);
    o.number("forward_bytes_formula", d.forward_bytes_formula);
    o.number("forward_bytes_saved_per_rank", d.forward_bytes_saved);
    o.number("backward_bytes_sent_per_rank", d.backward_bytes);
    o.number("backward_bytes_formula", d.backward_bytes_formula);
    o.number("backward_bytes_saved_per_rank", d.backward_bytes_saved);
    o.integer("forward_steps_computed", d.forward_steps_computed);
    o.integer("forward_steps_skipped", d.forward_steps_skipped);
    o.integer("backward_steps_computed", d.backward_steps_computed);
    o.integer("backward_steps_skipped", d.backward_steps_skipped);
    o.number("forward_exposed_seconds", d.forward_exposed);
    o.number("backward_exposed_seconds", d.backward_exposed);
    o.number("forward_compute_min_seconds", d.forward_compute_min);
    o.number("forward_compute_max_seconds", d.forward_compute_max);
    o.number("backward_compute_min_seconds", d.backward_compute_min);
    o.number("backward_compute_max_seconds", d.backward_compute_max);
    auto list = [](const auto& values) {
      std::string text;
      for (const auto x : values) text += (text.empty() ? "" : ", ") + format("%.17g", static_cast<double>(x));
      return "[" + text + "]";
    };
    o.raw("node_of_rank", list(d.node_of_rank));
    o.raw("work_pairs_by_rank", list(d.work_pairs_by_rank));
    o.raw("forward_compute_seconds_by_rank", list(d.forward_compute_by_rank));
    o.raw("backward_compute_seconds_by_rank", list(d.backward_compute_by_rank));
    for (int kind = 0; kind < 2; ++kind) {
      const std::string what = kind == 0 ? "bytes" : "point_to_point_bytes";
      o.raw(("forward_" + what + "_intra_node_by_rank").c_str(), list(d.forward_intra_node_bytes[kind]));
      o.raw(("forward_" + what + "_inter_node_by_rank").c_str(), list(d.forward_inter_node_bytes[kind]));
      o.raw(("backward_" + what + "_intra_node_by_rank").c_str(), list(d.backward_intra_node_bytes[kind]));
      o.raw(("backward_" + what + "_inter_node_by_rank").c_str(), list(d.backward_inter_node_bytes[kind]));
    }
    j.raw("distributed", o.text());
  } else {
    j.raw("distributed", "null");
  }
  return j.text();
}

}  // namespace burst::cli
