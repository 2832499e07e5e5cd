#include "algo/layout.h"

#include <cstring>

#include "core/error.h"

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

}  // namespace burst::algo
