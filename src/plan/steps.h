// The rings' compute step by step under a layout, for the cost model (model.cpp).
//
// A ring step ends when its slowest rank is done: a rank cannot run ahead of its right
// neighbour by more than the message it sends it (the send completes when that neighbour
// posts its receive, at the start of its own step). So a ring's compute time is the sum over
// its steps of the busiest rank's work in that step, not the mean rank's: a contiguous
// layout under a causal mask gives the last rank a full block every step, twice the zigzag
// layout's half blocks.
#pragma once

#include <cstdint>
#include <vector>

#include "burst/kernels.h"
#include "burst/layout.h"

namespace burst::plan {

// Visible (query, key) pairs between every two ranks' shards: pairs[i][j] for the queries of
// rank i against the keys of rank j, under a mask's causal flag and window (no documents),
// for the layouts that do not read the mask (contiguous, zigzag, striped). Exact for any
// N >= P; cost O(P^2) from runs of consecutive positions (striped in closed form).
struct PairWork {
  int ranks = 0;
  std::vector<double> pairs;  // row-major [query rank][key rank]
  double at(int query_rank, int key_rank) const {
    return pairs[static_cast<std::size_t>(query_rank) * static_cast<std::size_t>(ranks) +
                 static_cast<std::size_t>(key_rank)];
  }
  double total() const;
};
PairWork pair_work(algo::Layout layout, std::int64_t seqlen, int ranks, const kernels::MaskSpec& mask);
inline PairWork pair_work(algo::Layout layout, std::int64_t seqlen, int ranks, bool causal) {
  kernels::MaskSpec mask;
  mask.causal = causal;
  return pair_work(layout, seqlen, ranks, mask);
}

// Partially masked tiles between every two ranks' shards (same shape as pair_work, counts in
// place of pairs) when the kernels tile a call into blocks of `rows` consecutive local
// queries and `cols` consecutive local keys, classified by their position bounds as
// kernels' classify does: the tiles that are computed and masked element by element. A
// shard's positions ascend (every layout here), so each query block's partial key blocks are
// found by binary search: O(P N / rows x log) in all.
PairWork partial_tiles(algo::Layout layout, std::int64_t seqlen, int ranks, const kernels::MaskSpec& mask, int rows,
                       int cols);

// The kernels' work in pairs at the full rate: visible pairs plus `extra` per partially
// masked tile.
PairWork tile_weighted(const PairWork& visible, const PairWork& partial, double extra);

// Which side travels around the ring: the keys (the forward, and the backward's kKeyValue
// scheme: rank r computes its queries against origin j's keys) or the queries (kQuery: rank r
// computes origin j's queries against its keys).
enum class Travelling { kKeys, kQueries };

// A single ring over all ranks: step t pairs rank r with origin (r - t) mod P. The busiest
// rank's pairs at each step.
std::vector<double> ring_steps(const PairWork& w, Travelling travelling);

// The double ring over `nodes` nodes of `per_node` consecutive ranks: outer step u, intra
// step s pairs rank (n, l) with origin (n - u, l - s). [u][s]: the busiest rank's pairs.
std::vector<std::vector<double>> double_ring_steps(const PairWork& w, int nodes, int per_node,
                                                   Travelling travelling);

// How far each origin's shard travels around a single ring, as the library forwards it: the
// last step t (1..P-1) at which rank origin + t has pairs with it, 0 when only the origin
// has (a causal contiguous layout: the last rank's keys are needed by no later rank). The
// shard makes that many hops and, in the backward, its accumulator one more (home), none at 0.
std::vector<int> last_steps(const PairWork& w, Travelling travelling);

// What a single ring sends when each origin's shard stops at its last step (last_steps of
// the forward's and the backward's travelling sides): the registry's unmasked mean bytes
// per rank (every origin's shard makes P - 1 hops and its accumulator P) scaled, origin by
// origin in proportion to its tokens, to the hops it makes.
struct RingSends {
  double forward = 0, bundle = 0, trailing = 0;  // mean bytes per rank
  int forward_hops = 0, backward_hops = 0;       // the last step that receives a shard
};
RingSends ring_sends(const std::vector<int>& forward_last, const std::vector<int>& backward_last,
                     const std::vector<double>& tokens, double forward, double bundle, double trailing);

// USP's ring runs across P / U groups of U consecutive ranks: a group holds its members'
// tokens. The pairs between groups' token sets: a PairWork over P / U "ranks". A member
// computes 1 / U of them (its heads).
PairWork group_work(const PairWork& w, int group_size);

// The busiest rank's pairs against every key (all-gather: one call over all keys).
double busiest_rank(const PairWork& w);

}  // namespace burst::plan
