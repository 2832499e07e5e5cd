#include "bench_files.h"

#include <algorithm>
#include <initializer_list>
#include <sstream>

#include "block_run.h"
#include "json.h"
#include <limits>

namespace burst::cli {
namespace {

// One CSV field as RFC 4180 wants it: quoted when it holds a comma, a quote or a line break,
// its quotes doubled, so a skip reason reads back whole.
std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// The least and most work of a row's ranks (0, 0 when it did not run).
std::pair<double, double> work_range(const DistributedFigures* f) {
  if (f == nullptr || f->work_pairs_by_rank.empty()) return {0, 0};
  const auto [lo, hi] = std::minmax_element(f->work_pairs_by_rank.begin(), f->work_pairs_by_rank.end());
  return {*lo, *hi};
}

}  // namespace

std::string bench_json(const BenchSettings& s, const std::vector<BenchRow>& rows) {
  std::ostringstream json;
  std::string layouts, doc_dists;
  for (const std::string& l : s.layouts) layouts += (layouts.empty() ? "" : ",") + l;
  for (const std::string& d : s.doc_dists) doc_dists += (doc_dists.empty() ? "" : ", ") + JsonObject::quote(d);
  json << "{\"heads\": " << s.heads << ", \"head_dim\": " << s.head_dim << ", \"batch\": " << s.batch
       << ", \"dtype\": " << JsonObject::quote(std::string(dtype_name(s.dtype))) << ", \"layout\": " << JsonObject::quote(layouts)
       << ", \"doc_dists\": [" << doc_dists << "]"
       << ", \"link_gbps\": " << format_number(s.link_gbps) << ", \"repeat\": " << s.repeat;
  if (s.block_layers > 0) json << ", \"block\": {\"layers\": " << s.block_layers << ", \"mlp_dim\": " << s.mlp_dim << "}";
  json << ", \"points\": [";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const BenchRow& row = rows[i];
    const Point& p = row.point;
    const DistributedFigures* f = row.figures();
    const auto [work_min, work_max] = work_range(f);
    JsonObject o;
    o.string("strategy", p.strategy);
    o.integer("ranks", p.ranks);
    o.string("mask", p.mask);
    o.integer("kv_heads", p.kv_heads);
    o.integer("seqlen", p.seqlen);
    o.string("layout", row.layout);
    o.string("documents", row.documents);
    o.integer("document_count", row.document_count);
    o.number("work_ratio", row.work_ratio);
    if (f != nullptr) {
      o.number("forward_seconds", p.forward_s);
      o.number("backward_seconds", p.backward_s);
      o.number("forward_bytes_per_rank", p.forward_bytes);
      o.number("backward_bytes_per_rank", p.backward_bytes);
      o.number("exposed_forward_seconds", p.exposed_forward);
      o.number("exposed_backward_seconds", p.exposed_backward);
      o.number("memory_estimate_mb", p.memory_mb);
      o.number("o_error", p.error);
      o.integer("forward_steps_computed", f->forward_steps_computed);
      o.integer("forward_steps_skipped", f->forward_steps_skipped);
      o.integer("backward_steps_computed", f->backward_steps_computed);
      o.integer("backward_steps_skipped", f->backward_steps_skipped);
      o.number("forward_bytes_saved_per_rank", f->forward_bytes_saved);
      o.number("backward_bytes_saved_per_rank", f->backward_bytes_saved);
      o.number("work_pairs_min", work_min);
      o.number("work_pairs_max", work_max);
      o.number("forward_compute_min_seconds", f->forward_compute_min);
      o.number("forward_compute_max_seconds", f->forward_compute_max);
      o.number("backward_compute_min_seconds", f->backward_compute_min);
      o.number("backward_compute_max_seconds", f->backward_compute_max);
    } else {
      o.string("skipped", p.skipped);
    }
    json << (i ? ", " : "") << o.text();
  }
  json << "]}\n";
  return json.str();
}

std::string bench_csv(const std::vector<BenchRow>& rows) {
  std::ostringstream csv;
  csv << "strategy,ranks,mask,kv_heads,seqlen,forward_s,backward_s,forward_bytes_per_rank,backward_bytes_per_rank,"
         "exposed_forward_s,exposed_backward_s,memory_estimate_mb,o_error,skipped,layout,documents,document_count,"
         "work_ratio,forward_steps_computed,forward_steps_skipped,backward_steps_computed,backward_steps_skipped,"
         "forward_bytes_saved_per_rank,backward_bytes_saved_per_rank,work_pairs_min,work_pairs_max,"
         "forward_compute_min_s,forward_compute_max_s,backward_compute_min_s,backward_compute_max_s\n";
  for (const BenchRow& row : rows) {
    const Point& p = row.point;
    const DistributedFigures* f = row.figures();
    const auto [work_min, work_max] = work_range(f);
    csv << csv_field(p.strategy) << "," << p.ranks << "," << csv_field(p.mask) << "," << p.kv_heads << "," << p.seqlen;
    auto numbers = [&](std::initializer_list<double> values) {
      for (const double x : values) csv << "," << (f != nullptr ? format_number(x) : "");
    };
    numbers({p.forward_s, p.backward_s, p.forward_bytes, p.backward_bytes, p.exposed_forward, p.exposed_backward,
             p.memory_mb, p.error});
    csv << "," << csv_field(p.skipped) << "," << csv_field(row.layout) << "," << csv_field(row.documents) << ","
        << row.document_count << "," << format_number(row.work_ratio);
    if (f != nullptr) {
      numbers({static_cast<double>(f->forward_steps_computed), static_cast<double>(f->forward_steps_skipped),
               static_cast<double>(f->backward_steps_computed), static_cast<double>(f->backward_steps_skipped),
               f->forward_bytes_saved, f->backward_bytes_saved, work_min, work_max, f->forward_compute_min,
               f->forward_compute_max, f->backward_compute_min, f->backward_compute_max});
    } else {
      csv << std::string(12, ',');  // the twelve figures above, empty
    }
    csv << "\n";
  }
  return csv.str();
}

}  // namespace burst::cli

namespace burst::cli {

bool run_block_point(const RunArgs& a, const MemoryEstimate& estimate, BenchRow& row) {
  const BlockRun run = execute_block(a, estimate);
  if (!run.root) return false;
  const BlockReport& r = run.report;
  Point& p = row.point;
  p.forward_s = r.forward.seconds;
  p.backward_s = r.backward.seconds;
  p.forward_bytes = r.forward.bytes.total();
  p.backward_bytes = r.backward.bytes.total();
  p.exposed_forward = r.forward.exposed;
  p.exposed_backward = r.backward.exposed;
  p.error = r.verified ? r.y_error : 0;
  // A byte count off its formula fails the sweep as an error over tolerance does.
  if (!r.byte_mismatches.empty()) p.error = std::numeric_limits<double>::infinity();
  row.ran = true;
  return true;
}

}  // namespace burst::cli
