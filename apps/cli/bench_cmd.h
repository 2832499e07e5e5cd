// `burst bench`: sweeps strategies x sequence lengths x rank counts x masks x kv-head counts
// over the attention core (or, with --block, transformer blocks), and writes every run's figures as JSON and CSV and one SVG chart
// per (ranks, mask, kv heads) group: time and bytes sent per rank against sequence length.
#pragma once

#include <span>

namespace burst::cli {

// args: everything after "bench". Returns the exit status.
int run_bench(std::span<char* const> args);

}  // namespace burst::cli
