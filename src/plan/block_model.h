// The transformer block's figures for the planner (Scope::kBlock), from the library's own
// formulas (burst/block.h): the bytes of its collectives per rank, its GEMM FLOPs and its
// memory. model.cpp times them with the attention core's.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "burst/block.h"
#include "burst/plan.h"

namespace burst::plan {

struct BlockFigures {
  // Per block and rank, averaged over the ranks: the attention layer's collectives
  // (expected_layer_traffic), the MLP's (expected_block_traffic), and both weight-gradient
  // all-reduces (backward).
  double layer_forward = 0, layer_backward = 0, mlp_forward = 0, mlp_backward = 0, grads = 0;
  double gemm_flops = 0;  // forward: projections 2 b T D (H_r + 2 G_r) d + 2 b T H_r d D, MLP 6 b T D F_r
  double memory = 0;      // block_memory for ModelShape::layers blocks: parameters + the larger pass
};

// The block of `m` (F = m.mlp_dim) under `strategy` over `lengths` (one shard per rank).
BlockFigures block_figures(algo::Strategy strategy, const ModelShape& m, const Workload& w,
                           const std::vector<std::int64_t>& lengths, const algo::StrategyOptions& options);

// Why `strategy` cannot run the block of `m` over `ranks` ranks ("" when it can).
std::string block_infeasible(algo::Strategy strategy, const ModelShape& m, int ranks, const algo::StrategyOptions& options);

}  // namespace burst::plan
