#include "kernels/detail.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <string>

#include <unistd.h>

#include "burst/error.h"
#include "core/thread_pool.h"
#include "kernels/blas.h"

namespace burst::kernels::detail {
namespace {

void check_rank4(const TensorView& t, const char* name) {
  BURST_CHECK(t.data != nullptr, name, ": expected data, got a null pointer");
  BURST_CHECK(t.b >= 1 && t.s >= 1 && t.h >= 1 && t.d >= 1, name,
              ": expected every dimension >= 1, got ", t.shape_string());
}

}  // namespace

void check_same_shape(const TensorView& t, const char* name, const TensorView& like,
                      const char* like_name) {
  check_rank4(t, name);
  BURST_CHECK(t.b == like.b && t.s == like.s && t.h == like.h && t.d == like.d, name,
              ": expected the shape of ", like_name, " [", like.b, ", ", like.s, ", ", like.h,
              ", ", like.d, "], got ", t.shape_string());
}

void check_dtype(const TensorView& t, const char* name, DType expected) {
  BURST_CHECK(t.dtype == expected, name, ": expected dtype ", dtype_name(expected), ", got ",
              dtype_name(t.dtype));
}

void check_stats(const RowStatsView& stats, const char* name, std::int64_t b, std::int64_t h,
                 std::int64_t s) {
  BURST_CHECK(stats.data != nullptr, name, ": expected data, got a null pointer");
  BURST_CHECK(stats.b == b && stats.h == h && stats.s == s, name, ": expected [", b, ", ", h,
              ", ", s, "], got [", stats.b, ", ", stats.h, ", ", stats.s, "]");
}

static_assert(kMaxThreads == ThreadPool::kMaxThreads, "one limit on threads per rank");

void check_documents(const MaskSpec& mask) {
  const auto& c = mask.documents;
  if (c.empty()) return;
  BURST_CHECK(c.size() >= 2, "documents: expected at least 2 boundaries (0 and the sequence length), got ", c.size());
  BURST_CHECK(c.front() == 0, "documents: expected the first boundary to be 0, got ", c.front());
  for (std::size_t i = 1; i < c.size(); ++i) {
    BURST_CHECK(c[i] > c[i - 1], "documents: expected increasing boundaries (every document at least one token), got ",
                c[i - 1], " then ", c[i], " at index ", i);
  }
  BURST_CHECK(c.back() <= (std::int64_t{1} << 31), "documents: expected at most 2^31 tokens, got ", c.back());
}

namespace {

// Coordinates of `n` positions (see resolve_documents).
std::vector<std::int64_t> document_coordinates(const MaskSpec& mask, const Positions& pos, std::int64_t n,
                                               const char* what) {
  const std::int64_t total = mask.documents.back();
  std::vector<std::int64_t> out(static_cast<std::size_t>(n));
  std::int64_t doc = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t p = pos.at(i);
    BURST_CHECK(p >= 0 && p < total, what, ": expected positions in [0, ", total, ") (the documents' tokens), got ", p,
                " at index ", i);
    // Positions usually ascend: try the current document before searching.
    const auto d = static_cast<std::size_t>(doc);
    if (!(mask.documents[d] <= p && p < mask.documents[d + 1])) doc = mask.document_of(p);
    out[static_cast<std::size_t>(i)] = p + doc * total;
  }
  return out;
}

}  // namespace

const AttentionOptions& resolve_documents(const AttentionOptions& options, std::int64_t seqlen_q,
                                          std::int64_t seqlen_k, std::optional<DocumentCoordinates>& storage) {
  const MaskSpec& m = options.mask;
  if (m.documents.empty()) return options;
  DocumentCoordinates& c = storage.emplace(DocumentCoordinates{options, {}, {}});
  const std::int64_t total = m.documents.back();
  c.q_ids = document_coordinates(m, options.q_pos, seqlen_q, "q_pos");
  c.k_ids = document_coordinates(m, options.k_pos, seqlen_k, "k_pos");
  c.options.q_pos = Positions{c.q_ids.data(), 0};
  c.options.k_pos = Positions{c.k_ids.data(), 0};
  c.options.mask.documents = {};
  c.options.mask.window_left = m.window_left >= 0 ? std::min(m.window_left, total) : total;
  c.options.mask.window_right = m.window_right >= 0 ? std::min(m.window_right, total) : total;
  return c.options;
}

Geometry check_qkv(const TensorView& q, const TensorView& k, const TensorView& v,
                   const AttentionOptions& options) {
  check_rank4(q, "q");
  check_rank4(k, "k");
  check_same_shape(v, "v", k, "k");
  BURST_CHECK(k.dtype == q.dtype, "k: expected the dtype of q (", dtype_name(q.dtype), "), got ",
              dtype_name(k.dtype));
  BURST_CHECK(v.dtype == q.dtype, "v: expected the dtype of q (", dtype_name(q.dtype), "), got ",
              dtype_name(v.dtype));
  BURST_CHECK(k.b == q.b, "k: expected batch ", q.b, " like q, got ", k.b);
  BURST_CHECK(k.d == q.d, "k: q has head_dim ", q.d, " but k has ", k.d);
  BURST_CHECK(q.d <= kMaxHeadDim, "q: expected head_dim <= ", kMaxHeadDim, ", got ", q.d);
  BURST_CHECK(q.h % k.h == 0, "k: n_heads_q (", q.h, ") must be a multiple of n_heads_kv, got ",
              k.h);
  BURST_CHECK(options.threads >= 1, "threads: expected >= 1, got ", options.threads);
  BURST_CHECK(options.block_m >= 0 && options.block_m <= 4096,
              "block_m: expected 1..4096 (or 0 for the default), got ", options.block_m);
  BURST_CHECK(options.block_n >= 0 && options.block_n <= 4096,
              "block_n: expected 1..4096 (or 0 for the default), got ", options.block_n);
  if (options.scale) {
    BURST_CHECK(std::isfinite(*options.scale), "scale: expected a finite value, got ",
                *options.scale);
  }
  check_documents(options.mask);
  Geometry g;
  g.b = q.b;
  g.seqlen_q = q.s;
  g.seqlen_k = k.s;
  g.n_heads_q = q.h;
  g.n_heads_kv = k.h;
  g.d = q.d;
  g.group = q.h / k.h;
  const Tile tile = call_tile(g.d, options);
  g.block_m = tile.block_m;
  g.block_n = tile.block_n;
  g.n_qblocks = (g.seqlen_q + g.block_m - 1) / g.block_m;
  g.n_kblocks = (g.seqlen_k + g.block_n - 1) / g.block_n;
  g.scale = options.scale ? *options.scale : 1.0f / std::sqrt(static_cast<float>(g.d));
  return g;
}

BlockBounds block_bounds(const Positions& pos, std::int64_t n, int block) {
  const std::int64_t blocks = (n + block - 1) / block;
  BlockBounds out;
  out.lo.resize(static_cast<std::size_t>(blocks));
  out.hi.resize(static_cast<std::size_t>(blocks));
  for (std::int64_t j = 0; j < blocks; ++j) {
    const std::int64_t first = j * block;
    const std::int64_t last = std::min(n, first + block) - 1;
    std::int64_t lo = pos.at(first), hi = lo;
    if (pos.ids == nullptr) {
      hi = pos.at(last);
    } else {
      for (std::int64_t i = first + 1; i <= last; ++i) {
        lo = std::min(lo, pos.ids[i]);
        hi = std::max(hi, pos.ids[i]);
      }
    }
    out.lo[static_cast<std::size_t>(j)] = lo;
    out.hi[static_cast<std::size_t>(j)] = hi;
  }
  return out;
}

TileVisibility classify(const MaskSpec& mask, std::int64_t q_lo, std::int64_t q_hi,
                        std::int64_t k_lo, std::int64_t k_hi) {
  const bool left = mask.window_left >= 0, right = mask.window_right >= 0;
  // Any single constraint that excludes every pair excludes the tile.
  if (mask.causal && k_lo > q_hi) return TileVisibility::kNone;
  if (left && k_hi < q_lo - mask.window_left) return TileVisibility::kNone;
  if (right && k_lo > q_hi + mask.window_right) return TileVisibility::kNone;
  const bool all = (!mask.causal || k_hi <= q_lo) && (!left || k_lo >= q_hi - mask.window_left) &&
                   (!right || k_hi <= q_lo + mask.window_right);
  return all ? TileVisibility::kFull : TileVisibility::kPartial;
}

void fill_positions(const Positions& pos, std::int64_t first, int n, std::int64_t* out) {
  for (int i = 0; i < n; ++i) out[i] = pos.at(first + i);
}

Rows load_rows(const TensorView& t, std::int64_t ib, std::int64_t s0, int rows, std::int64_t h,
               float* scratch, const TileOps& ops) {
  if (t.dtype == DType::kF32) return {t.row<const float>(ib, s0, h), t.stride_s};
  for (int i = 0; i < rows; ++i) {
    ops.bf16_to_f32(t.row<const bf16_bits>(ib, s0 + i, h), scratch + i * t.d, t.d);
  }
  return {scratch, t.d};
}

std::size_t WorkspaceLayout::bytes_per_worker() const {
  std::size_t bytes = 0;
  for (std::int64_t n : floats) bytes += (static_cast<std::size_t>(n) * 4 + 63) / 64 * 64;
  for (std::int64_t n : ints) bytes += (static_cast<std::size_t>(n) * 8 + 63) / 64 * 64;
  return bytes;
}

Workspace::Workspace(const WorkspaceLayout& layout, int workers) {
  auto place = [this](std::int64_t bytes) {
    const std::size_t at = per_worker_;
    per_worker_ += (static_cast<std::size_t>(bytes) + 63) / 64 * 64;
    return at;
  };
  for (std::int64_t n : layout.floats) float_offsets_.push_back(place(n * 4));
  for (std::int64_t n : layout.ints) int_offsets_.push_back(place(n * 8));
  buffer_ = AlignedBuffer(per_worker_ * static_cast<std::size_t>(workers));
}

namespace {

// Whether x (rows x cols, leading dimension ld) holds an infinity or a NaN: all exponent bits
// set. Integer tests, so the loop vectorises without reassociating floating point.
bool any_non_finite(const float* x, std::int64_t ld, int rows, int cols) {
  std::uint32_t found = 0;
  for (int r = 0; r < rows; ++r) {
    const float* row = x + r * ld;
    for (int j = 0; j < cols; ++j) {
      found |= static_cast<std::uint32_t>((std::bit_cast<std::uint32_t>(row[j]) & 0x7f800000u) == 0x7f800000u);
    }
  }
  return found != 0;
}

}  // namespace

void sgemm_visible(bool trans_a, int m, int n, int k, float alpha, const float* a,
                   std::int64_t lda, const float* b, std::int64_t ldb, float* c, std::int64_t ldc,
                   const TilePairs& pairs, float* scratch) {
  if (!any_non_finite(b, ldb, k, n)) {
    sgemm(trans_a, false, m, n, k, alpha, a, lda, b, ldb, 1.0f, c, ldc);
    return;
  }
  for (int r = 0; r < k; ++r) {
    for (int x = 0; x < n; ++x) {
      const float v = b[r * ldb + x];
      scratch[r * n + x] = std::isfinite(v) ? v : 0.0f;
    }
  }
  sgemm(trans_a, false, m, n, k, alpha, a, lda, scratch, n, 1.0f, c, ldc);
  for (int r = 0; r < k; ++r) {
    for (int x = 0; x < n; ++x) {
      const float v = b[r * ldb + x];
      if (std::isfinite(v)) continue;
      for (int i = 0; i < m; ++i) {
        if (!pairs.visible(i, r)) continue;
        const float a_ir = trans_a ? a[r * lda + i] : a[i * lda + r];
        c[i * ldc + x] += alpha * a_ir * v;
      }
    }
  }
}

Route route_of(const TileOps& ops, DType dtype) {
  static const bool forced_blas = [] {
    const char* env = std::getenv("BURST_FP32_ROUTE");
    if (env == nullptr || *env == '\0') return false;
    const std::string route = env;
    BURST_CHECK(route == "fused" || route == "blas", "BURST_FP32_ROUTE: expected fused or blas, got '", route,
                "'");
    return route == "blas";
  }();
  if (forced_blas) return Route::kBlas;
  if (dtype == DType::kBF16 && ops.amx != nullptr) return Route::kAmx;
  if (ops.scores_lanes == nullptr || ops.accumulate_lanes == nullptr) return Route::kBlas;
  return dtype == DType::kF32 || ops.fused_bf16 ? Route::kFused : Route::kBlas;
}

int amx_parts() {
  static const int parts = [] {
    const char* env = std::getenv("BURST_AMX_SPLIT");
    if (env == nullptr || *env == '\0') return 3;
    const std::string text = env;
    BURST_CHECK(text == "2" || text == "3", "BURST_AMX_SPLIT: expected 2 or 3, got '", text, "'");
    return text == "2" ? 2 : 3;
  }();
  return parts;
}

const char* route_name(Route route) {
  switch (route) {
    case Route::kAmx: return "AMX tiles";
    case Route::kFused: return "fused";
    case Route::kBlas: return "BLAS tiles";
  }
  return "?";
}

void add_non_finite_terms(const bf16_bits* y, std::int64_t ld_y, int nr, int d, const float* f, std::int64_t f_c,
                          std::int64_t f_r, int nc, float alpha, float* out, std::int64_t out_c, std::int64_t out_x,
                          const TilePairs* pairs) {
  for (int r = 0; r < nr; ++r) {
    for (int x = 0; x < d; ++x) {
      const float v = bf16_to_float(y[r * ld_y + x]);
      if (std::isfinite(v)) continue;
      for (int c = 0; c < nc; ++c) {
        if (pairs == nullptr || pairs->visible(c, r)) out[c * out_c + x * out_x] += alpha * f[c * f_c + r * f_r] * v;
      }
    }
  }
}

void pack_lanes(const TensorView& t, std::int64_t ib, std::int64_t s0, int rows, std::int64_t h, float* dst,
                std::int64_t ld) {
  const std::int64_t lanes = lanes_padded(rows);
  for (std::int64_t x = 0; x < t.d; ++x) std::fill(dst + x * ld + rows, dst + x * ld + lanes, 0.0f);
  for (int i = 0; i < rows; ++i) {
    if (t.dtype == DType::kF32) {
      const float* src = t.row<const float>(ib, s0 + i, h);
      for (std::int64_t x = 0; x < t.d; ++x) dst[x * ld + i] = src[x];
    } else {
      const bf16_bits* src = t.row<const bf16_bits>(ib, s0 + i, h);
      for (std::int64_t x = 0; x < t.d; ++x) dst[x * ld + i] = bf16_to_float(src[x]);
    }
  }
}

MaskSpec transposed_mask(const MaskSpec& mask) {
  // visible(q, k) <=> q - left <= k <= q + up, up = min(right, 0 if causal): so, from the
  // key's side, k - up <= q <= k + left.
  std::int64_t up = mask.window_right;
  if (mask.causal) up = up < 0 ? 0 : std::min<std::int64_t>(up, 0);
  return MaskSpec{false, up, mask.window_left, {}};
}

void accumulate_lanes_visible(const TileOps& ops, const float* b, std::int64_t ld_b, int nb, int d,
                              const float* t, std::int64_t ld_t, int lanes, int count, const float* factor,
                              float* c_t, std::int64_t ld_c, const TilePairs& pairs, float* scratch) {
  if (!any_non_finite(b, ld_b, nb, d)) {
    ops.accumulate_lanes(b, ld_b, nb, d, t, ld_t, lanes, factor, c_t, ld_c);
    return;
  }
  for (int r = 0; r < nb; ++r) {
    for (int x = 0; x < d; ++x) {
      const float v = b[r * ld_b + x];
      scratch[r * d + x] = std::isfinite(v) ? v : 0.0f;
    }
  }
  ops.accumulate_lanes(scratch, d, nb, d, t, ld_t, lanes, factor, c_t, ld_c);
  for (int r = 0; r < nb; ++r) {
    for (int x = 0; x < d; ++x) {
      const float v = b[r * ld_b + x];
      if (std::isfinite(v)) continue;
      for (int i = 0; i < count; ++i) {
        if (pairs.visible(i, r)) c_t[x * ld_c + i] += t[r * ld_t + i] * v;
      }
    }
  }
}

void add_lanes(const TensorView& t, std::int64_t ib, std::int64_t s0, int rows, std::int64_t h,
               const float* src, std::int64_t ld, float alpha) {
  for (int i = 0; i < rows; ++i) {
    float* dst = t.row<float>(ib, s0 + i, h);
    for (std::int64_t x = 0; x < t.d; ++x) dst[x] += alpha * src[x * ld + i];
  }
}

void add_rows(const TensorView& t, std::int64_t ib, std::int64_t s0, int rows, std::int64_t h,
              const float* src) {
  for (int i = 0; i < rows; ++i) {
    float* dst = t.row<float>(ib, s0 + i, h);
    const float* s = src + i * t.d;
    for (std::int64_t c = 0; c < t.d; ++c) dst[c] += s[c];
  }
}

}  // namespace burst::kernels::detail

namespace burst::kernels {

Tile default_tile_for_cache(std::int64_t head_dim, std::int64_t l2_bytes) {
  int rows = 256;
  for (; rows > 32; rows /= 2) {
    const std::int64_t m = rows, working_set = 4 * (2 * head_dim * m + m * m + 2 * m * head_dim);
    if (4 * working_set <= 3 * l2_bytes) break;
  }
  return {rows, rows};
}

Tile default_tile(std::int64_t head_dim) {
  static const std::int64_t l2_bytes = [] {
    const long reported = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return reported > 0 ? static_cast<std::int64_t>(reported) : std::int64_t{1} << 20;
  }();
  return default_tile_for_cache(head_dim, l2_bytes);
}

Tile call_tile(std::int64_t head_dim, const AttentionOptions& options) {
  Tile tile = default_tile(head_dim);
  if (options.mask.has_documents()) tile = {std::min(tile.block_m, 64), std::min(tile.block_n, 128)};
  return {options.block_m > 0 ? options.block_m : tile.block_m, options.block_n > 0 ? options.block_n : tile.block_n};
}

WorkspaceBytes workspace_bytes(DType dtype, std::int64_t head_dim, const AttentionOptions& options) {
  BURST_CHECK(head_dim >= 1 && head_dim <= kMaxHeadDim, "head_dim: expected 1..", kMaxHeadDim, ", got ", head_dim);
  BURST_CHECK(options.threads >= 1, "threads: expected >= 1, got ", options.threads);
  const Tile tile = call_tile(head_dim, options);
  detail::Geometry g;
  g.d = head_dim;
  g.block_m = tile.block_m;
  g.block_n = tile.block_n;
  const TileOps& ops = tile_ops(options.isa);
  const auto total = [&](const detail::WorkspaceLayout& layout) {
    return static_cast<std::int64_t>(layout.bytes_per_worker()) * options.threads;
  };
  return {total(detail::forward_workspace_layout(g, ops, dtype)),
          total(detail::backward_workspace_layout(g, ops, dtype))};
}

void check_inputs(const TensorView& q, const TensorView& k, const TensorView& v, const AttentionOptions& options) {
  detail::check_qkv(q, k, v, options);
}

}  // namespace burst::kernels
