#include "memory.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace burst::cli {
namespace {

std::string gb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, bytes >= 1e9 ? "%.2f GB" : "%.0f MB", bytes >= 1e9 ? bytes / 1e9 : bytes / 1e6);
  return buf;
}

}  // namespace

std::string MemoryEstimate::summary() const {
  std::ostringstream os;
  os << "per rank " << gb(per_rank) << " (";
  for (std::size_t i = 0; i < parts.size(); ++i) os << (i ? ", " : "") << parts[i].first << " " << gb(parts[i].second);
  os << "), per process " << gb(per_process) << ", rank 0's results " << gb(root_extra);
  return os.str();
}

MemoryEstimate estimate_memory(const RunArgs& args, int ranks, int ranks_here, int processes_here) {
  const auto b = static_cast<double>(args.batch), big_n = static_cast<double>(args.seqlen);
  const auto h = static_cast<double>(args.heads), g = static_cast<double>(args.kv_heads.value_or(args.heads));
  const auto d = static_cast<double>(args.head_dim), e = static_cast<double>(dtype_size(args.dtype));
  const std::string& s = args.strategy;
  const double p = std::max(1, ranks), n = std::ceil(big_n / p);
  const bool bwd = args.backward, tp = s == "tp-v1" || s == "tp-v3";
  MemoryEstimate m;
  auto part = [&](const char* name, double bytes) {
    if (bytes > 0) m.parts.emplace_back(name, bytes);
    m.per_rank += bytes;
  };
  if (!args.layer) {
    m.per_process = b * big_n * (h + 2 * g) * d * e + (bwd ? b * big_n * h * d * e : 0);
    m.root_extra = b * big_n * h * d * e + 4 * b * h * big_n + (bwd ? 4 * b * big_n * (h + 2 * g) * d : 0);
    if (s == "local") {
      // One rank over the whole sequence: the results above are its outputs.
      part("kernel workspace", args.threads * 2e6);
    } else {
      part("shards", b * n * ((bwd ? 2 * h : h) + 2 * g) * d * e + b * n * h * d * e + 4 * b * h * n +
                         (bwd ? 4 * b * n * (h + 2 * g) * d + 8 * b * h * n : 0));
      const double ring_fwd = 2 * b * n * 2 * g * d * e + 4 * b * n * h * d;
      const double ring_bwd = std::max(2 * (b * n * h * d * 2 * e + 8 * b * h * n) + 2 * 4 * b * n * h * d,
                                       2 * b * n * 2 * g * d * e + 2 * 4 * b * n * 2 * g * d);
      const double ring = std::max(ring_fwd, bwd ? ring_bwd : 0.0);
      if (s == "burst" || s == "ring") {
        part("ring buffers", ring);
      } else if (s == "allgather") {
        part("gathered K/V", b * big_n * 2 * g * d * e + (bwd ? 2 * 4 * b * big_n * 2 * g * d : 0));
      } else if (s == "ulysses") {
        const double heads = b * big_n * (h + 2 * g) / p * d;
        part("head shards", (heads * e + 4 * b * big_n * h / p * d) * (bwd ? 3 : 1.5));
      } else if (s == "ring-rsa") {
        part("score rows", 4 * b * h * n * big_n * (bwd ? 2 : 1));
        if (bwd) part("full-length dK, dV", 4 * b * big_n * 2 * g * d);
      } else if (s == "usp") {
        part("group head shards", b * n * (h + 2 * g) * d * (e + 4) * (bwd ? 2 : 1));
        part("ring buffers", ring);
      }
      part("kernel workspace", args.threads * 2e6);
    }
  } else {
    const double dim = static_cast<double>(args.model_dim.value_or(args.heads * args.head_dim));
    const double hr = tp ? h / p : h, gr = tp ? std::max(1.0, g / p) : g;
    const double rows = s == "tp-v1" ? big_n : s == "local" ? big_n : n;  // X and Y rows held
    const double tokens = tp || s == "local" ? big_n : n;                 // rows the heads cover
    m.per_process = 4 * b * big_n * dim * (bwd ? 2 : 1) + 4 * dim * (2 * h + 2 * g) * d;
    m.root_extra = 4 * b * big_n * dim * (bwd ? 2 : 1) + (bwd ? 4 * dim * (2 * h + 2 * g) * d : 0);
    part("parameters and gradients", 4 * dim * (2 * hr + 2 * gr) * d * (bwd ? 2 : 1));
    part("X, Y, dY, dX", 4 * b * rows * dim * (bwd ? 4 : 2));
    part("saved activations", b * tokens * (4 * dim + e * (hr + 2 * gr) * d + 4 * hr * d + 4 * hr));
    if (bwd) part("backward temporaries", b * tokens * (4 * (2 * hr + 2 * gr) * d + 4 * dim));
    if (tp) part("gathered rows and partial sums", 3 * 4 * b * big_n * dim);
    if (s == "ring-rsa") part("score rows", 4 * b * h * n * big_n * (bwd ? 2 : 1));
    if (s == "allgather") part("gathered K/V", b * big_n * 2 * g * d * (e + (bwd ? 8 : 0)));
    if (s == "burst" || s == "ring" || s == "usp" || s == "ulysses")
      part("attention workspace", 2 * b * n * (2 * h + 2 * g) * d * 4);
    part("kernel workspace", args.threads * 2e6);
  }
  m.this_machine = ranks_here * m.per_rank + processes_here * m.per_process + m.root_extra;
  return m;
}

double available_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  double kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit) {
    if (key == "MemAvailable:") return kb * 1024.0;
  }
  return 0;
}

void check_memory(const RunArgs& args, const MemoryEstimate& m) {
  const double available = available_memory();
  const double limit = args.max_memory > 0 ? args.max_memory : available;
  if (limit <= 0 || m.this_machine <= limit) return;
  fail("memory: this run needs about ", gb(m.this_machine), " on this machine but ",
       args.max_memory > 0 ? "--max-memory allows " : "only ", gb(limit),
       args.max_memory > 0 ? "" : " are available", "; ", m.summary(),
       ". Try more ranks (--ranks), a shorter --seqlen, --dtype bf16, or --strategy burst");
}

}  // namespace burst::cli
