// `burst plan`'s output: the tables on stdout (a header, one table per sequence length, the
// paper's comparison, what would fit) and the one JSON object of --json. The predictions are
// the library's (burst/plan.h).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "burst/plan.h"

namespace burst::cli {

// x in printf format f ("%.4g").
std::string fmt(const char* f, double x);

// The cluster, rates, links, model and workload the tables are for.
void print_header(std::ostream& os, const plan::Cluster& c, const plan::ModelShape& m, const plan::Workload& w);
// One sequence length: every strategy's figures, `OOM` or the reason it cannot run, and the
// recommendation with the runner-up.
void print_row(std::ostream& os, const plan::Row& row);
// The `n` fastest choices of a row that run and fit, fastest first: strategy (double ring,
// Ulysses degree), predicted time and memory per rank.
void print_top(std::ostream& os, const plan::Row& row, int n);
// For a length no strategy fits in memory: the longest length that fits on these ranks, and
// how many ranks (whole nodes more) this length needs.
std::string what_would_fit(const plan::Cluster& c, const plan::ModelShape& m, const plan::Workload& w,
                           std::int64_t seqlen, const std::vector<plan::Candidate>& choices);

// The paper's table (first-token latency of LLaMA-2 7b on 8 x A100 PCIe): its lengths, and the
// predictions next to the published seconds.
extern const std::vector<std::int64_t> kPaperSeqlens;
void print_paper(std::ostream& os, const plan::Cluster& c, const plan::ModelShape& m, const plan::Workload& base);

// Every figure as one JSON object (--json).
std::string plan_json(const plan::Cluster& c, const plan::ModelShape& m, const plan::Workload& w,
                      const std::vector<plan::Row>& rows);

}  // namespace burst::cli
