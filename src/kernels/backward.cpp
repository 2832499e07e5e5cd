// Backward driver. Two passes keep every output written by exactly one task, so results are
// bitwise reproducible for any thread count and no thread needs more than tile-sized memory:
//   pass 1, one task per (batch, kv head, key block):    dK_j, dV_j over all query blocks
//           and the `group` query heads that share the kv head;
//   pass 2, one task per (batch, query head, query block): dQ_i over all key blocks.
// Both passes recompute P = exp(scale Q K^T - lse) and dS = P (dP - delta) per tile; the
// price is two extra GEMMs per tile (7 instead of 5), paid to avoid atomics or O(s) buffers.
#include <algorithm>

#include "burst/error.h"
#include "core/thread_pool.h"
#include "burst/kernels.h"
#include "kernels/blas.h"
#include "kernels/detail.h"

namespace burst::kernels {
namespace {

using detail::Geometry;
using detail::TileVisibility;

enum BackwardArray { kQ, kDO, kK, kV, kP, kDS, kAccA, kAccB, kKPacked, kVPacked, kFinite };

struct BackwardCall {
  const TensorView &q, &k, &v, &dout;
  const RowStatsView &lse, &delta;
  const TensorView &dq, &dk, &dv;
  const AttentionOptions& opt;
  const Geometry& g;
  const TileOps& ops;
  const detail::BlockBounds &qb, &kb;
  const detail::Workspace& ws;
  bool bf16_dot;  // S = Q K^T and dP = dO V^T by bf16 dot products
};

// Rows of one tile as fp32 matrices. On the bf16 dot-product route only the operands of the
// fp32 GEMMs are widened, by the pass that needs them; S and dP read bf16 directly.
struct TileRows {
  detail::Rows q, dout, k, v;
  int rows, cols;
  bool partial;  // some pair of the tile is masked: products go through sgemm_visible
};

// C += alpha op(A) B for one tile: a plain sgemm when every pair is visible, else
// sgemm_visible, which keeps a non-finite row of B out of the rows of C masked from it.
void tile_gemm(const BackwardCall& c, const TileRows& t, int worker, bool trans_a, int m, int k,
               float alpha, const float* a, std::int64_t lda, const detail::Rows& b, float* out,
               bool out_is_query) {
  const int d = static_cast<int>(c.g.d);
  if (!t.partial) {
    sgemm(trans_a, false, m, d, k, alpha, a, lda, b.data, b.ld, 1.0f, out, d);
    return;
  }
  const std::int64_t* qpos = c.ws.ints(worker, 0);
  const std::int64_t* kpos = c.ws.ints(worker, 1);
  const detail::TilePairs pairs{out_is_query ? qpos : kpos, out_is_query ? kpos : qpos, out_is_query,
                                c.opt.mask};
  detail::sgemm_visible(trans_a, m, d, k, alpha, a, lda, b.data, b.ld, out, d, pairs,
                        c.ws.floats(worker, kFinite));
}

std::uint32_t* packed_keys(const BackwardCall& c, int worker) {
  return reinterpret_cast<std::uint32_t*>(c.ws.floats(worker, kKPacked));
}
std::uint32_t* packed_values(const BackwardCall& c, int worker) {
  return reinterpret_cast<std::uint32_t*>(c.ws.floats(worker, kVPacked));
}

// Packs key block jb of kv head kvh (K and V) for the dot-product route.
void pack_key_block(const BackwardCall& c, std::int64_t ib, std::int64_t kvh, std::int64_t jb,
                    int worker) {
  const std::int64_t k0 = jb * c.g.block_n;
  const int cols = static_cast<int>(std::min<std::int64_t>(c.g.block_n, c.g.seqlen_k - k0));
  const int d = static_cast<int>(c.g.d);
  c.ops.pack_bf16_keys(c.k.row<const bf16_bits>(ib, k0, kvh), c.k.stride_s, cols, d, packed_keys(c, worker));
  c.ops.pack_bf16_keys(c.v.row<const bf16_bits>(ib, k0, kvh), c.v.stride_s, cols, d, packed_values(c, worker));
}

// Computes P and dS of tile (query block iqb of head ih, key block jb) into the worker's
// kP and kDS arrays; returns false when the tile is fully masked. On the dot-product route
// the caller has packed the key block (pack_key_block).
bool tile_probs_and_ds(const BackwardCall& c, std::int64_t ib, std::int64_t ih, std::int64_t iqb,
                       std::int64_t jb, int worker, TileRows& t) {
  const Geometry& g = c.g;
  const auto vis = detail::classify(c.opt.mask, c.qb.lo[iqb], c.qb.hi[iqb], c.kb.lo[jb], c.kb.hi[jb]);
  if (vis == TileVisibility::kNone) return false;
  if (worker == 0 && c.opt.progress) c.opt.progress();
  const std::int64_t q0 = iqb * g.block_m, k0 = jb * g.block_n;
  const std::int64_t kvh = ih / g.group;
  t.rows = static_cast<int>(std::min<std::int64_t>(g.block_m, g.seqlen_q - q0));
  t.cols = static_cast<int>(std::min<std::int64_t>(g.block_n, g.seqlen_k - k0));
  float* p = c.ws.floats(worker, kP);
  float* ds = c.ws.floats(worker, kDS);
  const std::int64_t ld = g.block_n;

  if (c.bf16_dot) {
    const int d = static_cast<int>(g.d);
    c.ops.gemm_bf16_qkt(c.q.row<const bf16_bits>(ib, q0, ih), c.q.stride_s, t.rows,
                        packed_keys(c, worker), t.cols, d, g.scale, p, ld);
    c.ops.gemm_bf16_qkt(c.dout.row<const bf16_bits>(ib, q0, ih), c.dout.stride_s, t.rows,
                        packed_values(c, worker), t.cols, d, 1.0f, ds, ld);
  } else {
    t.q = detail::load_rows(c.q, ib, q0, t.rows, ih, c.ws.floats(worker, kQ), c.ops);
    t.dout = detail::load_rows(c.dout, ib, q0, t.rows, ih, c.ws.floats(worker, kDO), c.ops);
    t.k = detail::load_rows(c.k, ib, k0, t.cols, kvh, c.ws.floats(worker, kK), c.ops);
    t.v = detail::load_rows(c.v, ib, k0, t.cols, kvh, c.ws.floats(worker, kV), c.ops);
    // S = scale Q K^T and dP = dO V^T.
    sgemm(false, true, t.rows, t.cols, g.d, g.scale, t.q.data, t.q.ld, t.k.data, t.k.ld, 0.0f, p, ld);
    sgemm(false, true, t.rows, t.cols, g.d, 1.0f, t.dout.data, t.dout.ld, t.v.data, t.v.ld, 0.0f, ds, ld);
  }
  // P = exp(S - lse), then dS = P (dP - delta); masked entries of both become 0 afterwards
  // (not -inf scores before): a NaN lse, or a non-finite Q, K, dO or V row, makes the masked
  // entries NaN too, and they must not reach the gradients of rows that never see them.
  c.ops.probs_from_lse(p, ld, t.rows, t.cols, c.lse.row(ib, ih) + q0);
  c.ops.ds_from_dp(ds, ld, p, ld, t.rows, t.cols, c.delta.row(ib, ih) + q0);
  t.partial = vis == TileVisibility::kPartial;
  if (t.partial) {
    std::int64_t* qpos = c.ws.ints(worker, 0);
    std::int64_t* kpos = c.ws.ints(worker, 1);
    detail::fill_positions(c.opt.q_pos, q0, t.rows, qpos);
    detail::fill_positions(c.opt.k_pos, k0, t.cols, kpos);
    c.ops.apply_mask(p, ld, t.rows, t.cols, qpos, kpos, c.opt.mask, 0.0f);
    c.ops.apply_mask(ds, ld, t.rows, t.cols, qpos, kpos, c.opt.mask, 0.0f);
  }
  return true;
}

void key_block_grads(const BackwardCall& c, std::int64_t ib, std::int64_t kvh, std::int64_t jb,
                     int worker) {
  const Geometry& g = c.g;
  const std::int64_t k0 = jb * g.block_n;
  const int cols = static_cast<int>(std::min<std::int64_t>(g.block_n, g.seqlen_k - k0));
  float* dk_acc = c.ws.floats(worker, kAccA);
  float* dv_acc = c.ws.floats(worker, kAccB);
  std::fill_n(dk_acc, cols * g.d, 0.0f);
  std::fill_n(dv_acc, cols * g.d, 0.0f);
  const float* p = c.ws.floats(worker, kP);
  const float* ds = c.ws.floats(worker, kDS);
  TileRows t{};
  if (c.bf16_dot) pack_key_block(c, ib, kvh, jb, worker);
  for (std::int64_t ih = kvh * g.group; ih < (kvh + 1) * g.group; ++ih) {
    for (std::int64_t iqb = 0; iqb < g.n_qblocks; ++iqb) {
      if (!tile_probs_and_ds(c, ib, ih, iqb, jb, worker, t)) continue;
      if (c.bf16_dot) {
        const std::int64_t q0 = iqb * g.block_m;
        t.q = detail::load_rows(c.q, ib, q0, t.rows, ih, c.ws.floats(worker, kQ), c.ops);
        t.dout = detail::load_rows(c.dout, ib, q0, t.rows, ih, c.ws.floats(worker, kDO), c.ops);
      }
      // dV += P^T dO;  dK += scale dS^T Q   (cols x d)
      tile_gemm(c, t, worker, true, cols, t.rows, 1.0f, p, g.block_n, t.dout, dv_acc, false);
      tile_gemm(c, t, worker, true, cols, t.rows, g.scale, ds, g.block_n, t.q, dk_acc, false);
    }
  }
  detail::add_rows(c.dk, ib, k0, cols, kvh, dk_acc);
  detail::add_rows(c.dv, ib, k0, cols, kvh, dv_acc);
}

void query_block_grads(const BackwardCall& c, std::int64_t ib, std::int64_t ih, std::int64_t iqb,
                       int worker) {
  const Geometry& g = c.g;
  const std::int64_t q0 = iqb * g.block_m;
  const int rows = static_cast<int>(std::min<std::int64_t>(g.block_m, g.seqlen_q - q0));
  float* dq_acc = c.ws.floats(worker, kAccA);
  std::fill_n(dq_acc, rows * g.d, 0.0f);
  const float* ds = c.ws.floats(worker, kDS);
  TileRows t{};
  const std::int64_t kvh = ih / g.group;
  for (std::int64_t jb = 0; jb < g.n_kblocks; ++jb) {
    if (c.bf16_dot) {
      const auto vis = detail::classify(c.opt.mask, c.qb.lo[iqb], c.qb.hi[iqb], c.kb.lo[jb], c.kb.hi[jb]);
      if (vis == TileVisibility::kNone) continue;
      pack_key_block(c, ib, kvh, jb, worker);
    }
    if (!tile_probs_and_ds(c, ib, ih, iqb, jb, worker, t)) continue;
    if (c.bf16_dot) {
      t.k = detail::load_rows(c.k, ib, jb * g.block_n, t.cols, kvh, c.ws.floats(worker, kK), c.ops);
    }
    // dQ += scale dS K   (rows x d)
    tile_gemm(c, t, worker, false, rows, t.cols, g.scale, ds, g.block_n, t.k, dq_acc, true);
  }
  detail::add_rows(c.dq, ib, q0, rows, ih, dq_acc);
}

}  // namespace

void attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& dout, const RowStatsView& lse,
                        const RowStatsView& delta, const TensorView& dq, const TensorView& dk,
                        const TensorView& dv, const AttentionOptions& opt) {
  const Geometry g = detail::check_qkv(q, k, v, opt);
  detail::check_same_shape(dout, "dout", q, "q");
  detail::check_dtype(dout, "dout", q.dtype);
  detail::check_stats(lse, "lse", g.b, g.n_heads_q, g.seqlen_q);
  detail::check_stats(delta, "delta", g.b, g.n_heads_q, g.seqlen_q);
  detail::check_same_shape(dq, "dq", q, "q");
  detail::check_same_shape(dk, "dk", k, "k");
  detail::check_same_shape(dv, "dv", k, "k");
  detail::check_dtype(dq, "dq", DType::kF32);
  detail::check_dtype(dk, "dk", DType::kF32);
  detail::check_dtype(dv, "dv", DType::kF32);

  const TileOps& ops = tile_ops(opt.isa);
  const detail::BlockBounds qb = detail::block_bounds(opt.q_pos, g.seqlen_q, g.block_m);
  const detail::BlockBounds kb = detail::block_bounds(opt.k_pos, g.seqlen_k, g.block_n);
  ThreadPool& pool = ThreadPool::for_this_thread(opt.threads);
  const std::int64_t m = g.block_m, n = g.block_n, d = g.d;
  const std::int64_t acc = std::max(m, n) * d;
  const bool bf16_dot = q.dtype == DType::kBF16 && ops.gemm_bf16_qkt != nullptr;
  const std::int64_t packed = bf16_dot ? bf16_packed_words(n, d) : 0;
  const detail::Workspace ws({m * d, m * d, n * d, n * d, m * n, m * n, acc, acc, packed, packed, acc},
                             {m, n}, pool.size());
  const BackwardCall call{q, k, v, dout, lse, delta, dq, dk, dv, opt, g, ops, qb, kb, ws, bf16_dot};

  pool.parallel_for(g.b * g.n_heads_kv * g.n_kblocks, [&](std::int64_t task, int worker) {
    const std::int64_t jb = task % g.n_kblocks;
    const std::int64_t kvh = (task / g.n_kblocks) % g.n_heads_kv;
    key_block_grads(call, task / (g.n_kblocks * g.n_heads_kv), kvh, jb, worker);
  });
  pool.parallel_for(g.b * g.n_heads_q * g.n_qblocks, [&](std::int64_t task, int worker) {
    const std::int64_t iqb = task % g.n_qblocks;
    const std::int64_t ih = (task / g.n_qblocks) % g.n_heads_q;
    query_block_grads(call, task / (g.n_qblocks * g.n_heads_q), ih, iqb, worker);
  });
}

}  // namespace burst::kernels
