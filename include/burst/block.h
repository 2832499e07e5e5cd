// A pre-norm transformer block, and a stack of them, on every strategy:
//   H  = RMSNorm(X) * g1                      (RMSNorm(x) = x / sqrt(mean(x^2) + eps), per token)
//   X2 = X + AttentionLayer(H)                (burst/layer.h: projections, RoPE, attention core)
//   H2 = RMSNorm(X2) * g2
//   Y  = X2 + (silu(H2 W1) * (H2 W3)) W2      (SwiGLU MLP of hidden width F)
// X and Y are [b, rows, 1, D] fp32; every parameter is fp32.
//
// How the ranks share the work (the attention layer's own split, extended to the MLP):
//   sequence-parallel strategies (burst, ring, ring-rsa, allgather, ulysses, usp): every rank
//     holds all the weights and runs the norms and the MLP on its own tokens, with no
//     communication; backward all-reduces the weight gradients (reported apart: a
//     data-parallel job all-reduces its gradients anyway);
//   tp-v1: rank r holds the attention heads of tensor_parallel_heads and the hidden units
//     [r F/P, (r+1) F/P) (columns of W1 and W3, rows of W2). The residual stream is the whole
//     sequence on every rank, so the norms run on every token on every rank; the MLP's output
//     is all-reduced in the forward and its input gradient in the backward, as the attention
//     layer's are;
//   tp-v3: the same weights; the residual stream is sequence-sharded, so the norms run on the
//     rank's tokens; the MLP all-gathers H2 and reduce-scatters its output (backward: dY and
//     dH2), keeping the gathered H2 for the weight gradients; the norm weights' gradients are
//     all-reduced, since each rank saw only its tokens.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "burst/layer.h"

namespace burst::algo {

struct BlockShape {
  LayerShape attention;      // D, heads, kv heads, head dim
  std::int64_t mlp_dim = 0;  // F, the MLP's hidden width
  double norm_eps = 1e-5;    // RMSNorm's epsilon
  std::string describe() const;
};

// The MLP's hidden units one rank holds.
struct HiddenShard {
  std::int64_t first = 0, count = 0;
};
// All of them: the sequence-parallel strategies.
HiddenShard all_hidden(const BlockShape& shape);
// Rank `rank`'s slice under tensor parallelism; throws when F is not a multiple of P.
HiddenShard tensor_parallel_hidden(const BlockShape& shape, int world, int rank);

// Why `strategy` cannot run this block over `ranks` ranks ("" when it can): the attention
// layer's reason (the registry's cannot_run as a layer), or tensor parallelism's F % P.
std::string block_cannot_run(Strategy strategy, const BlockShape& shape, int ranks, const StrategyOptions& options);

// One block's weights on one rank: the attention layer's (Parameters) and, in a second
// buffer (so their gradients all-reduce as one message), g1 [D], g2 [D], W1 [D, f], W3 [D, f]
// and W2 [f, D] for the f hidden units held. Move-only.
class BlockParameters {
 public:
  BlockParameters() = default;
  BlockParameters(const BlockShape& shape, const HeadShard& heads, const HiddenShard& hidden);
  Parameters& attention() { return attention_; }
  const Parameters& attention() const { return attention_; }
  const float* g1() const { return g1_; }
  const float* g2() const { return g2_; }
  float* g1() { return g1_; }
  float* g2() { return g2_; }
  MatrixView w1() const { return w1_; }
  MatrixView w3() const { return w3_; }
  MatrixView w2() const { return w2_; }
  // The norm and MLP buffer (g1, g2, W1, W3, W2 back to back).
  float* mlp_data() const { return buffer_.as<float>(); }
  std::size_t mlp_count() const { return count_; }
  std::size_t count() const { return attention_.count() + count_; }
  std::size_t bytes() const { return count() * sizeof(float); }
  void fill_nan();

 private:
  Parameters attention_;
  AlignedBuffer buffer_;
  std::size_t count_ = 0;
  float *g1_ = nullptr, *g2_ = nullptr;
  MatrixView w1_, w3_, w2_;
};

// Seeded weights of the whole block: the attention layer's as random_parameters, the norm
// gains near 1 (1 + N(0, 0.1^2)), W1 and W3 N(0, 1/D), W2 N(0, 1/F).
BlockParameters random_block_parameters(const BlockShape& shape, std::uint64_t seed);
// The part of `full` that `heads` and `hidden` cover (the norm gains whole).
BlockParameters shard_block_parameters(const BlockParameters& full, const BlockShape& shape, const HeadShard& heads,
                                       const HiddenShard& hidden);

// What one pass of a block (or, summed, of a stack) did on this rank.
struct BlockStats {
  LayerStats attention;                // the attention layer: its core, collectives, weight gradients
  std::uint64_t mlp_bytes_sent = 0;    // the MLP's collectives (tensor parallelism)
  std::uint64_t grad_bytes_sent = 0;   // the norm and MLP weight gradients' all-reduce (backward)
  double seconds = 0;                  // the whole pass
  double mlp_seconds = 0;              // the MLP's products and SwiGLU
  double norm_seconds = 0;             // the norms and residuals
  double collective_seconds = 0;       // in the MLP's collectives and its gradients' all-reduce
  // Everything this rank sent; without the weight gradients' all-reduces (the attention
  // layer's and the block's): what the strategy itself costs.
  std::uint64_t bytes_sent() const { return attention.bytes_sent() + mlp_bytes_sent + grad_bytes_sent; }
  std::uint64_t activation_bytes_sent() const {
    return attention.attention.bytes_sent + attention.layer_bytes_sent + mlp_bytes_sent;
  }
  BlockStats& operator+=(const BlockStats& other);
};

// The bytes rank `rank` sends in one block's own collectives, apart from the attention layer
// (expected_layer_traffic) and its core (the registry's bytes): the MLP's (tp-v1 all-reduces
// its output and input gradient; tp-v3 all-gathers H2 and reduce-scatters the output, and in
// the backward dY and dH2) and the weight gradients' all-reduce of the norms and the MLP
// (sequence parallelism: g1, g2, W1, W3, W2 over every rank; tp-v3: g1, g2; tp-v1: none, every
// rank computed the whole sequence's).
struct BlockTraffic {
  std::uint64_t forward = 0, backward = 0, grads = 0;
};
BlockTraffic expected_block_traffic(Strategy strategy, const BlockShape& shape, std::int64_t batch,
                                    const std::vector<std::int64_t>& shard_lengths, int rank);

// Memory of one rank running a stack of `layers` blocks, phase by phase as block.cpp
// allocates: the activations every block saves for the backward (its input X, X2, the
// inverse RMS of both norms, H2 as the MLP reads it, W1's and W3's outputs, and the attention
// layer's own), and each pass's peak. Parameters and their gradients count all layers.
LayerMemory block_memory(Strategy strategy, const BlockShape& shape, std::int64_t batch,
                         const std::vector<std::int64_t>& shard_lengths, DType dtype, bool backward,
                         const StrategyOptions& options, const PassBytes& kernel, int layers);

// One rank's share of one block. Forward saves what backward needs; a backward must follow
// its forward. Move-constructible, not copyable.
class TransformerBlock {
 public:
  // options.attention.mask.documents may be temporary (the attention layer copies them).
  TransformerBlock(comm::Communicator& comm, const BlockShape& shape, const LayerOptions& options);

  const HeadShard& heads() const { return layer_.heads(); }
  const HiddenShard& hidden() const { return hidden_; }
  // The token positions of this rank's X and Y rows (the attention layer's).
  const std::vector<std::int64_t>& positions() const { return layer_.positions(); }
  std::int64_t rows() const { return layer_.rows(); }

  // x, y: [b, rows(), 1, D] fp32, y may not alias x. params: the full block for
  // sequence-parallel strategies, shard_block_parameters(full, shape, heads(), hidden()) for
  // tensor parallelism. Collective.
  BlockStats forward(const BlockParameters& params, const TensorView& x, const TensorView& y);
  // dy, dx: [b, rows(), 1, D] fp32 (may alias each other); grads shaped like params,
  // overwritten with the gradient of the whole block (summed over every rank's tokens).
  // Collective.
  BlockStats backward(const BlockParameters& params, const TensorView& dy, const TensorView& dx,
                      BlockParameters& grads);

  // Bytes of the activations forward saved for backward on this rank (the attention layer's
  // included).
  std::size_t saved_bytes() const;

 private:
  bool tensor_parallel() const;
  void check_parameters(const BlockParameters& params, const char* name) const;

  comm::Communicator& comm_;
  BlockShape shape_;
  LayerOptions options_;
  AttentionLayer layer_;
  HiddenShard hidden_;
  std::vector<std::vector<std::int64_t>> plan_;  // every rank's tokens (tp-v3's gathers)
  // Saved by forward.
  Tensor x_, x2_;          // the block's input and the residual after attention
  Tensor h2_;              // H2 as the MLP reads it (tp-v3: gathered)
  Tensor up_, gate_;       // H2 W1 and H2 W3 on those rows
  std::vector<float> inv_rms1_, inv_rms2_;  // per row of x_ and x2_
  std::int64_t batch_ = 0;
};

// `layers` blocks, each with its own weights, applied in order. Collective.
class BlockStack {
 public:
  BlockStack(comm::Communicator& comm, const BlockShape& shape, const LayerOptions& options, int layers);
  int layers() const { return static_cast<int>(blocks_.size()); }
  TransformerBlock& block(int i) { return blocks_[static_cast<std::size_t>(i)]; }
  const TransformerBlock& block(int i) const { return blocks_[static_cast<std::size_t>(i)]; }
  std::int64_t rows() const { return blocks_.front().rows(); }
  const std::vector<std::int64_t>& positions() const { return blocks_.front().positions(); }

  // params[i] are block i's; x, y as TransformerBlock::forward. Stats summed over the blocks.
  BlockStats forward(const std::vector<BlockParameters>& params, const TensorView& x, const TensorView& y);
  BlockStats backward(const std::vector<BlockParameters>& params, const TensorView& dy, const TensorView& dx,
                      std::vector<BlockParameters>& grads);
  std::size_t saved_bytes() const;

 private:
  std::vector<TransformerBlock> blocks_;
};

}  // namespace burst::algo
