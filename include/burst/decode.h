// Long-context inference over a KV cache sharded across the ranks of a communicator: prefill
// of a prompt with BurstAttention's forward, then token-by-token decoding (or chunks of new
// tokens) whose queries visit the cache where it lies.
//
// Decode step (strategy burst): every rank attends the new token's query to its own cache
// shard (split over its threads, so the shard is read once at memory bandwidth) and gets a
// normalised partial (O, lse); the partials merge exactly with the ring's fp32 merge in one
// recursive-doubling all-reduce of b h (d + 1) values per new token, log2 P rounds whatever the
// context length. The merge order is fixed (the lower group's partial first), so every rank
// ends with bitwise the same result. The new token's K/V goes to the rank holding the fewest
// tokens, so the shards stay balanced; a rank whose tokens all lie outside a sliding window
// computes nothing.
//
// Baselines on the same interface: tensor-parallel decode (strategy tp: each rank holds every
// token of its share of the kv heads and all-gathers the heads' outputs) and a ring that passes
// the cache shards (strategy ring: bytes grow with the context, which is why decoding must not
// move the cache).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "burst/burst_attention.h"
#include "burst/communicator.h"
#include "burst/kernels.h"
#include "burst/tensor.h"

namespace burst::algo {

enum class DecodeStrategy { kBurst, kTensorParallel, kRing };
std::string decode_strategy_name(DecodeStrategy s);  // "burst", "tp", "ring"
// Parses "burst", "tp", "ring"; throws naming `what` otherwise.
DecodeStrategy parse_decode_strategy(const std::string& text, const std::string& what);

struct DecodeOptions {
  // Keys a query at position p sees: p - window_left .. p (negative: the whole past).
  std::int64_t window_left = -1;
  std::optional<float> scale;  // default 1/sqrt(head_dim)
  int threads = 1;             // kernel threads of this rank
  kernels::Isa isa = kernels::Isa::kAuto;
};

// What one call did on this rank.
struct DecodeStats {
  std::uint64_t bytes_sent = 0;  // by this rank, counted by the communicator
  double compute_seconds = 0;    // in the local kernels and merges
  double wait_seconds = 0;       // in communication
  bool skipped = false;          // no cached token of this rank was visible (window)
};

// One rank's share of a KV cache of `batch` sequences (the same length each).
// burst, ring: sharded by tokens (every kv head); tp: sharded by kv heads (every token).
class KvCache {
 public:
  // `capacity` tokens of this rank are reserved up front (the cache grows past it by
  // doubling). n_heads_kv must be divisible by the ranks for tp.
  KvCache(comm::Communicator& comm, DecodeStrategy strategy, std::int64_t batch, std::int64_t n_heads_kv,
          std::int64_t head_dim, DType dtype, std::int64_t capacity = 0);

  DecodeStrategy strategy() const { return strategy_; }
  std::int64_t size() const { return size_; }  // tokens of every sequence, over all ranks
  std::int64_t local_size() const { return static_cast<std::int64_t>(positions_.size()); }
  // Global positions of this rank's tokens, in cache order.
  const std::vector<std::int64_t>& local_positions() const { return positions_; }
  // Tokens each rank holds (token-sharded caches), identical on every rank.
  const std::vector<std::int64_t>& tokens_per_rank() const { return per_rank_; }
  // Kv heads this rank holds: [first, first + count) (all of them unless tp).
  std::int64_t first_kv_head() const { return first_head_; }
  std::int64_t local_kv_heads() const { return local_heads_; }
  std::int64_t batch() const { return batch_; }
  std::int64_t head_dim() const { return head_dim_; }
  std::int64_t kv_heads() const { return kv_heads_; }
  DType dtype() const { return dtype_; }
  // This rank's keys and values: [batch, local_size, local_kv_heads, head_dim].
  TensorView keys() const;
  TensorView values() const;
  // Bytes of cache this rank holds (filled tokens; reserve() adds to the allocation only).
  std::size_t bytes() const;
  // The rank the next token goes to: the one holding the fewest (lowest on ties).
  int next_owner() const;

  // Appends tokens whose K/V rows are given for this rank's heads ([batch, n, local heads or
  // all heads, d]) at the given global positions (called by prefill and extend).
  void append(const TensorView& k, const TensorView& v, const std::vector<std::int64_t>& positions,
              std::int64_t first_head);
  // Records tokens another rank appended.
  void count(int rank, std::int64_t tokens);

 private:
  void reserve(std::int64_t tokens);

  DecodeStrategy strategy_;
  int rank_, world_;
  std::int64_t batch_, kv_heads_, head_dim_, first_head_, local_heads_;
  DType dtype_;
  Tensor k_, v_;  // [batch, capacity, local heads, d]
  std::int64_t capacity_ = 0, size_ = 0;
  std::vector<std::int64_t> positions_, per_rank_;
};

// Prefill of a prompt on an empty token-sharded cache: q [b, n_r, n_heads_q, d] and k, v
// [b, n_r, n_heads_kv, d] are this rank's shards of the prompt in options.layout (positions
// 0..options.seqlen-1), as for burst_forward, which computes out and lse (this rank's rows,
// causal); k and v then stay in the cache.
StrategyStats prefill(comm::Communicator& comm, KvCache& cache, const TensorView& q, const TensorView& k,
                  const TensorView& v, const TensorView& out, const RowStatsView& lse, const BurstOptions& options);

// Appends C >= 1 new tokens at positions cache.size() .. cache.size() + C - 1 and attends their
// queries to the whole cache (causally, within the window): q [b, C, n_heads_q, d], k, v
// [b, C, n_heads_kv, d] are the same on every rank (each rank keeps the rows it owns); out
// [b, C, n_heads_q, d] fp32 and lse [b, n_heads_q, C] are set on every rank, bitwise alike for
// burst and tp. C = 1 is one decode step; a larger C is a chunk of prompt prefilled onto the
// cache. Collective.
DecodeStats extend(comm::Communicator& comm, KvCache& cache, const TensorView& q, const TensorView& k,
                   const TensorView& v, const TensorView& out, const RowStatsView& lse, const DecodeOptions& options);

// Bytes `rank` sends in one extend of `tokens` new tokens: burst, the recursive-doubling
// all-reduce of (O, lse) in fp32; tp, the all-gather of its heads' (O, lse); ring, its K/V
// passes (cache_tokens_per_rank: the ranks' token counts after the append).
std::uint64_t extend_bytes(DecodeStrategy strategy, int world_size, int rank, std::int64_t batch,
                           std::int64_t n_heads_q, std::int64_t n_heads_kv, std::int64_t head_dim, std::int64_t tokens,
                           std::size_t cache_element_bytes, const std::vector<std::int64_t>& cache_tokens_per_rank);

}  // namespace burst::algo
