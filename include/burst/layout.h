// How a global sequence of N tokens is split over P ranks, and moving [b, s, h, d] rows
// between global token order and a rank's shard.
//   contiguous: rank r holds [r N / P, (r + 1) N / P)
//   zigzag:     2P chunks (chunk c = [c N / 2P, (c + 1) N / 2P)); rank r holds chunks r and
//               2P - 1 - r, which balances causal work. When N < 2P: token r and, for
//               r < N - P, token N - 1 - r (the same rule at N = 2P)
//   striped:    rank r holds tokens r, r + P, r + 2P, ...
// Any N >= P works and gives every rank at least one token; shards differ by at most a
// chunk's rounding (no padding).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "burst/communicator.h"
#include "burst/tensor.h"

namespace burst::algo {

enum class Layout { kContiguous, kZigzag, kStriped };

std::string layout_name(Layout layout);
// Parses "contiguous", "zigzag", "striped"; throws naming `what` otherwise.
Layout parse_layout(const std::string& text, const std::string& what);

// Global positions of rank `rank`'s tokens, in the shard's local order (increasing).
std::vector<std::int64_t> shard_positions(std::int64_t n_global, int world_size, int rank, Layout layout);

// The positions of every rank's shard.
std::vector<std::vector<std::int64_t>> shard_plan(std::int64_t n_global, int world_size, Layout layout);

// The number of tokens of every rank's shard (the sizes of shard_plan's vectors), computed
// without listing positions, so sizing a huge problem costs nothing.
std::vector<std::int64_t> shard_lengths(std::int64_t n_global, int world_size, Layout layout);

// shard[:, i] = global[:, positions[i]] for every batch, head and element: (b, N, h, d) ->
// (b, n_r, h, d). Both views may be strided and of either dtype, but the same dtype.
void copy_to_shard(const TensorView& global, const std::vector<std::int64_t>& positions,
                   const TensorView& shard);
// global[:, positions[i]] = shard[:, i]: (b, n_r, h, d) -> (b, N, h, d).
void copy_from_shard(const TensorView& shard, const std::vector<std::int64_t>& positions,
                     const TensorView& global);

// Collects every rank's shard (rows in the layout's local order) into `global` (global token
// order) on rank `root`; `global` is used on the root only (others pass nullptr).
// plan = shard_plan(...). Collective over comm.
void gather_rows(comm::Communicator& comm, const TensorView& shard,
                 const std::vector<std::vector<std::int64_t>>& plan, const TensorView* global,
                 int root = 0);
// The same for [b, h, n_r] row statistics (lse) into [b, h, N].
void gather_stats(comm::Communicator& comm, const RowStatsView& shard,
                  const std::vector<std::vector<std::int64_t>>& plan, const RowStatsView* global,
                  int root = 0);

// Dense copies of a (possibly strided) [b, s, h, d] view to and from raw memory laid out
// [b, s, h, d]; and of [b, h, s] statistics.
void pack_rows(const TensorView& t, void* dst);
void unpack_rows(const void* src, const TensorView& t);
void pack_stats(const RowStatsView& s, float* dst);
void unpack_stats(const float* src, const RowStatsView& s);

}  // namespace burst::algo
