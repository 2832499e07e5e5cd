// The multi-head attention layer every strategy is compared on, tensor parallelism included:
//   Q = X Wq, K = X Wk, V = X Wv  (GQA-shaped: Hq query heads, Hkv key/value heads of d)
//   Q, K rotated by RoPE at each token's position in its document: position - c_i for a
//     token of document i = [c_i, c_{i+1}) of packed documents (mask.documents), so every
//     document is rotated as if it were a sequence of its own, as packed-sequence training
//     does; without documents the global token position, whatever the shard or layout.
//     Scores depend only on query-key distances and no query sees another document, so Y and
//     the gradients equal global rotation's in exact arithmetic; Q and K themselves (saved,
//     rounded to a bf16 core) are those of the document run alone (docs/layer.md)
//   O = attention(Q, K, V)        (the strategy's distributed attention core)
//   Y = O Wo
// X and Y are [b, s, D] (stored as [b, s, 1, D] tensors); parameters are fp32, and so are
// the projections; the attention core's inputs may be bf16.
//
// How the ranks share the work:
//   sequence-parallel strategies (burst, ring, ring-rsa, allgather, ulysses, usp): every rank
//     holds the full weights and its sequence shard of X and Y (the layout's local order);
//     backward all-reduces the weight gradients, so every rank ends with the same ones;
//   tp-v1 (Megatron): weights split by heads (rank r: query heads [r Hq/P, (r+1) Hq/P) and
//     their key/value heads, with the rows of Wo that read them); X and Y are the whole
//     sequence on every rank; forward all-reduces Y, backward all-reduces dX;
//   tp-v3 (Megatron with sequence parallelism): the same weights; X and Y are sequence
//     shards; forward all-gathers X and reduce-scatters Y, backward all-gathers dY and
//     reduce-scatters dX. The gathered X is kept for the weight gradients instead of being
//     gathered again (one all-gather fewer, N D floats more per rank).
// With fewer key/value heads than ranks (Hkv < P, P a multiple of Hkv) tensor parallelism
// replicates each key/value head on P / Hkv ranks and sums its weight gradients over them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "burst/linear.h"
#include "burst/strategy.h"
#include "burst/tensor.h"

namespace burst::algo {

struct LayerShape {
  std::int64_t model_dim = 0;  // D
  std::int64_t heads = 0;      // Hq
  std::int64_t kv_heads = 0;   // Hkv, divides Hq
  std::int64_t head_dim = 0;   // d, even (RoPE)
  std::string describe() const;
};

// The query and key/value heads one rank holds.
struct HeadShard {
  std::int64_t q_first = 0, q_count = 0;
  std::int64_t kv_first = 0, kv_count = 0;
  int kv_sharers = 1;  // ranks holding the same key/value heads (> 1 when replicated)
};
// All heads: the sequence-parallel strategies.
HeadShard all_heads(const LayerShape& shape);
// Rank `rank`'s heads under tensor parallelism over `world` ranks; throws when Hq is not a
// multiple of P, or Hkv is neither a multiple nor a divisor of P.
HeadShard tensor_parallel_heads(const LayerShape& shape, int world, int rank);

// The four projections in one buffer (so their gradients all-reduce as one message):
// wq [D, q d], wk [D, kv d], wv [D, kv d], wo [q d, D] for the q query and kv key/value heads
// held. Move-only.
class Parameters {
 public:
  Parameters() = default;
  Parameters(std::int64_t model_dim, std::int64_t q_heads, std::int64_t kv_heads, std::int64_t head_dim);
  MatrixView wq() const { return wq_; }
  MatrixView wk() const { return wk_; }
  MatrixView wv() const { return wv_; }
  MatrixView wo() const { return wo_; }
  float* data() const { return buffer_.as<float>(); }
  std::size_t count() const { return count_; }
  std::size_t bytes() const { return count_ * sizeof(float); }
  void fill_nan();

 private:
  AlignedBuffer buffer_;
  std::size_t count_ = 0;
  MatrixView wq_, wk_, wv_, wo_;
};

// Seeded N(0, 1/fan_in) weights of the full layer.
Parameters random_parameters(const LayerShape& shape, std::uint64_t seed);
// The columns of Wq, Wk, Wv and the rows of Wo that belong to `heads`.
Parameters shard_parameters(const Parameters& full, const LayerShape& shape, const HeadShard& heads);

// attention.mask.documents (packed documents) may point at a temporary array: AttentionLayer
// copies the boundaries and points its own options at the copy, so the caller's array need
// only live through the constructor.
struct LayerOptions {
  Strategy strategy = Strategy::kBurst;
  StrategyOptions attention;    // seqlen N, layout, mask, threads, ... of the attention core
  DType dtype = DType::kF32;    // the attention core's Q, K, V and dO
  double rope_base = 10000.0;   // 0: no rotary embedding
};

// What one forward or backward call did on this rank.
struct LayerStats {
  StrategyStats attention;             // the attention core (tensor parallelism: local)
  std::uint64_t layer_bytes_sent = 0;  // the layer's own collectives (tp: X, Y, dY, dX)
  std::uint64_t grad_bytes_sent = 0;   // the weight-gradient all-reduce (backward)
  double seconds = 0, attention_seconds = 0, projection_seconds = 0;
  double collective_seconds = 0;       // in the layer's own collectives (all exposed)
  std::uint64_t bytes_sent() const { return attention.bytes_sent + layer_bytes_sent + grad_bytes_sent; }
};

// The bytes a rank sends in the layer's own collectives (not the attention core's):
// tp-v3 forward all-gathers X ((P - 1) n_r rows) and reduce-scatters Y (N - n_r rows),
// backward the same for dY and dX; tp-v1 all-reduces Y and dX (2 (P - 1) ceil(b N D / P)
// floats each); the weight-gradient all-reduce is 2 (P - 1) ceil(W / P) floats over the
// ranks that share a weight (all ranks for sequence parallelism; the replicas of a
// key/value head under tp).
struct LayerTraffic {
  std::uint64_t forward = 0, backward = 0, grads = 0;
};
LayerTraffic expected_layer_traffic(Strategy strategy, const LayerShape& shape, std::int64_t batch,
                                    const std::vector<std::int64_t>& shard_lengths, int rank);

// Memory of one rank running the layer (forward, and backward when asked) on its rows, bytes,
// phase by phase as layer.cpp allocates: X and Y rows (backward: dY, dX and the weight
// gradients), the saved activations, the temporaries, and the attention core's buffers
// (StrategyInfo::workspace; `kernel` is one local kernel call's scratch). The parameters are
// apart: a program may share one copy of the full weights among its ranks.
struct MemoryPart {
  std::string name;
  double bytes = 0;
};
struct LayerMemory {
  double parameters = 0;  // the weights a rank reads: all of them, or its heads' (tensor parallelism)
  double saved = 0;       // the activations forward saves for backward (AttentionLayer::saved_bytes)
  std::vector<MemoryPart> forward, backward;  // each pass at its peak, parameters aside
  double held = 0;  // after the passes: rows, saved activations and the gradients' buffers
};
LayerMemory layer_memory(Strategy strategy, const LayerShape& shape, std::int64_t batch,
                         const std::vector<std::int64_t>& shard_lengths, DType dtype, bool backward,
                         const StrategyOptions& options, const PassBytes& kernel);

// One rank's share of the layer. Forward saves what backward needs (X, the rotated Q and K,
// V, O and lse); a backward must follow its forward. Move-constructible (the copy of the
// document boundaries moves with it), not copyable.
class AttentionLayer {
 public:
  AttentionLayer(comm::Communicator& comm, const LayerShape& shape, const LayerOptions& options);

  // The heads this rank computes, and the token positions of its X rows.
  const HeadShard& heads() const { return heads_; }
  const std::vector<std::int64_t>& positions() const { return positions_; }
  // The rotary positions of the Q and K rows this rank rotates (its X rows; tp: every token):
  // each token's position minus the first position of its document.
  const std::vector<std::int64_t>& rope_positions() const { return rope_positions_; }
  // Rows of X and Y on this rank: n_r (sequence shards) or N (tp-v1).
  std::int64_t rows() const { return static_cast<std::int64_t>(positions_.size()); }

  // x, y: [b, rows(), 1, D] fp32. params: the full weights for sequence-parallel strategies,
  // shard_parameters(full, shape, heads()) for tensor parallelism. Collective.
  LayerStats forward(const Parameters& params, const TensorView& x, const TensorView& y);
  // dy, dx: [b, rows(), 1, D] fp32; grads shaped like params, overwritten with the gradient
  // of the whole layer (summed over every rank's tokens). Collective.
  LayerStats backward(const Parameters& params, const TensorView& dy, const TensorView& dx, Parameters& grads);

  // Bytes of the activations forward saved for backward on this rank.
  std::size_t saved_bytes() const;

 private:
  bool tensor_parallel() const;
  void check_inputs(const Parameters& params, const TensorView& x, const char* x_name) const;
  void project(const Parameters& params, LayerStats& stats);
  void attention_forward(LayerStats& stats);
  void attention_backward(const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv,
                          LayerStats& stats);

  comm::Communicator& comm_;
  LayerShape shape_;
  LayerOptions options_;                  // options_.attention.mask.documents points at documents_
  std::vector<std::int64_t> documents_;   // the layer's copy of the document boundaries
  HeadShard heads_;
  std::vector<std::vector<std::int64_t>> plan_;  // every rank's tokens (sequence shards)
  std::vector<std::int64_t> positions_;          // this rank's X rows
  std::vector<std::int64_t> attention_positions_;  // this rank's Q rows
  std::vector<std::int64_t> rope_positions_;       // their rotary positions (within documents)
  std::unique_ptr<comm::Communicator> kv_group_;   // tp: the replicas of this rank's kv heads
  // Saved by forward.
  Tensor x_, q_, k_, v_, out_;  // x_: the rows the projections read (tp-v3: gathered)
  RowStats lse_;
  std::int64_t batch_ = 0;
};

}  // namespace burst::algo
