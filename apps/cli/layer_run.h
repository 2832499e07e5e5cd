// `burst run --layer`: the attention layer (burst/layer.h) over the ranks of the default world
// with any strategy, tensor parallelism included. X (random or --x) and the weights (random
// or --weights) are global; every rank takes its share, rank 0 gathers Y (and dX) in token
// order, checks them against the double-precision layer reference and prints the table.
#pragma once

#include "args.h"
#include "output.h"

namespace burst::cli {

// Returns the exit status (0 ok, 1 over tolerance); throws burst::Error on bad input.
// memory_estimate_bytes: what the run was estimated to need on this machine (reported);
// `outputs` holds the --save and --json paths, checked before the run.
int run_layer(const RunArgs& args, double memory_estimate_bytes, Outputs& outputs);

}  // namespace burst::cli
