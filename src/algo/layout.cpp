#include "burst/layout.h"

#include <algorithm>
#include <cstring>

#include "burst/error.h"
#include "kernels/detail.h"

namespace burst::algo {

std::string layout_name(Layout layout) {
  switch (layout) {
    case Layout::kContiguous: return "contiguous";
    case Layout::kZigzag: return "zigzag";
    case Layout::kStriped: return "striped";
    case Layout::kDocZigzag: return "doc-zigzag";
    case Layout::kBalanced: return "balanced";
  }
  return "?";
}

std::vector<Layout> layouts() {
  return {Layout::kContiguous, Layout::kZigzag, Layout::kStriped, Layout::kDocZigzag, Layout::kBalanced};
}

bool layout_reads_mask(Layout layout) { return layout == Layout::kDocZigzag || layout == Layout::kBalanced; }

Layout parse_layout(const std::string& text, const std::string& what) {
  std::string names;
  for (Layout l : layouts()) {
    if (text == layout_name(l)) return l;
    names += names.empty() ? "" : ", ";
    names += layout_name(l);
  }
  fail(what, ": expected one of ", names, ", got '", text, "'");
}

double visible_pairs(const std::vector<std::int64_t>& queries, std::int64_t n, const kernels::MaskSpec& mask) {
  double pairs = 0.0;
  for (std::int64_t q : queries) {
    const kernels::MaskSpec::KeyRange r = mask.key_range(q);
    const std::int64_t lo = std::max<std::int64_t>(r.first, 0), hi = std::min(r.last, n - 1);
    if (hi >= lo) pairs += static_cast<double>(hi - lo + 1);
  }
  return pairs;
}

namespace {

void check_world(std::int64_t n, int world, Layout layout) {
  BURST_CHECK(world >= 1, "shard: expected at least one rank, got ", world);
  BURST_CHECK(n >= world, "seqlen: ", layout_name(layout), " sharding needs at least one token per rank (", world,
              "), got ", n);
}

void check_mask(std::int64_t n, const kernels::MaskSpec& mask) {
  kernels::detail::check_documents(mask);
  if (!mask.documents.empty()) {
    BURST_CHECK(mask.documents.back() == n, "documents: expected the last boundary to be the sequence length ", n,
                ", got ", mask.documents.back());
  }
}

// Visible pairs of the queries [first, last) against every key, query by query.
std::vector<double> row_work(std::int64_t first, std::int64_t last, std::int64_t n, const kernels::MaskSpec& mask) {
  std::vector<double> w;
  w.reserve(static_cast<std::size_t>(last - first));
  for (std::int64_t q = first; q < last; ++q) {
    const kernels::MaskSpec::KeyRange r = mask.key_range(q);
    const std::int64_t lo = std::max<std::int64_t>(r.first, 0), hi = std::min(r.last, n - 1);
    w.push_back(hi >= lo ? static_cast<double>(hi - lo + 1) : 0.0);
  }
  return w;
}

// Contiguous cuts of equal work: rank r starts at the first token where the work before it
// reaches r / P of the total, keeping at least one token per rank.
std::vector<std::vector<std::int64_t>> balanced_plan(std::int64_t n, int world, const kernels::MaskSpec& mask) {
  const std::vector<double> w = row_work(0, n, n, mask);
  std::vector<double> before(static_cast<std::size_t>(n) + 1, 0.0);
  for (std::int64_t i = 0; i < n; ++i) before[static_cast<std::size_t>(i) + 1] = before[static_cast<std::size_t>(i)] + w[static_cast<std::size_t>(i)];
  const double total = before.back();
  std::vector<std::int64_t> cut(static_cast<std::size_t>(world) + 1, n);
  cut[0] = 0;
  for (int r = 1; r < world; ++r) {
    const double target = total * r / world;
    std::int64_t c = std::lower_bound(before.begin(), before.end(), target) - before.begin();
    // The closer of the two tokens around the target, then room for one token per rank.
    if (c > 0 && target - before[static_cast<std::size_t>(c) - 1] < before[static_cast<std::size_t>(c)] - target) --c;
    c = std::max(c, cut[static_cast<std::size_t>(r) - 1] + 1);
    cut[static_cast<std::size_t>(r)] = std::min(c, n - (world - r));
  }
  std::vector<std::vector<std::int64_t>> plan(static_cast<std::size_t>(world));
  for (int r = 0; r < world; ++r)
    for (std::int64_t t = cut[static_cast<std::size_t>(r)]; t < cut[static_cast<std::size_t>(r) + 1]; ++t)
      plan[static_cast<std::size_t>(r)].push_back(t);
  return plan;
}

// Zigzag inside every document (layout.h).
std::vector<std::vector<std::int64_t>> doc_zigzag_plan(std::int64_t n, int world, const kernels::MaskSpec& mask) {
  const std::int64_t p = world, chunks = 2 * p;
  std::vector<std::int64_t> bounds(mask.documents.begin(), mask.documents.end());
  if (bounds.empty()) bounds = {0, n};
  std::vector<std::vector<std::int64_t>> plan(static_cast<std::size_t>(world));
  std::vector<double> work(static_cast<std::size_t>(world), 0.0);
  auto take = [&](std::int64_t rank, std::int64_t first, std::int64_t last) {
    const std::vector<double> w = row_work(first, last, n, mask);
    for (double x : w) work[static_cast<std::size_t>(rank)] += x;
    for (std::int64_t t = first; t < last; ++t) plan[static_cast<std::size_t>(rank)].push_back(t);
  };
  struct Short {
    std::int64_t first, last;
    double work;
  };
  std::vector<Short> shorts;
  std::int64_t rotation = 0;
  for (std::size_t d = 0; d + 1 < bounds.size(); ++d) {
    const std::int64_t a = bounds[d], length = bounds[d + 1] - a;
    if (length < chunks) {
      double w = 0.0;
      for (double x : row_work(a, bounds[d + 1], n, mask)) w += x;
      shorts.push_back({a, bounds[d + 1], w});
      continue;
    }
    auto start = [&](std::int64_t c) { return a + c * length / chunks; };
    for (std::int64_t c = 0; c < p; ++c) {
      const std::int64_t rank = (c + rotation) % p;
      take(rank, start(c), start(c + 1));
      take(rank, start(chunks - 1 - c), start(chunks - c));
    }
    ++rotation;
  }
  // Short documents whole, longest work first, each to the rank with the least work (then the
  // fewest tokens, then the lowest rank).
  std::stable_sort(shorts.begin(), shorts.end(), [](const Short& x, const Short& y) { return x.work > y.work; });
  for (const Short& sd : shorts) {
    int best = 0;
    for (int r = 1; r < world; ++r) {
      const auto ur = static_cast<std::size_t>(r), ub = static_cast<std::size_t>(best);
      if (work[ur] < work[ub] || (work[ur] == work[ub] && plan[ur].size() < plan[ub].size())) best = r;
    }
    take(best, sd.first, sd.last);
  }
  for (auto& shard : plan) std::sort(shard.begin(), shard.end());
  // Fewer documents than ranks can leave a rank empty: it takes the last token of the
  // largest shard (n >= P makes one exist with two or more).
  for (auto& shard : plan) {
    if (!shard.empty()) continue;
    auto& largest = *std::max_element(plan.begin(), plan.end(), [](const auto& x, const auto& y) { return x.size() < y.size(); });
    shard.push_back(largest.back());
    largest.pop_back();
  }
  return plan;
}

}  // namespace

std::vector<std::vector<std::int64_t>> shard_plan(std::int64_t n, int world, Layout layout, const kernels::MaskSpec& mask) {
  check_world(n, world, layout);
  check_mask(n, mask);
  if (layout == Layout::kBalanced) return balanced_plan(n, world, mask);
  if (layout == Layout::kDocZigzag && mask.has_documents()) return doc_zigzag_plan(n, world, mask);
  std::vector<std::vector<std::int64_t>> plan;
  for (int r = 0; r < world; ++r) plan.push_back(shard_positions(n, world, r, layout, mask));
  return plan;
}

std::vector<std::int64_t> shard_positions(std::int64_t n, int world, int rank, Layout layout, const kernels::MaskSpec& mask) {
  BURST_CHECK(world >= 1 && rank >= 0 && rank < world, "shard: rank ", rank, " outside world of ", world);
  check_world(n, world, layout);
  if (layout == Layout::kDocZigzag && !mask.has_documents()) layout = Layout::kZigzag;  // one document
  if (layout_reads_mask(layout)) return shard_plan(n, world, layout, mask)[static_cast<std::size_t>(rank)];
  std::vector<std::int64_t> out;
  auto add_range = [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t t = lo; t < hi; ++t) out.push_back(t);
  };
  switch (layout) {
    case Layout::kContiguous:
      add_range(rank * n / world, (rank + 1) * n / world);
      break;
    case Layout::kZigzag: {
      const std::int64_t chunks = 2 * std::int64_t{world};
      if (n < chunks) {
        // Too short for 2P non-empty chunks: rank r takes token r from the front and, while
        // tokens remain, token n-1-r from the back (the same as below when n = 2P), so every
        // rank holds at least one token and the causal work stays paired.
        out.push_back(rank);
        if (rank < n - world) out.push_back(n - 1 - rank);
        break;
      }
      auto start = [&](std::int64_t c) { return c * n / chunks; };
      add_range(start(rank), start(rank + 1));
      add_range(start(chunks - 1 - rank), start(chunks - rank));
      break;
    }
    case Layout::kStriped:
      for (std::int64_t t = rank; t < n; t += world) out.push_back(t);
      break;
    case Layout::kDocZigzag:
    case Layout::kBalanced:
      break;  // above
  }
  return out;
}

// Counts what shard_positions lists (tests/plan checks both agree for every layout).
std::vector<std::int64_t> shard_lengths(std::int64_t n, int world, Layout layout, const kernels::MaskSpec& mask) {
  check_world(n, world, layout);
  std::vector<std::int64_t> lengths;
  if (layout == Layout::kDocZigzag && !mask.has_documents()) layout = Layout::kZigzag;  // one document
  if (layout_reads_mask(layout)) {
    for (const auto& shard : shard_plan(n, world, layout, mask)) lengths.push_back(static_cast<std::int64_t>(shard.size()));
    return lengths;
  }
  const std::int64_t p = world, chunks = 2 * p;
  auto start = [&](std::int64_t c) { return c * n / chunks; };  // zigzag's chunk c
  for (std::int64_t r = 0; r < p; ++r) {
    switch (layout) {
      case Layout::kContiguous: lengths.push_back((r + 1) * n / p - r * n / p); break;
      case Layout::kZigzag:
        // As shard_positions: one token from each end when 2P chunks cannot all be non-empty.
        lengths.push_back(n < chunks ? 1 + (r < n - p ? 1 : 0)
                                     : start(r + 1) - start(r) + start(chunks - r) - start(chunks - 1 - r));
        break;
      case Layout::kStriped: lengths.push_back((n - r + p - 1) / p); break;
      case Layout::kDocZigzag:
      case Layout::kBalanced: break;  // above
    }
  }
  return lengths;
}

namespace {

void copy_rows(const TensorView& src, const TensorView& dst, const std::vector<std::int64_t>& positions,
               bool to_shard) {
  const TensorView& shard = to_shard ? dst : src;
  const TensorView& global = to_shard ? src : dst;
  BURST_CHECK(src.dtype == dst.dtype, "shard copy: dtypes differ (", dtype_name(src.dtype), " vs ",
              dtype_name(dst.dtype), ")");
  BURST_CHECK(shard.b == global.b && shard.h == global.h && shard.d == global.d &&
                  shard.s == static_cast<std::int64_t>(positions.size()),
              "shard copy: shard ", shard.shape_string(), " does not fit ", positions.size(),
              " rows of global ", global.shape_string());
  const std::size_t elem = dtype_size(src.dtype);
  const std::size_t row_bytes = static_cast<std::size_t>(src.d) * elem;
  auto at = [elem](const TensorView& t, std::int64_t ib, std::int64_t is, std::int64_t ih) {
    return static_cast<char*>(t.data) + (ib * t.stride_b + is * t.stride_s + ih * t.stride_h) * static_cast<std::int64_t>(elem);
  };
  for (std::int64_t ib = 0; ib < shard.b; ++ib) {
    for (std::size_t i = 0; i < positions.size(); ++i) {
      const std::int64_t g = positions[i];
      BURST_CHECK(g >= 0 && g < global.s, "shard copy: position ", g, " outside [0, ", global.s, ")");
      const auto l = static_cast<std::int64_t>(i);
      for (std::int64_t ih = 0; ih < shard.h; ++ih) {
        if (to_shard) {
          std::memcpy(at(dst, ib, l, ih), at(src, ib, g, ih), row_bytes);
        } else {
          std::memcpy(at(dst, ib, g, ih), at(src, ib, l, ih), row_bytes);
        }
      }
    }
  }
}

}  // namespace

void copy_to_shard(const TensorView& global, const std::vector<std::int64_t>& positions,
                   const TensorView& shard) {
  copy_rows(global, shard, positions, true);
}

void copy_from_shard(const TensorView& shard, const std::vector<std::int64_t>& positions,
                     const TensorView& global) {
  copy_rows(shard, global, positions, false);
}

void pack_rows(const TensorView& t, void* dst) {
  const auto elem = static_cast<std::int64_t>(dtype_size(t.dtype));
  const std::size_t row = static_cast<std::size_t>(t.d * elem);
  auto* out = static_cast<char*>(dst);
  for (std::int64_t ib = 0; ib < t.b; ++ib)
    for (std::int64_t is = 0; is < t.s; ++is)
      for (std::int64_t ih = 0; ih < t.h; ++ih, out += row)
        std::memcpy(out, static_cast<const char*>(t.data) + (ib * t.stride_b + is * t.stride_s + ih * t.stride_h) * elem, row);
}

void unpack_rows(const void* src, const TensorView& t) {
  const auto elem = static_cast<std::int64_t>(dtype_size(t.dtype));
  const std::size_t row = static_cast<std::size_t>(t.d * elem);
  const auto* in = static_cast<const char*>(src);
  for (std::int64_t ib = 0; ib < t.b; ++ib)
    for (std::int64_t is = 0; is < t.s; ++is)
      for (std::int64_t ih = 0; ih < t.h; ++ih, in += row)
        std::memcpy(static_cast<char*>(t.data) + (ib * t.stride_b + is * t.stride_s + ih * t.stride_h) * elem, in, row);
}

void pack_stats(const RowStatsView& s, float* dst) {
  for (std::int64_t ib = 0; ib < s.b; ++ib)
    for (std::int64_t ih = 0; ih < s.h; ++ih, dst += s.s) std::memcpy(dst, s.row(ib, ih), static_cast<std::size_t>(s.s) * 4);
}

void unpack_stats(const float* src, const RowStatsView& s) {
  for (std::int64_t ib = 0; ib < s.b; ++ib)
    for (std::int64_t ih = 0; ih < s.h; ++ih, src += s.s) std::memcpy(s.row(ib, ih), src, static_cast<std::size_t>(s.s) * 4);
}

namespace {
constexpr int kGatherTag = 7;
}  // namespace

void gather_rows(comm::Communicator& comm, const TensorView& shard,
                 const std::vector<std::vector<std::int64_t>>& plan, const TensorView* global, int root) {
  const std::size_t row = static_cast<std::size_t>(shard.b * shard.h * shard.d) * dtype_size(shard.dtype);
  if (comm.rank() != root) {
    AlignedBuffer packed(row * static_cast<std::size_t>(shard.s));
    pack_rows(shard, packed.data());
    comm::Request r = comm.isend(packed.data(), packed.bytes(), root, kGatherTag);
    r.wait(comm.deadline());
    return;
  }
  BURST_CHECK(global != nullptr, "gather_rows: the root needs a global tensor");
  copy_from_shard(shard, plan[static_cast<std::size_t>(root)], *global);
  for (int r = 0; r < comm.world_size(); ++r) {
    if (r == root) continue;
    const auto n = static_cast<std::int64_t>(plan[static_cast<std::size_t>(r)].size());
    Tensor incoming(shard.dtype, shard.b, n, shard.h, shard.d);
    comm::Request req = comm.irecv(incoming.data<char>(), row * static_cast<std::size_t>(n), r, kGatherTag);
    req.wait(comm.deadline());
    copy_from_shard(incoming.view(), plan[static_cast<std::size_t>(r)], *global);
  }
}

void gather_stats(comm::Communicator& comm, const RowStatsView& shard,
                  const std::vector<std::vector<std::int64_t>>& plan, const RowStatsView* global, int root) {
  const std::size_t bytes = static_cast<std::size_t>(shard.b * shard.h * shard.s) * 4;
  if (comm.rank() != root) {
    std::vector<float> packed(static_cast<std::size_t>(shard.b * shard.h * shard.s));
    pack_stats(shard, packed.data());
    comm::Request r = comm.isend(packed.data(), bytes, root, kGatherTag + 1);
    r.wait(comm.deadline());
    return;
  }
  BURST_CHECK(global != nullptr, "gather_stats: the root needs a global array");
  for (int r = 0; r < comm.world_size(); ++r) {
    const auto& pos = plan[static_cast<std::size_t>(r)];
    const auto n = static_cast<std::int64_t>(pos.size());
    std::vector<float> values(static_cast<std::size_t>(shard.b * shard.h * n));
    if (r == root) {
      pack_stats(shard, values.data());
    } else {
      comm::Request req = comm.irecv(values.data(), values.size() * 4, r, kGatherTag + 1);
      req.wait(comm.deadline());
    }
    std::size_t at = 0;
    for (std::int64_t ib = 0; ib < shard.b; ++ib)
      for (std::int64_t ih = 0; ih < shard.h; ++ih)
        for (std::int64_t i = 0; i < n; ++i) global->row(ib, ih)[pos[static_cast<std::size_t>(i)]] = values[at++];
  }
}

}  // namespace burst::algo
