// The packed-document flags of `burst run` and `burst bench`: the distribution names, where a
// run's documents come from, and the distributions' part of the usage text.
#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "args.h"
#include "burst/documents.h"
#include "burst/error.h"
#include "flags.h"

namespace burst::cli {

std::string parse_doc_dist(std::string_view flag, std::string_view text) {
  const std::string_view name = text.substr(0, text.find(':'));
  std::vector<std::string_view> names;
  std::string list;
  for (const algo::DocumentDistribution& d : algo::document_distributions()) {
    names.push_back(d.name);
    if (!list.empty()) list += ", ";
    list += d.name;
  }
  if (std::find(names.begin(), names.end(), name) == names.end()) {
    const std::string guess = closest(name, names);
    fail(flag, ": expected one of ", list, " (optionally NAME:L), got '", text, "'",
         guess.empty() ? "" : "; did you mean " + guess + "?");
  }
  (void)algo::draw_document_lengths(text, 1, 0, flag);  // checks L
  return std::string(text);
}

std::string documents_setting(const RunArgs& a) {
  if (!a.doc_lens.empty()) return "--doc-lens (" + std::to_string(a.doc_lens.size()) + " lengths)";
  if (!a.doc_lens_path.empty()) return "--doc-lens-from " + a.doc_lens_path;
  if (!a.doc_dist.empty()) return "--doc-dist " + a.doc_dist;
  return "none";
}

std::string documents_usage() {
  std::string out = "packed documents (--doc-dist NAME[:L]; lengths drawn one after another, the last cut to fit):\n";
  for (const algo::DocumentDistribution& d : algo::document_distributions()) {
    std::string name = "  ";
    name += d.name;
    name.resize(12, ' ');
    std::string text(d.parameter);
    text += " L = " + std::to_string(d.length) + "; ";
    text += d.summary;
    out += name + wrap(text, 100, 12, 12) + "\n";
  }
  return out;
}

}  // namespace burst::cli
