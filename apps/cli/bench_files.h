// The files of `burst bench`: bench.json and bench.csv from the sweep's rows.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench_chart.h"
#include "burst/dtype.h"
#include "args.h"
#include "distributed.h"
#include "memory.h"

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
  int block_layers = 0;       // --block: blocks per point (0: the attention core)
  std::int64_t mlp_dim = 0;   // --block: F
};

// A point of `burst bench --block`: runs the blocks `a` describes (estimate: its memory
// estimate) and fills row's figures; false on MPI ranks other than 0 (rank 0 reports). The
// bytes are per rank, both passes' totals; error is Y's against the double reference when the
// problem is small enough to check (else 0).
bool run_block_point(const RunArgs& a, const MemoryEstimate& estimate, BenchRow& row);

// bench.json: the settings and one object per row (a skipped row names why).
std::string bench_json(const BenchSettings& settings, const std::vector<BenchRow>& rows);
// bench.csv: one line per row, RFC 4180 quoting, integers exact. The columns of the layouts'
// and documents' sweep follow the original ones, so readers by position keep working.
std::string bench_csv(const std::vector<BenchRow>& rows);

}  // namespace burst::cli
