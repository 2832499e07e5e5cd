// The files of `burst bench`: bench.json and bench.csv from the sweep's rows.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench_chart.h"
#include "burst/dtype.h"
#include "distributed.h"

namespace burst::cli {

// One point of the sweep: the chart's figures, and the layout's and the documents'.
struct BenchRow {
  Point point;
  std::string layout, documents;  // documents: "none" or the distribution
  std::int64_t document_count = 0;
  double work_ratio = 1;  // visible pairs against the same mask over one document
  const DistributedFigures* figures() const { return ran ? &fig : nullptr; }
  bool ran = false;
  DistributedFigures fig;
};

// What bench.json's header records of the sweep.
struct BenchSettings {
  std::int64_t heads = 0, head_dim = 0, batch = 0;
  DType dtype = DType::kF32;
  std::vector<std::string> layouts, doc_dists;
  double link_gbps = 0;
  int repeat = 1;
};

// bench.json: the settings and one object per row (a skipped row names why).
std::string bench_json(const BenchSettings& settings, const std::vector<BenchRow>& rows);
// bench.csv: one line per row, RFC 4180 quoting, integers exact. The columns of the layouts'
// and documents' sweep follow the original ones, so readers by position keep working.
std::string bench_csv(const std::vector<BenchRow>& rows);

}  // namespace burst::cli
