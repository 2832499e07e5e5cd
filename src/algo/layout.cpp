#include "burst/layout.h"

#include <cstring>

#include "burst/error.h"

namespace burst::algo {

std::string layout_name(Layout layout) {
  switch (layout) {
    case Layout::kContiguous: return "contiguous";
    case Layout::kZigzag: return "zigzag";
    case Layout::kStriped: return "striped";
  }
  return "?";
}

Layout parse_layout(const std::string& text, const std::string& what) {
  for (Layout l : {Layout::kContiguous, Layout::kZigzag, Layout::kStriped}) {
    if (text == layout_name(l)) return l;
  }
  fail(what, ": expected contiguous, zigzag or striped, got '", text, "'");
}

std::vector<std::int64_t> shard_positions(std::int64_t n, int world, int rank, Layout layout) {
  BURST_CHECK(world >= 1 && rank >= 0 && rank < world, "shard: rank ", rank, " outside world of ", world);
  BURST_CHECK(n >= world, "seqlen: ", layout_name(layout), " sharding needs at least one token per rank (",
              world, "), got ", n);
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
  }
  return out;
}

std::vector<std::vector<std::int64_t>> shard_plan(std::int64_t n, int world, Layout layout) {
  std::vector<std::vector<std::int64_t>> plan;
  for (int r = 0; r < world; ++r) plan.push_back(shard_positions(n, world, r, layout));
  return plan;
}

// Counts what shard_positions lists (tests/plan checks both agree for every layout).
std::vector<std::int64_t> shard_lengths(std::int64_t n, int world, Layout layout) {
  BURST_CHECK(world >= 1 && n >= world, "seqlen: ", layout_name(layout),
              " sharding needs at least one token per rank (", world, "), got ", n);
  std::vector<std::int64_t> lengths;
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
