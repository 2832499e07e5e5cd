#include "kernels/detail.h"

#include <algorithm>
#include <bit>
#include <cmath>

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
  Geometry g;
  g.b = q.b;
  g.seqlen_q = q.s;
  g.seqlen_k = k.s;
  g.n_heads_q = q.h;
  g.n_heads_kv = k.h;
  g.d = q.d;
  g.group = q.h / k.h;
  const Tile tile = default_tile(g.d);
  g.block_m = options.block_m > 0 ? options.block_m : tile.block_m;
  g.block_n = options.block_n > 0 ? options.block_n : tile.block_n;
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

Workspace::Workspace(std::vector<std::int64_t> float_sizes, std::vector<std::int64_t> int_sizes,
                     int workers) {
  auto place = [this](std::int64_t bytes) {
    const std::size_t at = per_worker_;
    per_worker_ += (static_cast<std::size_t>(bytes) + 63) / 64 * 64;
    return at;
  };
  for (std::int64_t n : float_sizes) float_offsets_.push_back(place(n * 4));
  for (std::int64_t n : int_sizes) int_offsets_.push_back(place(n * 8));
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

Tile default_tile(std::int64_t head_dim) {
  return head_dim <= 128 ? Tile{256, 256} : Tile{128, 128};
}

void check_inputs(const TensorView& q, const TensorView& k, const TensorView& v, const AttentionOptions& options) {
  detail::check_qkv(q, k, v, options);
}

}  // namespace burst::kernels
