// The attention problem `burst run` times: inputs (random or from .npy files), the options that
// place queries and keys, and writing the results back out as .npy.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "burst/attention.h"
#include "args.h"
#include "output.h"

namespace burst::cli {

struct Problem {
  Tensor q, k, v;  // [b, seqlen_q, n_heads_q, d] and [b, seqlen_k, n_heads_kv, d], args.dtype
  Tensor dout;     // shaped like q; holds data only when backward is set
  // Boundaries of the packed documents over the keys 0..seqlen_k-1 (empty: one document);
  // options.mask.documents views them, so a Problem is moved (which keeps the array), never
  // copied.
  std::vector<std::int64_t> documents;
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

// The boundaries (cu_seqlens) of the documents the flags pack into a sequence of `seqlen`
// tokens: --doc-lens, --doc-lens-from or --doc-dist (drawn with --seed); empty without them.
// Throws burst::Error naming the flag when the lengths do not sum to seqlen (`source` says
// where seqlen came from, e.g. "--seqlen") or the file cannot be read.
std::vector<std::int64_t> documents_of(const RunArgs& args, std::int64_t seqlen, std::string_view source);

// The mask of the flags (causal, window) over `documents`, which the caller keeps alive.
kernels::MaskSpec mask_of(const RunArgs& args, std::span<const std::int64_t> documents);

// Builds the problem the arguments describe: validates sizes (or the .npy shapes), fills the
// inputs, and sets bottom-right aligned positions, mask, scale, threads and isa.
// Throws burst::Error naming the offending flag on bad input.
Problem make_problem(const RunArgs& args);

// Stages DIR/o.npy [b, s, h, d] and DIR/lse.npy [b, h, s], plus DIR/dq.npy, dk.npy, dv.npy when
// `grads` is given, all float32, in `outputs` (checked there before the run; moved into
// place by its commit).
void save_outputs(Outputs& outputs, const std::string& dir, const ForwardOutputs& fwd, const Gradients* grads);

}  // namespace burst::cli
