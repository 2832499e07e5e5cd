// `burst run --layer`: the attention layer (burst/layer.h) over the ranks of the default world
// with any strategy, tensor parallelism included. X (random or --x) and the weights (random
// or --weights) are global; every rank takes its share, rank 0 gathers Y (and dX) in token
// order, checks them against the double-precision layer reference and prints the table.
// The helpers below are shared with `burst run --block` (block_run.cpp).
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "args.h"
#include "burst/layer.h"
#include "burst/tensor.h"
#include "layer_report.h"
#include "output.h"

namespace burst::cli {

// Returns the exit status (0 ok, 1 over tolerance); throws burst::Error on bad input.
// memory_estimate_bytes: what the run was estimated to need on this machine (reported);
// `outputs` holds the --save and --json paths, checked before the run.
int run_layer(const RunArgs& args, double memory_estimate_bytes, Outputs& outputs);

// What --layer and --block runs share: the ranks to start (0: mpirun's), whether under
// mpirun, and the layer's options; options.attention.mask.documents points into
// `documents`, which moves with the struct.
struct LayerSetup {
  int ranks = 0;
  bool mpi = false;
  std::vector<std::int64_t> documents;
  algo::LayerOptions options;
};
LayerSetup layer_setup(const RunArgs& args, std::int64_t seqlen);

// The layer's shape (heads, kv heads, head_dim, D), X ([b, N, 1, D], random N(0, 1) drawn with
// --seed, or --x) and, with --backward, a random dY drawn after X; no weights. `mode` ("--layer",
// "--block") names the flag in errors.
LayerProblem make_layer_inputs(const RunArgs& args, const char* mode);
// A [b, s, 1, dim] fp32 tensor of N(0, 1) values drawn from `rng` in order.
Tensor normal_tensor(std::mt19937_64& rng, std::int64_t b, std::int64_t s, std::int64_t dim);
// Reads DIR/NAME, a float32 [rows, cols] .npy, into `into`; throws naming --weights and the file.
void read_matrix(const std::string& dir, const char* name, const algo::MatrixView& into);
// max |got - ref| / max |ref| (max |got - ref| when ref is 0); infinite for any non-finite got.
double normwise(const std::vector<double>& ref, const float* got, std::size_t count);
// The full attention weight gradients on rank 0 (empty elsewhere) from every rank's heads
// under tensor parallelism. Collective.
algo::Parameters gather_head_blocks(comm::Communicator& c, const algo::Parameters& grads, const algo::LayerShape& shape,
                                    std::int64_t dim);

}  // namespace burst::cli
