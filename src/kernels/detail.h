// Internals shared by the forward and backward drivers: checked problem geometry, per-block
// position bounds for skipping masked tiles, and tile loading.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "burst/tensor.h"
#include "burst/kernels.h"
#include "kernels/tile_ops.h"

namespace burst::kernels::detail {

// Sizes of one kernel call, validated once.
struct Geometry {
  std::int64_t b = 0, seqlen_q = 0, seqlen_k = 0, n_heads_q = 0, n_heads_kv = 0, d = 0;
  std::int64_t group = 1;  // query heads per kv head
  int block_m = 0, block_n = 0;
  std::int64_t n_qblocks = 0, n_kblocks = 0;
  float scale = 0.0f;
};

// Checks q, k, v (and options) against each other and returns the geometry; throws
// burst::Error naming the first argument that does not fit.
Geometry check_qkv(const TensorView& q, const TensorView& k, const TensorView& v,
                   const AttentionOptions& options);
// Checks a mask's document boundaries: empty, or 0 = c_0 < c_1 < ... < c_D <= 2^31.
void check_documents(const MaskSpec& mask);

// The tile code masks by position windows only. A call with documents runs on coordinates
// that make "same document" a window condition: token p of document j sits at p + j N
// (N = c_D), and unbounded window sides become N, so two tokens of one document keep their
// distance (< N) while tokens of different documents are more than N apart. Every pair is
// masked exactly as MaskSpec::visible says; tiles and whole calls whose documents do not
// meet are skipped by the same bounds tests as windows. Returns `options` itself when it has
// no documents, else a copy with coordinate ids (kept in `storage`) and no documents; throws
// naming q_pos or k_pos when a position lies outside [0, N).
struct DocumentCoordinates {
  AttentionOptions options;
  std::vector<std::int64_t> q_ids, k_ids;
};
const AttentionOptions& resolve_documents(const AttentionOptions& options, std::int64_t seqlen_q,
                                          std::int64_t seqlen_k, std::optional<DocumentCoordinates>& storage);

// Checks that `t` is [b, s, h, d] like `like` (dtype given separately), naming both.
void check_same_shape(const TensorView& t, const char* name, const TensorView& like,
                      const char* like_name);
void check_dtype(const TensorView& t, const char* name, DType expected);
void check_stats(const RowStatsView& stats, const char* name, std::int64_t b, std::int64_t h,
                 std::int64_t s);

// Smallest and largest position of each block of `block` consecutive tokens.
struct BlockBounds {
  std::vector<std::int64_t> lo, hi;
};
BlockBounds block_bounds(const Positions& pos, std::int64_t n, int block);

enum class TileVisibility { kNone, kPartial, kFull };
// Classifies a tile from its position bounds. kNone and kFull are exact claims; anything
// uncertain (possible with unordered positions) is kPartial and masked element-wise.
TileVisibility classify(const MaskSpec& mask, std::int64_t q_lo, std::int64_t q_hi,
                        std::int64_t k_lo, std::int64_t k_hi);

// Positions of tokens [first, first + n) into out.
void fill_positions(const Positions& pos, std::int64_t first, int n, std::int64_t* out);

// Rows [s0, s0 + rows) of head h of batch ib as an fp32 matrix: the tensor itself when it is
// fp32 (leading dimension stride_s), else converted into `scratch` (leading dimension d).
struct Rows {
  const float* data;
  std::int64_t ld;
};
Rows load_rows(const TensorView& t, std::int64_t ib, std::int64_t s0, int rows, std::int64_t h,
               float* scratch, const TileOps& ops);

// Floats that hold n elements of `bytes` bytes (a bf16 or 32-bit word array in a Workspace).
constexpr std::int64_t floats_holding(std::int64_t n, std::int64_t bytes) { return (n * bytes + 3) / 4; }

// The arrays of one worker's scratch: element counts of its fp32 and int64 arrays.
struct WorkspaceLayout {
  std::vector<std::int64_t> floats, ints;
  // Bytes per worker, each array rounded up to 64 bytes as Workspace places them.
  std::size_t bytes_per_worker() const;
};

// Per-worker scratch: a fixed list of fp32 and int64 arrays per worker, each 64-byte aligned,
// carved from one allocation made per kernel call (O(tile) per worker).
class Workspace {
 public:
  Workspace(const WorkspaceLayout& layout, int workers);
  float* floats(int worker, std::size_t index) const {
    return reinterpret_cast<float*>(base(worker) + float_offsets_[index]);
  }
  std::int64_t* ints(int worker, std::size_t index) const {
    return reinterpret_cast<std::int64_t*>(base(worker) + int_offsets_[index]);
  }

 private:
  char* base(int worker) const {
    return buffer_.as<char>() + static_cast<std::size_t>(worker) * per_worker_;
  }
  std::vector<std::size_t> float_offsets_, int_offsets_;
  std::size_t per_worker_ = 0;
  AlignedBuffer buffer_;
};

// Which (query, key) pairs of a tile are visible: row i of a product's output and row r of
// its right operand B sit at c_pos[i] and b_pos[r], queries on the output side when
// c_is_query (O = P V, dQ = dS K), keys otherwise (dV = P^T dO, dK = dS^T Q).
struct TilePairs {
  const std::int64_t* c_pos;
  const std::int64_t* b_pos;
  bool c_is_query;
  const MaskSpec& mask;

  bool visible(std::int64_t i, std::int64_t r) const {
    return c_is_query ? mask.visible(c_pos[i], b_pos[r]) : mask.visible(b_pos[r], c_pos[i]);
  }
};

// C (m x n, ldc) += alpha op(A) B with op(A) = A (m x k, lda) or A^T (A is k x m), B k x n
// (ldb): sgemm with beta = 1 for a partially masked tile whose A is 0 at every masked pair.
// A non-finite element of B would reach every row of C through 0 * inf or 0 * NaN = NaN,
// also the rows masked from it; so when B holds one (rare: the check reads B once, k x n
// next to the 2 m n k of the product) the product runs on a copy of B in `scratch` (k x n
// floats) with those elements zeroed, and they are added back over visible pairs only.
void sgemm_visible(bool trans_a, int m, int n, int k, float alpha, const float* a,
                   std::int64_t lda, const float* b, std::int64_t ldb, float* c, std::int64_t ldc,
                   const TilePairs& pairs, float* scratch);

// The scratch of one forward or backward call per worker, on the route the call takes
// (forward.cpp, backward.cpp): what the calls allocate and what workspace_bytes reports.
WorkspaceLayout forward_workspace_layout(const Geometry& g, const TileOps& ops, DType dtype);
WorkspaceLayout backward_workspace_layout(const Geometry& g, const TileOps& ops, DType dtype);

// The route a kernel call takes (src/kernels/README.md, "Routes"), for all its tiles:
//   kAmx    bf16 inputs on an AMX implementation (TileOps::amx): tile products (amx.h);
//   kFused  the lanes layout (tile_ops.h) where the instruction set has the lanes products and
//           the inputs are fp32 or the set takes bf16 too (TileOps::fused_bf16: avx512bf16);
//   kBlas   otherwise, and for both dtypes when BURST_FP32_ROUTE is "blas", which forces the
//           per-tile BLAS route (the only route before the others), e.g. to compare them.
enum class Route { kBlas, kFused, kAmx };

// The number of bf16 parts (2 or 3: amx.h, "The split") the AMX route splits its fp32
// operands (P and dS) into: 3, or BURST_AMX_SPLIT for measurements (docs/numerics.md).
int amx_parts();
Route route_of(const TileOps& ops, DType dtype);
const char* route_name(Route route);
inline bool fused_route(const TileOps& ops, DType dtype) { return route_of(ops, dtype) == Route::kFused; }

// Rows [s0, s0 + rows) of head h of batch ib transposed into lanes layout (bf16 widened to
// fp32): dst[x * ld + i] = t[ib, s0 + i, h, x], lanes rows..lanes_padded(rows) zeroed.
void pack_lanes(const TensorView& t, std::int64_t ib, std::int64_t s0, int rows, std::int64_t h, float* dst,
                std::int64_t ld);

// The mask seen from a lanes-layout tile whose rows are keys and whose lanes are queries:
// apply_mask(s, ld, keys, queries, kpos, qpos, transposed_mask(mask), fill) masks exactly
// the pairs apply_mask(s^T, ..., qpos, kpos, mask, fill) does.
MaskSpec transposed_mask(const MaskSpec& mask);

// c_t (d x lanes, ld_c) = c_t diag(factor) + b^T t, b nb x d (ld_b), t nb x lanes (ld_t), for a
// partially masked tile whose t is 0 at every masked pair: TileOps::accumulate_lanes, except
// that a non-finite element of b reaches only the lanes that see its row (pairs.visible(lane,
// row of b), for the first `count` lanes: the tokens, without padding), like sgemm_visible;
// `scratch` holds nb x d floats.
void accumulate_lanes_visible(const TileOps& ops, const float* b, std::int64_t ld_b, int nb, int d,
                              const float* t, std::int64_t ld_t, int lanes, int count, const float* factor,
                              float* c_t, std::int64_t ld_c, const TilePairs& pairs, float* scratch);

// The terms of non-finite values of a bf16 operand y (nr rows x d, leading dimension ld_y)
// that its product on the AMX route leaves out (the packing writes them as 0: a split fp32
// operand's zero part times an infinity would be NaN, and a masked pair's 0 times a NaN
// would reach rows masked from it): for every non-finite y[r][x] and every c < nc that sees
// row r (pairs->visible(c, r); every c when pairs is null),
//   out[c * out_c + x * out_x] += alpha f[c * f_c + r * f_r] y[r][x].
// So y's non-finite values reach exactly the outputs of visible pairs, with IEEE arithmetic
// on the unsplit fp32 factor f (docs/numerics.md, "Non-finite inputs").
void add_non_finite_terms(const bf16_bits* y, std::int64_t ld_y, int nr, int d, const float* f, std::int64_t f_c,
                          std::int64_t f_r, int nc, float alpha, float* out, std::int64_t out_c, std::int64_t out_x,
                          const TilePairs* pairs);

// Adds `rows` x d of src (leading dimension d) into the fp32 rows of t.
void add_rows(const TensorView& t, std::int64_t ib, std::int64_t s0, int rows, std::int64_t h,
              const float* src);
// Adds alpha times `rows` lanes of the lanes-layout src (d x lanes, leading dimension ld) into
// the fp32 rows of t: t[ib, s0 + i, h, x] += alpha src[x * ld + i].
void add_lanes(const TensorView& t, std::int64_t ib, std::int64_t s0, int rows, std::int64_t h,
               const float* src, std::int64_t ld, float alpha);

}  // namespace burst::kernels::detail
