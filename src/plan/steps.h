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

#include "burst/layout.h"

namespace burst::plan {

// Visible (query, key) pairs between every two ranks' shards: pairs[i][j] for the queries of
// rank i against the keys of rank j, under a causal mask or none, for the layouts that do not
// read the mask (contiguous, zigzag, striped). Exact for any N >= P; cost O(P^2) from runs of
// consecutive positions (striped in closed form).
struct PairWork {
  int ranks = 0;
  std::vector<double> pairs;  // row-major [query rank][key rank]
  double at(int query_rank, int key_rank) const {
    return pairs[static_cast<std::size_t>(query_rank) * static_cast<std::size_t>(ranks) +
                 static_cast<std::size_t>(key_rank)];
  }
  double total() const;
};
PairWork pair_work(algo::Layout layout, std::int64_t seqlen, int ranks, bool causal);

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

// USP's ring across P / U groups of U consecutive ranks: a group holds its members' tokens and
// each member 1 / U of the heads, so step t of the group ring pairs group g with group
// (g - t) mod (P / U) and a member computes 1 / U of the two groups' pairs. The busiest
// group's pairs per member, at each step.
std::vector<double> group_ring_steps(const PairWork& w, int group_size, Travelling travelling);

// The busiest rank's pairs against every key (all-gather: one call over all keys).
double busiest_rank(const PairWork& w);

}  // namespace burst::plan
