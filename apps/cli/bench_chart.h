// The charts of `burst bench`: time and bytes per rank against sequence length, drawn as SVG.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace burst::cli {

// One measured (or skipped) point of the sweep.
struct Point {
  std::string strategy, mask, skipped;
  int ranks = 0;
  std::int64_t seqlen = 0, kv_heads = 0;
  double forward_s = 0, backward_s = 0, forward_bytes = 0, backward_bytes = 0;
  double exposed_forward = 0, exposed_backward = 0, memory_mb = 0, error = 0;
};

// One chart: a log-log plot per panel (time, bytes), one line per strategy.
std::string svg_text(const std::string& title, const std::vector<Point>& points,
               const std::vector<std::string>& strategies);

}  // namespace burst::cli
