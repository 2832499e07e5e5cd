// `burst run --block`: a stack of transformer blocks (burst/block.h: RMSNorm, the attention
// layer, residual, RMSNorm, SwiGLU MLP, residual) over the ranks of the default world with any
// strategy, tensor parallelism included. X and the weights are global (random or .npy); every
// rank takes its share, its bytes are checked against their formulas, and rank 0 gathers Y,
// dX and the weight gradients, checks them against the double block reference and reports.
#pragma once

#include "args.h"
#include "block_inputs.h"
#include "block_report.h"
#include "memory.h"
#include "output.h"

namespace burst::cli {

// One run's outcome; only rank 0's (root) holds the report and the gathered results.
struct BlockRun {
  bool root = false;
  BlockProblem problem;
  BlockReport report;
  BlockResults results;
};

// Runs the stack forward (and backward), checks every rank's bytes and, on rank 0, the results
// (collective over the default world). `estimate`: the run's memory estimate (reported).
// Throws burst::Error naming the flag on bad input or a strategy that cannot run the block.
BlockRun execute_block(const RunArgs& args, const MemoryEstimate& estimate);

// execute_block, then the table, --save and --json on rank 0. Returns the exit status: 0, or 1
// when an error is over the tolerance or a rank's bytes differ from their formula.
int run_block(const RunArgs& args, const MemoryEstimate& estimate, Outputs& outputs);

}  // namespace burst::cli
