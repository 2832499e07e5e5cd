// The parts of `burst run --block` around the run itself: its inputs, its output files, the
// weight gradients gathered on rank 0, and the check against the double block reference.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "args.h"
#include "block_report.h"
#include "burst/block.h"
#include "burst/communicator.h"
#include "burst/kernels.h"
#include "output.h"

namespace burst::cli {

// What rank 0 collects: Y and dX in global token order, and every block's full weight gradients.
struct BlockResults {
  Tensor y, dx;
  std::vector<algo::BlockParameters> grads;
};

// F of the run: --mlp-dim, else the F of DIR/layer0/w1.npy with --weights (which --mlp-dim
// must match), else block_mlp_dim(D).
std::int64_t mlp_dim_of(const RunArgs& args, std::int64_t model_dim);

// Throws, naming --strategy (or --mlp-dim), when `strategy` cannot run the block over `ranks`
// ranks (algo::block_cannot_run's reason).
void check_block_runs(algo::Strategy strategy, const algo::BlockShape& shape, int ranks,
                      const algo::StrategyOptions& options);

// X, dY (random, drawn with --seed as --layer draws them, or --x) and every block's weights:
// random_block_parameters with seed --seed + 1 + i for block i, or --weights DIR/layer{i}/
// wq, wk, wv, wo, g1, g2, w1, w3, w2 .npy (shapes in --help). Throws naming the flag.
BlockProblem make_block_problem(const RunArgs& args);

// The files of --save: DIR/y.npy and dx.npy (main.cpp checks those) and, with --backward,
// DIR/layer{i}/ with block_gradient_files(); this checks the layer folders.
void expect_block_outputs(Outputs& outputs, const RunArgs& args);
const std::vector<std::string>& block_gradient_files();  // dwq.npy ... dw2.npy

// Tensor parallelism: the full gradient of one block on rank 0 (empty elsewhere) from every
// rank's heads and hidden units. Collective.
algo::BlockParameters gather_block_grads(comm::Communicator& c, const algo::BlockParameters& grads,
                                         const algo::BlockShape& shape);

// Y (and dX and every weight gradient with --backward) against reference::block, normwise
// relative errors into `report`; problems past the reference's budget are left unverified
// with the reason.
void verify_block(const BlockProblem& p, const RunArgs& args, const kernels::MaskSpec& mask, const BlockResults& got,
                  BlockReport& report);

}  // namespace burst::cli
