#include "burst/documents.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <numbers>
#include <random>

#include "burst/error.h"
#include "burst/layout.h"
#include "kernels/detail.h"

namespace burst::algo {
namespace {

// Distributions, with their documented parameters (burst/documents.h).
constexpr double kPretrainSigma = 1.2;
constexpr double kParetoAlpha = 1.3;
constexpr DocumentDistribution kDistributions[] = {
    {"pretrain", "median", 500, "lognormal, sigma 1.2 (mean ~2.05 L, 99th percentile ~16 L): web text's many short "
                                "documents and a long tail"},
    {"pareto", "minimum", 128, "Pareto, alpha 1.3 (median ~1.7 L, mean ~4.3 L): a heavier tail than pretrain"},
    {"uniform", "largest length", 2048, "integers uniform on [1, L]"},
    {"fixed", "length", 1024, "every document L tokens"},
};

// Parses all of `text` as an integer (from_chars refuses "", "+1", "1.5", "12abc", overflow).
bool parse_integer(std::string_view text, std::int64_t& value) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  return ec == std::errc() && end == text.data() + text.size();
}

std::string_view trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(" \t\r") - first + 1);
}

// Draws in [0, 1) from the top 53 bits: exact and the same on every machine.
double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }
// (0, 1]: safe under log and negative powers.
double uniform_open0(std::mt19937_64& rng) { return static_cast<double>((rng() >> 11) + 1) * 0x1.0p-53; }

// A standard normal by Box-Muller (the cosine half only, one draw per two uniforms).
double normal(std::mt19937_64& rng) {
  const double u1 = uniform_open0(rng), u2 = uniform01(rng);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

// x rounded to the nearest integer and clipped to [1, limit] (an infinite draw is the limit).
std::int64_t clip_length(double x, std::int64_t limit) {
  if (!(x < static_cast<double>(limit))) return limit;
  return std::max<std::int64_t>(1, std::llround(x));
}

}  // namespace

std::vector<std::int64_t> document_boundaries(std::span<const std::int64_t> lengths, std::string_view what) {
  BURST_CHECK(!lengths.empty(), what, ": expected at least one document length, got none");
  std::vector<std::int64_t> bounds{0};
  bounds.reserve(lengths.size() + 1);
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    BURST_CHECK(lengths[i] >= 1, what, ": expected every document length >= 1, got ", lengths[i], " at index ", i);
    // The kernels take at most 2^31 tokens; bounding the sum here keeps it far from overflow.
    BURST_CHECK(lengths[i] <= (std::int64_t{1} << 40) - bounds.back(), what,
                ": expected lengths summing to at most 2^40 tokens, got more by index ", i);
    bounds.push_back(bounds.back() + lengths[i]);
  }
  return bounds;
}

std::vector<std::int64_t> document_lengths(std::span<const std::int64_t> boundaries) {
  kernels::MaskSpec mask;
  mask.documents = boundaries;
  kernels::detail::check_documents(mask);
  std::vector<std::int64_t> lengths;
  for (std::size_t i = 1; i < boundaries.size(); ++i) lengths.push_back(boundaries[i] - boundaries[i - 1]);
  return lengths;
}

std::vector<std::int64_t> parse_document_lengths(std::string_view text, std::string_view what) {
  std::vector<std::int64_t> lengths;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string_view item = text.substr(start, comma - start);
    std::int64_t value = 0;
    BURST_CHECK(parse_integer(item, value) && value >= 1, what,
                ": expected positive integers separated by commas, got '", item, "' at item ", lengths.size() + 1);
    lengths.push_back(value);
    start = comma + 1;
  }
  return lengths;
}

std::vector<std::int64_t> read_document_lengths(const std::string& path, std::string_view what) {
  std::ifstream in(path);
  BURST_CHECK(in.is_open(), what, ": cannot open '", path, "' (expected a text file of document lengths)");
  std::vector<std::int64_t> lengths;
  std::string line;
  for (std::int64_t number = 1; std::getline(in, line); ++number) {
    const std::string_view content = trim(std::string_view(line).substr(0, line.find('#')));
    if (content.empty()) continue;
    std::int64_t value = 0;
    BURST_CHECK(parse_integer(content, value) && value >= 1, what, ": ", path, " line ", number,
                ": expected one positive integer document length, got '", content, "'");
    lengths.push_back(value);
  }
  BURST_CHECK(!in.bad(), what, ": cannot read '", path, "'");
  BURST_CHECK(!lengths.empty(), what, ": ", path, ": expected at least one document length, got none");
  return lengths;
}

std::span<const DocumentDistribution> document_distributions() { return kDistributions; }

std::vector<std::int64_t> draw_document_lengths(std::string_view spec, std::int64_t total_tokens, std::uint64_t seed,
                                                std::string_view what) {
  BURST_CHECK(total_tokens >= 1, what, ": expected a sequence of at least one token, got ", total_tokens);
  const std::string_view name = spec.substr(0, spec.find(':'));
  const DocumentDistribution* law = nullptr;
  std::string names;
  for (const DocumentDistribution& d : kDistributions) {
    if (d.name == name) law = &d;
    names += (names.empty() ? "" : ", ") + std::string(d.name);
  }
  BURST_CHECK(law != nullptr, what, ": expected one of ", names, " (optionally NAME:L), got '", spec, "'");
  std::int64_t length = law->length;
  if (name.size() < spec.size()) {
    const std::string_view text = spec.substr(name.size() + 1);
    BURST_CHECK(parse_integer(text, length) && length >= 1, what, ": expected ", name, ":L with L (the ",
                law->parameter, ") a positive integer, got '", spec, "'");
  }
  const auto l = static_cast<double>(length);
  std::mt19937_64 rng(seed);
  // One document's length, before the cut to the tokens left.
  auto draw = [&]() -> std::int64_t {
    if (law->name == "pretrain") return clip_length(l * std::exp(kPretrainSigma * normal(rng)), total_tokens);
    if (law->name == "pareto") return clip_length(l * std::pow(uniform_open0(rng), -1.0 / kParetoAlpha), total_tokens);
    if (law->name == "uniform") return std::min(total_tokens, 1 + static_cast<std::int64_t>(uniform01(rng) * l));
    return std::min(total_tokens, length);
  };
  std::vector<std::int64_t> lengths;
  for (std::int64_t left = total_tokens; left > 0;) {
    const std::int64_t n = std::min(draw(), left);
    lengths.push_back(n);
    left -= n;
  }
  return lengths;
}

double document_work_ratio(const kernels::MaskSpec& mask, std::int64_t n) {
  if (mask.documents.empty() || n <= 0) return 1.0;
  kernels::detail::check_documents(mask);
  BURST_CHECK(mask.documents.back() == n, "documents: expected the last boundary to be the sequence length ", n,
              ", got ", mask.documents.back());
  kernels::MaskSpec whole = mask;
  whole.documents = {};
  // Queries in chunks, so a long sequence needs no list of all its positions.
  constexpr std::int64_t kChunk = std::int64_t{1} << 20;
  double packed = 0, single = 0;
  std::vector<std::int64_t> queries;
  for (std::int64_t first = 0; first < n; first += kChunk) {
    queries.resize(static_cast<std::size_t>(std::min(kChunk, n - first)));
    for (std::size_t i = 0; i < queries.size(); ++i) queries[i] = first + static_cast<std::int64_t>(i);
    packed += visible_pairs(queries, n, mask);
    single += visible_pairs(queries, n, whole);
  }
  return single > 0 ? packed / single : 0.0;
}

}  // namespace burst::algo
