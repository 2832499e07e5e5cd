// Local attention kernels (LAO): exact, tiled attention of one query shard against one key/value
// shard. The score matrix is never materialised beyond one block_m x block_n tile per thread.
//
// Conventions used throughout:
//   tensors   [b, s, h, d] views (burst/tensor.h), fp32 or bf16 storage, fp32 arithmetic;
//   lse       natural-log log-sum-exp of each scaled, masked score row, [b, h, s] fp32;
//             a row that sees no key has lse = -inf and output 0;
//   positions GLOBAL token positions of queries and keys, so a call can serve any pair of
//             shards of a ring (contiguous, zigzag or striped);
//   GQA       n_heads_q = group * n_heads_kv; query head h reads kv head h / group.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "burst/tensor.h"

namespace burst::kernels {

// Global positions of the tokens on one side of a call: token i sits at ids[i] when ids is
// set (any order, e.g. a striped shard), else at offset + i.
struct Positions {
  const std::int64_t* ids = nullptr;
  std::int64_t offset = 0;

  std::int64_t at(std::int64_t i) const { return ids != nullptr ? ids[i] : offset + i; }
};

// Which (query, key) pairs may attend, in global positions. A negative window side is
// unbounded.
struct MaskSpec {
  bool causal = false;             // key <= query
  std::int64_t window_left = -1;   // key >= query - window_left
  std::int64_t window_right = -1;  // key <= query + window_right
  // Packed documents: the boundaries 0 = c_0 < c_1 < ... < c_D = N of D documents laid back
  // to back in one sequence of N tokens (flash-attn's cu_seqlens); a query sees only keys of
  // its own document, on top of causal and the window. Empty: one document (no boundary).
  // The array is the caller's and must outlive every call that reads the mask; positions
  // must then lie in [0, N).
  std::span<const std::int64_t> documents;

  // Index of the document holding `position` (0 without documents).
  std::int64_t document_of(std::int64_t position) const {
    if (documents.empty()) return 0;
    return std::upper_bound(documents.begin(), documents.end(), position) - documents.begin() - 1;
  }
  // The keys a query at q sees form one run of positions, [first, last] (empty when
  // last < first): its window, cut at q for causal and at the ends of its document.
  struct KeyRange {
    std::int64_t first, last;
  };
  KeyRange key_range(std::int64_t q) const {
    constexpr std::int64_t kFar = std::int64_t{1} << 62;
    KeyRange r{window_left >= 0 ? q - window_left : -kFar, window_right >= 0 ? q + window_right : kFar};
    if (causal) r.last = std::min(r.last, q);
    if (!documents.empty()) {
      const auto doc = static_cast<std::size_t>(document_of(q));
      r.first = std::max(r.first, documents[doc]);
      r.last = std::min(r.last, documents[doc + 1] - 1);
    }
    return r;
  }
  bool visible(std::int64_t q, std::int64_t k) const {
    if (!((!causal || k <= q) && (window_left < 0 || k >= q - window_left) &&
          (window_right < 0 || k <= q + window_right))) {
      return false;
    }
    return documents.empty() || document_of(q) == document_of(k);
  }
  bool has_documents() const { return documents.size() > 2; }
  bool masks_anything() const {
    return causal || window_left >= 0 || window_right >= 0 || has_documents();
  }
};

// Instruction-set implementations of the tile work, best first. kAuto takes the best one the
// processor supports among those auto may pick; the BURST_ISA environment variable
// (amxbf16, amxbf16-emulated, avx512bf16, avx512, avx2, generic) overrides kAuto.
// amxbf16 is avx512bf16 with bf16 inputs' products on AMX tiles (where the processor has
// AMX-BF16 and Linux grants this process the tile state); amxbf16-emulated is the same code
// with the tile instructions emulated in plain C++, a test and debugging aid on processors
// without AMX. Auto picks neither: amxbf16 is unmeasured (docs/performance.md). avx512bf16 is
// avx512 plus bf16 dot products; the others widen bf16 tiles to fp32.
enum class Isa { kAuto, kAmxBf16, kAmxBf16Emulated, kAvx512Bf16, kAvx512, kAvx2, kGeneric };

std::string isa_name(Isa isa);
// Parses a name isa_name gives; throws naming `what` otherwise.
Isa parse_isa(const std::string& text, const std::string& what);
// The implementations this processor can run, best first (never kAuto).
std::vector<Isa> supported_isas();
// Whether kAuto may resolve to `isa` (not the AMX ones, until amxbf16 is measured faster).
bool chosen_by_auto(Isa isa);
// What kAuto resolves to now (after BURST_ISA).
Isa resolve_isa(Isa requested);

// The most threads one rank may use (AttentionOptions::threads); more is a mistake, refused
// before any thread starts.
constexpr int kMaxThreads = 1024;

// Compute emulation (docs/emulation.md): a call with AttentionOptions::emulate set computes
// nothing; it waits, passively and calling `progress` as a computing call would between
// tiles, for the time this model gives the tiles it would have computed: every tile of the
// call's grid that its mask does not skip (a partly masked tile costs its whole area, as it
// does in the real kernels), 4 m n d FLOPs per m x n tile and query head forward, 10 m n d
// backward, at the rates below, plus a fixed cost per call. A forward without a running
// state writes zeros to out and lse (finite values for what follows: merges, sends); a
// continued forward and the backward leave their outputs as they were. Results are not
// attention: emulated runs measure schedules, overlap and links only.
struct EmulatedCompute {
  double forward_flops = 0;   // FLOP/s of one rank's forward calls, > 0
  double backward_flops = 0;  // FLOP/s of one rank's backward calls, > 0
  double call_seconds = 0;    // added to every call
};

struct AttentionOptions {
  MaskSpec mask;
  Positions q_pos;  // default: queries at 0..seqlen_q-1
  Positions k_pos;  // default: keys at 0..seqlen_k-1
  std::optional<float> scale;  // softmax scale; default 1/sqrt(head_dim)
  int threads = 1;             // threads of the calling rank, caller included
  int block_m = 0;             // query rows per tile; 0: chosen by head_dim (default_tile)
  int block_n = 0;             // key rows per tile; 0: chosen by head_dim
  Isa isa = Isa::kAuto;
  // Called between tiles, on the calling thread only (worker 0 of the pool), so a
  // distributed caller can keep posted transfers moving while this rank computes
  // (communicators whose transfers need the caller's thread, such as MPI's). Keep it cheap.
  std::function<void()> progress;
  // When set, the latest time `progress` needs calling again (Communicator::progress_due):
  // an emulated call sleeps until then instead of polling every 200 us, which with dozens of
  // idle ranks on a few cores spent them on context switches. Computing calls ignore it.
  std::function<std::chrono::steady_clock::time_point()> progress_due;
  // Set: the call is emulated (EmulatedCompute above) instead of computed.
  std::shared_ptr<const EmulatedCompute> emulate;
};

constexpr std::int64_t kMaxHeadDim = 256;

// Default tile (block_m, block_n) for a head dim: as large as keeps a forward tile's working
// set (Q, accumulator, K, V, scores) within this processor's L2 (default_tile_for_cache with
// the L2 size per core the system reports, 1 MiB if it reports none), because each K/V tile
// loaded is then reused by more query rows (docs/performance.md has the measurements).
struct Tile {
  int block_m, block_n;
};
Tile default_tile(std::int64_t head_dim);
// The tile a call with `options` uses: options' block sizes where given, else default_tile,
// capped at 64 x 128 when the mask has documents. Diagonal tiles and tiles across a document
// boundary are partly masked but cost their full area, and documents of a few hundred tokens
// make them common: with 128K tokens of the pretrain distribution (docs/packed-documents.md),
// 64 x 128 ran the forward 19% and the backward 4% faster than 256 x 256.
Tile call_tile(std::int64_t head_dim, const AttentionOptions& options);
// The largest square tile of 256, 128, 64 or 32 rows whose forward working set,
// 4 (2 d m + m n + 2 n d) bytes, fits 3/4 of `l2_bytes`: 256 x 256 for d <= 128 and 128 x 128
// for d = 256 with a 1 MiB L2.
Tile default_tile_for_cache(std::int64_t head_dim, std::int64_t l2_bytes);

// Bytes a forward and a backward call allocate beyond their arguments: the per-thread tile
// workspaces for options.threads threads, on the route such a call takes (fused fp32, bf16
// dot products or BLAS tiles; docs/performance.md), with options' tile or the default one.
// Memory estimates use this rather than repeat the kernels' array lists.
struct WorkspaceBytes {
  std::int64_t forward = 0, backward = 0;
};
WorkspaceBytes workspace_bytes(DType dtype, std::int64_t head_dim, const AttentionOptions& options = {});

// Computes out = softmax(scale * q k^T, masked) v and its lse.
// q [b, seqlen_q, n_heads_q, d]; k, v [b, seqlen_k, n_heads_kv, d] (same dtype as q);
// out [b, seqlen_q, n_heads_q, d] fp32 or bf16; lse [b, n_heads_q, seqlen_q].
void attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                       const TensorView& out, const RowStatsView& lse,
                       const AttentionOptions& options = {});

// Continues a running result with one more key/value block. The fp32 `out` and `lse` hold a
// normalised partial result over the keys seen so far (start from init_forward_state) and
// are updated in place to cover k, v as well, so a ring needs no separate merge pass.
void attention_forward_continue(const TensorView& q, const TensorView& k, const TensorView& v,
                                const TensorView& out, const RowStatsView& lse,
                                const AttentionOptions& options = {});

// Sets a running state to "no key seen yet": out = 0 (fp32), lse = -inf.
void init_forward_state(const TensorView& out, const RowStatsView& lse);

// Merges the partial (other_out, other_lse) into (out, lse), both normalised over disjoint
// key sets: lse' = logaddexp(lse, other), out' = out + sigmoid(other - lse) (other_out - out).
// An empty partial (lse = -inf) is the identity. out is fp32; other_out fp32 or bf16.
void merge_partials(const TensorView& out, const RowStatsView& lse, const TensorView& other_out,
                    const RowStatsView& other_lse, int threads = 1);

// Computes delta = rowsum(dout * out) per query row and head, [b, n_heads_q, seqlen_q].
void compute_delta(const TensorView& dout, const TensorView& out, const RowStatsView& delta,
                   int threads = 1);

// Adds the gradients of this (q shard, k/v shard) pair to dq, dk, dv (fp32; accumulated, not
// overwritten). lse and delta are the GLOBAL ones of the query rows (over every key shard).
void attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& dout, const RowStatsView& lse,
                        const RowStatsView& delta, const TensorView& dq, const TensorView& dk,
                        const TensorView& dv, const AttentionOptions& options = {});

// Fraction of (query, key) pairs the mask lets through: the FLOP scale of a masked call.
double visible_fraction(std::int64_t seqlen_q, std::int64_t seqlen_k,
                        const AttentionOptions& options);

// Checks q, k, v and the options against each other as every kernel call does (ranks, dtypes,
// head counts, head_dim, threads, tile sizes); throws burst::Error naming the first argument
// that does not fit, with the expected and actual value.
void check_inputs(const TensorView& q, const TensorView& k, const TensorView& v, const AttentionOptions& options);

}  // namespace burst::kernels
