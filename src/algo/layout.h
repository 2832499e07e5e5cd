// How a global sequence of N tokens is split over P ranks, and moving [b, s, h, d] rows
// between global token order and a rank's shard.
//   contiguous: rank r holds [r N / P, (r + 1) N / P)
//   zigzag:     2P chunks (chunk c = [c N / 2P, (c + 1) N / 2P)); rank r holds chunks r and
//               2P - 1 - r, which balances causal work
//   striped:    rank r holds tokens r, r + P, r + 2P, ...
// Any N >= P works; shards differ by at most a chunk's rounding (no padding).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace burst::algo {

enum class Layout { kContiguous, kZigzag, kStriped };

std::string layout_name(Layout layout);
// Parses "contiguous", "zigzag", "striped"; throws naming `what` otherwise.
Layout parse_layout(const std::string& text, const std::string& what);

// Global positions of rank `rank`'s tokens, in the shard's local order (increasing).
std::vector<std::int64_t> shard_positions(std::int64_t n_global, int world_size, int rank, Layout layout);

// The positions of every rank's shard.
std::vector<std::vector<std::int64_t>> shard_plan(std::int64_t n_global, int world_size, Layout layout);

// shard[:, i] = global[:, positions[i]] for every batch, head and element: (b, N, h, d) ->
// (b, n_r, h, d). Both views may be strided and of either dtype, but the same dtype.
void copy_to_shard(const TensorView& global, const std::vector<std::int64_t>& positions,
                   const TensorView& shard);
// global[:, positions[i]] = shard[:, i]: (b, n_r, h, d) -> (b, N, h, d).
void copy_from_shard(const TensorView& shard, const std::vector<std::int64_t>& positions,
                     const TensorView& global);

}  // namespace burst::algo
