// The attention problem `burst run` times: inputs (random or from .npy files), the options that
// place queries and keys, and writing the results back out as .npy.
#pragma once

#include <cstdint>
#include <random>
#include <string>

#include "burst/attention.h"
#include "args.h"
#include "output.h"

namespace burst::cli {

struct Problem {
  Tensor q, k, v;  // [b, seqlen_q, n_heads_q, d] and [b, seqlen_k, n_heads_kv, d], args.dtype
  Tensor dout;     // shaped like q; holds data only when backward is set
  kernels::AttentionOptions options;
  bool backward = false;
  bool from_files = false;

  std::int64_t batch() const { return q.view().b; }
  std::int64_t seqlen_q() const { return q.view().s; }
  std::int64_t seqlen_k() const { return k.view().s; }
  std::int64_t heads() const { return q.view().h; }
  std::int64_t kv_heads() const { return k.view().h; }
  std::int64_t head_dim() const { return q.view().d; }
  DType dtype() const { return q.view().dtype; }
};

// Normal(0, 1) values in `dtype` (bf16 rounded to nearest even), drawn from `rng` in order.
Tensor random_tensor(std::mt19937_64& rng, DType dtype, std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d);

// Builds the problem the arguments describe: validates sizes (or the .npy shapes), fills the
// inputs, and sets bottom-right aligned positions, mask, scale, threads and isa.
// Throws burst::Error naming the offending flag on bad input.
Problem make_problem(const RunArgs& args);

// Stages DIR/o.npy [b, s, h, d] and DIR/lse.npy [b, h, s], plus DIR/dq.npy, dk.npy, dv.npy when
// `grads` is given, all float32, in `outputs` (checked there before the run; moved into
// place by its commit).
void save_outputs(Outputs& outputs, const std::string& dir, const ForwardOutputs& fwd, const Gradients* grads);

}  // namespace burst::cli
