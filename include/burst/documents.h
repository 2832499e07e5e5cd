// Packed documents (kernels::MaskSpec::documents): document lengths and their boundaries,
// lengths read from text, and named length distributions drawn from a seed, so benchmarks and
// tests can pack a sequence the way training pipelines do and reproduce it on any machine.
//
// Distributions (draw_document_lengths). Documents are drawn one after another until they fill
// the sequence; the last one is cut to the tokens left, so the lengths sum exactly to it. Each
// has one length parameter L, replaced by writing "NAME:L" ("pretrain:2000", "fixed:4096"):
//   pretrain  lognormal with median L = 500 tokens and sigma 1.2 (log-space standard
//             deviation): mean ~1,030, 90th percentile ~2,330, 99th ~8,150 tokens; each length
//             rounded and clipped to [1, sequence length]. Web-text corpora (C4, RefinedWeb,
//             FineWeb) hold mostly documents of a few hundred tokens, while books, papers and
//             code files make a tail reaching tens of thousands: a long sequence then packs
//             many short documents and a few long ones, and the long ones hold most of the
//             work (work grows as length^2). Round numbers with that shape, not a fit to one
//             corpus.
//   pareto    Pareto with minimum L = 128 tokens and tail index alpha 1.3: median ~218, mean
//             ~555, infinite variance; a heavier tail than pretrain's, where one document can
//             take most of the sequence.
//   uniform   integers uniform on [1, L], L = 2048 (mean ~1,024): no tail.
//   fixed     every document L = 1024 tokens: the regular case.
// The draws use std::mt19937_64 (fixed by the C++ standard) with this library's own
// transforms (uniform doubles from the top 53 bits, Box-Muller, inverse CDFs) instead of
// std:: distributions, whose output differs between standard libraries: a seed gives the
// same lengths everywhere (a last-bit difference in a C library's log, exp, pow or cos could
// move a length by one only where a draw falls within that bit of a rounding boundary).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "burst/kernels.h"

namespace burst::algo {

// Boundaries 0 = c_0 < c_1 < ... < c_D = L_1 + ... + L_D of documents of `lengths` laid back
// to back (flash-attn's cu_seqlens; MaskSpec::documents). Throws burst::Error naming `what`
// when there is no length or a length is < 1.
std::vector<std::int64_t> document_boundaries(std::span<const std::int64_t> lengths,
                                              std::string_view what = "lengths");

// Lengths c_i - c_{i-1} of the documents of `boundaries` (checked as the kernels check them).
std::vector<std::int64_t> document_lengths(std::span<const std::int64_t> boundaries);

// Parses "L1,L2,...": positive integers separated by commas. Throws naming `what`, with the
// item at fault, otherwise.
std::vector<std::int64_t> parse_document_lengths(std::string_view text, std::string_view what = "lengths");

// Reads lengths from a text file: one positive integer per line; blank lines, and everything
// from a '#' to the end of a line, are ignored. Throws naming `what`, the file and the line.
std::vector<std::int64_t> read_document_lengths(const std::string& path, std::string_view what = "documents file");

// A named length distribution, for help texts and listings.
struct DocumentDistribution {
  std::string_view name;       // "pretrain"
  std::string_view parameter;  // what L is: "median"
  std::int64_t length = 0;     // L's default
  std::string_view summary;    // one line: the law and its other parameters
};
// Every distribution: pretrain, pareto, uniform, fixed.
std::span<const DocumentDistribution> document_distributions();

// Lengths summing exactly to `total_tokens` (>= 1) drawn from the distribution `spec` ("NAME"
// or "NAME:L", L a positive integer), the same for the same seed on every machine. Throws
// naming `what` and listing the names for an unknown one.
std::vector<std::int64_t> draw_document_lengths(std::string_view spec, std::int64_t total_tokens, std::uint64_t seed,
                                                std::string_view what = "distribution");

// The work of a packed sequence of n tokens relative to the same mask over one document: the
// visible (query, key) pairs of queries 0..n-1 with mask.documents over those without
// (visible_pairs). For a causal mask without window, sum_i L_i (L_i + 1) / (n (n + 1)) (the
// field notes' sum of L_i^2 against N^2); 1 without documents, 0 when the mask sees nothing.
double document_work_ratio(const kernels::MaskSpec& mask, std::int64_t n);

}  // namespace burst::algo
