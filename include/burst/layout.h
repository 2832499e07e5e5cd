// How a global sequence of N tokens is split over P ranks, and moving [b, s, h, d] rows
// between global token order and a rank's shard.
//   contiguous: rank r holds [r N / P, (r + 1) N / P)
//   zigzag:     2P chunks (chunk c = [c N / 2P, (c + 1) N / 2P)); rank r holds chunks r and
//               2P - 1 - r, which balances causal work. When N < 2P: token r and, for
//               r < N - P, token N - 1 - r (the same rule at N = 2P)
//   striped:    rank r holds tokens r, r + P, r + 2P, ...
//   doc-zigzag: zigzag inside every packed document (MaskSpec::documents): a document of
//               L >= 2P tokens is cut into 2P chunks and ranks take chunk pairs (c, 2P-1-c),
//               the pairs rotating one rank per document so rounding does not pile up on one
//               rank; a shorter document goes whole to the rank with the least work so far
//               (longest first), so it needs no other rank's keys. Without documents:
//               zigzag
//   balanced:   contiguous shards cut where the mask's work (visible query-key pairs,
//               documents included) splits evenly: whole documents mostly stay on one rank,
//               so most ring steps and K/V sends are skipped; shard lengths differ (a causal
//               mask gives early ranks more tokens)
// Any N >= P works and gives every rank at least one token; contiguous, zigzag and striped
// shards differ by at most a chunk's rounding (no padding). The mask's windows and causal
// flag shape only the balanced layout's cuts and doc-zigzag's work counts; documents shape
// both.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "burst/communicator.h"
#include "burst/kernels.h"
#include "burst/tensor.h"

namespace burst::algo {

enum class Layout { kContiguous, kZigzag, kStriped, kDocZigzag, kBalanced };

std::string layout_name(Layout layout);
// Parses a layout_name; throws naming `what` and listing the names otherwise.
Layout parse_layout(const std::string& text, const std::string& what);
// Every layout, in the enum's order.
std::vector<Layout> layouts();
// Whether the layout's shards depend on the mask (doc-zigzag, balanced).
bool layout_reads_mask(Layout layout);

// Global positions of rank `rank`'s tokens, in the shard's local order (increasing). `mask`
// (with documents ending at n_global) is read by the layouts that balance work.
std::vector<std::int64_t> shard_positions(std::int64_t n_global, int world_size, int rank, Layout layout,
                                          const kernels::MaskSpec& mask = {});

// The positions of every rank's shard.
std::vector<std::vector<std::int64_t>> shard_plan(std::int64_t n_global, int world_size, Layout layout,
                                                  const kernels::MaskSpec& mask = {});

// The number of tokens of every rank's shard (the sizes of shard_plan's vectors), computed
// without listing positions for the layouts that do not read the mask, so sizing a huge
// problem costs nothing.
std::vector<std::int64_t> shard_lengths(std::int64_t n_global, int world_size, Layout layout,
                                        const kernels::MaskSpec& mask = {});

// The visible (query, key) pairs of queries at `queries` against all keys 0..n_global-1: a
// rank's share of the attention work (the kernels skip masked tiles), for load balance.
double visible_pairs(const std::vector<std::int64_t>& queries, std::int64_t n_global, const kernels::MaskSpec& mask);

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
