#include "steps.h"

#include <algorithm>
#include <numeric>

#include "burst/error.h"

namespace burst::plan {
namespace {

// Tokens [first, first + count).
struct Run {
  std::int64_t first = 0, count = 0;
};

// A rank's shard as runs of consecutive positions, as algo::shard_positions lists them.
std::vector<Run> shard_runs(algo::Layout layout, std::int64_t n, int world, int rank) {
  const std::int64_t p = world, r = rank;
  switch (layout) {
    case algo::Layout::kContiguous:
      return {{r * n / p, (r + 1) * n / p - r * n / p}};
    case algo::Layout::kZigzag: {
      const std::int64_t chunks = 2 * p;
      if (n < chunks) {
        std::vector<Run> runs = {{r, 1}};
        if (r < n - p) runs.push_back({n - 1 - r, 1});
        return runs;
      }
      auto start = [&](std::int64_t c) { return c * n / chunks; };
      return {{start(r), start(r + 1) - start(r)}, {start(chunks - 1 - r), start(chunks - r) - start(chunks - 1 - r)}};
    }
    default:
      BURST_CHECK(false, "plan: no runs for layout ", algo::layout_name(layout));
  }
  return {};
}

// Sum of min(x, cap) over x = lo..hi (0 when hi < lo); lo >= 0.
double sum_capped(std::int64_t lo, std::int64_t hi, std::int64_t cap) {
  if (hi < lo) return 0.0;
  const std::int64_t ramp_hi = std::min(hi, cap);
  double s = 0.0;
  if (ramp_hi >= lo) s += static_cast<double>(ramp_hi - lo + 1) * static_cast<double>(lo + ramp_hi) / 2.0;
  if (hi > cap) s += static_cast<double>(hi - std::max(lo - 1, cap)) * static_cast<double>(cap);
  return s;
}

// Pairs (q, k) with k <= q between the queries of run a and the keys of run b.
double causal_pairs(const Run& a, const Run& b) {
  if (a.count <= 0 || b.count <= 0) return 0.0;
  // Query q sees min(max(q - b.first + 1, 0), b.count) keys of b.
  const std::int64_t lo = std::max(a.first, b.first), hi = a.first + a.count - 1;
  return sum_capped(lo - b.first + 1, hi - b.first + 1, b.count);
}

// Pairs with k - q <= x between runs a and b: k - x <= q, run b moved by -x.
double pairs_up_to(const Run& a, const Run& b, std::int64_t x) { return causal_pairs(a, {b.first - x, b.count}); }

std::int64_t floor_div(std::int64_t x, std::int64_t y) { return x / y - ((x % y != 0) && ((x < 0) != (y < 0)) ? 1 : 0); }

// Striped shards: rank i holds i + aP for a < m_i. Pairs with (j + bP) - (i + aP) <= x: for
// each a, the b with b <= a + f, f = floor((x + i - j) / P), so sum over a of
// clamp(a + f + 1, 0, m_j).
double striped_pairs_up_to(std::int64_t n, int p, int i, int j, std::int64_t x) {
  const std::int64_t m_i = (n - i + p - 1) / p, m_j = (n - j + p - 1) / p;
  const std::int64_t f = floor_div(x + i - j, p);
  return sum_capped(std::max<std::int64_t>(f + 1, 0), f + m_i, m_j);
}

int wrap(int x, int m) { return ((x % m) + m) % m; }

}  // namespace

double PairWork::total() const { return std::accumulate(pairs.begin(), pairs.end(), 0.0); }

namespace {

void check_modelled(algo::Layout layout, std::int64_t seqlen, int ranks, const kernels::MaskSpec& mask) {
  BURST_CHECK(ranks >= 1 && seqlen >= ranks, "plan: ", seqlen, " tokens cannot shard over ", ranks, " ranks");
  BURST_CHECK(!mask.has_documents(), "plan: packed documents are not modelled");
  BURST_CHECK(layout == algo::Layout::kContiguous || layout == algo::Layout::kZigzag || layout == algo::Layout::kStriped,
              "plan: the planner models the contiguous, zigzag and striped layouts, got ", algo::layout_name(layout));
}

// The visible pairs of a mask on N tokens are those with lo <= k - q <= hi; beyond +-N every
// pair is in, so an unbounded side is N.
struct Band {
  std::int64_t lo = 0, hi = 0;
  bool everything = false;
};
Band band_of(const kernels::MaskSpec& mask, std::int64_t seqlen) {
  const std::int64_t far = seqlen;
  Band b;
  b.lo = mask.window_left >= 0 ? -std::min(mask.window_left, far) : -far;
  b.hi = mask.window_right >= 0 ? std::min(mask.window_right, far) : far;
  if (mask.causal) b.hi = std::min<std::int64_t>(b.hi, 0);
  b.everything = b.lo <= -far && b.hi >= far;
  return b;
}

// Smallest and largest position of each block of `block` consecutive local tokens of a
// rank's shard (its positions ascend).
struct Blocks {
  std::vector<std::int64_t> lo, hi;
};
Blocks shard_blocks(algo::Layout layout, std::int64_t n, int world, int rank, int block) {
  std::vector<Run> runs;
  std::int64_t count = 0;
  if (layout == algo::Layout::kStriped) {
    count = (n - rank + world - 1) / world;
  } else {
    runs = shard_runs(layout, n, world, rank);
    for (const Run& run : runs) count += run.count;
  }
  auto position = [&](std::int64_t t) {
    if (layout == algo::Layout::kStriped) return rank + t * world;
    for (const Run& run : runs) {
      if (t < run.count) return run.first + t;
      t -= run.count;
    }
    return std::int64_t{-1};
  };
  Blocks b;
  for (std::int64_t first = 0; first < count; first += block) {
    b.lo.push_back(position(first));
    b.hi.push_back(position(std::min(first + block, count) - 1));
  }
  return b;
}

// Partially masked tiles of query blocks `q` against key blocks `k` under band `band`, as
// kernels' classify sees them: a tile is skipped when k_hi - q_lo < lo or k_lo - q_hi > hi,
// full when k_lo - q_hi >= lo and k_hi - q_lo <= hi, partial otherwise.
double partial_between(const Blocks& q, const Blocks& k, const Band& band) {
  double partial = 0;
  for (std::size_t i = 0; i < q.lo.size(); ++i) {
    const auto first_hi_at_least = [&](std::int64_t x) {
      return std::lower_bound(k.hi.begin(), k.hi.end(), x) - k.hi.begin();
    };
    const auto first_lo_above = [&](std::int64_t x) { return std::upper_bound(k.lo.begin(), k.lo.end(), x) - k.lo.begin(); };
    // Computed: from the first block with k_hi >= q_lo + lo to the last with k_lo <= q_hi + hi.
    const auto c = first_hi_at_least(q.lo[i] + band.lo), d = first_lo_above(q.hi[i] + band.hi);
    // Full: k_lo >= q_hi + lo and k_hi <= q_lo + hi.
    const auto a = std::lower_bound(k.lo.begin(), k.lo.end(), q.hi[i] + band.lo) - k.lo.begin();
    const auto b = std::upper_bound(k.hi.begin(), k.hi.end(), q.lo[i] + band.hi) - k.hi.begin();
    const auto computed = std::max<std::ptrdiff_t>(d - c, 0);
    const auto full = std::max<std::ptrdiff_t>(std::min(b, d) - std::max(a, c), 0);
    partial += static_cast<double>(computed - full);
  }
  return partial;
}

}  // namespace

PairWork pair_work(algo::Layout layout, std::int64_t seqlen, int ranks, const kernels::MaskSpec& mask) {
  check_modelled(layout, seqlen, ranks, mask);
  PairWork w;
  w.ranks = ranks;
  w.pairs.assign(static_cast<std::size_t>(ranks) * static_cast<std::size_t>(ranks), 0.0);
  const std::vector<std::int64_t> lengths = algo::shard_lengths(seqlen, ranks, layout);
  const auto [lo, hi, everything] = band_of(mask, seqlen);
  std::vector<std::vector<Run>> runs;
  if (!everything && layout != algo::Layout::kStriped) {
    for (int r = 0; r < ranks; ++r) runs.push_back(shard_runs(layout, seqlen, ranks, r));
  }
  for (int i = 0; i < ranks; ++i) {
    for (int j = 0; j < ranks; ++j) {
      double pairs = 0.0;
      if (everything) {
        pairs = static_cast<double>(lengths[static_cast<std::size_t>(i)]) * static_cast<double>(lengths[static_cast<std::size_t>(j)]);
      } else if (lo > hi) {
        pairs = 0.0;
      } else if (layout == algo::Layout::kStriped) {
        pairs = striped_pairs_up_to(seqlen, ranks, i, j, hi) - striped_pairs_up_to(seqlen, ranks, i, j, lo - 1);
      } else {
        for (const Run& a : runs[static_cast<std::size_t>(i)])
          for (const Run& b : runs[static_cast<std::size_t>(j)]) pairs += pairs_up_to(a, b, hi) - pairs_up_to(a, b, lo - 1);
      }
      w.pairs[static_cast<std::size_t>(i) * static_cast<std::size_t>(ranks) + static_cast<std::size_t>(j)] = pairs;
    }
  }
  return w;
}

PairWork partial_tiles(algo::Layout layout, std::int64_t seqlen, int ranks, const kernels::MaskSpec& mask, int rows,
                       int cols) {
  check_modelled(layout, seqlen, ranks, mask);
  BURST_CHECK(rows >= 1 && cols >= 1, "plan: tiles of ", rows, " x ", cols, " tokens");
  PairWork w;
  w.ranks = ranks;
  w.pairs.assign(static_cast<std::size_t>(ranks) * static_cast<std::size_t>(ranks), 0.0);
  const Band band = band_of(mask, seqlen);
  if (band.everything || band.lo > band.hi) return w;
  std::vector<Blocks> queries, keys;
  for (int r = 0; r < ranks; ++r) {
    queries.push_back(shard_blocks(layout, seqlen, ranks, r, rows));
    keys.push_back(shard_blocks(layout, seqlen, ranks, r, cols));
  }
  for (int i = 0; i < ranks; ++i)
    for (int j = 0; j < ranks; ++j)
      w.pairs[static_cast<std::size_t>(i) * static_cast<std::size_t>(ranks) + static_cast<std::size_t>(j)] =
          partial_between(queries[static_cast<std::size_t>(i)], keys[static_cast<std::size_t>(j)], band);
  return w;
}

PairWork tile_weighted(const PairWork& visible, const PairWork& partial, double extra) {
  BURST_CHECK(visible.ranks == partial.ranks, "plan: pair and tile counts of ", visible.ranks, " and ", partial.ranks,
              " ranks");
  PairWork w = visible;
  for (std::size_t i = 0; i < w.pairs.size(); ++i) w.pairs[i] += extra * partial.pairs[i];
  return w;
}

namespace {
// Pairs of rank `rank` holding origin `origin`'s travelling side.
double held(const PairWork& w, int rank, int origin, Travelling travelling) {
  return travelling == Travelling::kKeys ? w.at(rank, origin) : w.at(origin, rank);
}
}  // namespace

std::vector<double> ring_steps(const PairWork& w, Travelling travelling) {
  const int p = w.ranks;
  std::vector<double> steps(static_cast<std::size_t>(p), 0.0);
  for (int t = 0; t < p; ++t)
    for (int r = 0; r < p; ++r)
      steps[static_cast<std::size_t>(t)] = std::max(steps[static_cast<std::size_t>(t)], held(w, r, wrap(r - t, p), travelling));
  return steps;
}

std::vector<std::vector<double>> double_ring_steps(const PairWork& w, int nodes, int per_node, Travelling travelling) {
  BURST_CHECK(nodes * per_node == w.ranks, "plan: ", nodes, " nodes of ", per_node, " ranks are not ", w.ranks, " ranks");
  std::vector<std::vector<double>> steps(static_cast<std::size_t>(nodes), std::vector<double>(static_cast<std::size_t>(per_node), 0.0));
  for (int u = 0; u < nodes; ++u) {
    for (int s = 0; s < per_node; ++s) {
      double& step = steps[static_cast<std::size_t>(u)][static_cast<std::size_t>(s)];
      for (int n = 0; n < nodes; ++n) {
        for (int l = 0; l < per_node; ++l) {
          const int origin = wrap(n - u, nodes) * per_node + wrap(l - s, per_node);
          step = std::max(step, held(w, n * per_node + l, origin, travelling));
        }
      }
    }
  }
  return steps;
}

std::vector<int> last_steps(const PairWork& w, Travelling travelling) {
  const int p = w.ranks;
  std::vector<int> last(static_cast<std::size_t>(p), 0);
  for (int j = 0; j < p; ++j) {
    for (int t = p - 1; t > 0; --t) {
      if (held(w, wrap(j + t, p), j, travelling) > 0) {
        last[static_cast<std::size_t>(j)] = t;
        break;
      }
    }
  }
  return last;
}

RingSends ring_sends(const std::vector<int>& forward_last, const std::vector<int>& backward_last,
                     const std::vector<double>& tokens, double forward, double bundle, double trailing) {
  RingSends s;
  const auto p = static_cast<double>(tokens.size());
  if (tokens.size() < 2) return s;
  double all = 0, f = 0, b = 0, t = 0;
  for (std::size_t j = 0; j < tokens.size(); ++j) {
    all += tokens[j];
    f += forward_last[j] * tokens[j];
    b += backward_last[j] * tokens[j];
    t += (backward_last[j] > 0 ? backward_last[j] + 1 : 0) * tokens[j];
    s.forward_hops = std::max(s.forward_hops, forward_last[j]);
    s.backward_hops = std::max(s.backward_hops, backward_last[j]);
  }
  s.forward = forward * f / ((p - 1) * all);
  s.bundle = bundle * b / ((p - 1) * all);
  s.trailing = trailing * t / (p * all);
  return s;
}

PairWork group_work(const PairWork& w, int group_size) {
  BURST_CHECK(group_size >= 1 && w.ranks % group_size == 0, "plan: groups of ", group_size, " do not divide ", w.ranks,
              " ranks");
  PairWork g;
  g.ranks = w.ranks / group_size;
  g.pairs.assign(static_cast<std::size_t>(g.ranks) * static_cast<std::size_t>(g.ranks), 0.0);
  for (int i = 0; i < w.ranks; ++i)
    for (int j = 0; j < w.ranks; ++j)
      g.pairs[static_cast<std::size_t>(i / group_size) * static_cast<std::size_t>(g.ranks) +
              static_cast<std::size_t>(j / group_size)] += w.at(i, j);
  return g;
}

double busiest_rank(const PairWork& w) {
  double most = 0.0;
  for (int r = 0; r < w.ranks; ++r) {
    double s = 0.0;
    for (int j = 0; j < w.ranks; ++j) s += w.at(r, j);
    most = std::max(most, s);
  }
  return most;
}

}  // namespace burst::plan
