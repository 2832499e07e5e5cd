// Backward driver. On the BLAS route two passes keep every output written by exactly one
// task, so results are bitwise reproducible for any thread count and no thread needs more
// than tile-sized memory:
//   pass 1, one task per (batch, kv head, key block):    dK_j, dV_j over all query blocks
//           and the `group` query heads that share the kv head;
//   pass 2, one task per (batch, query head, query block): dQ_i over all key blocks.
// Both passes recompute P = exp(scale Q K^T - lse) and dS = P (dP - delta) per tile; the
// price is two extra GEMMs per tile (7 instead of 5), paid to avoid atomics or O(s) buffers.
// The fused route (key_block_grads_fused; fp32, and bf16 widened where TileOps::fused_bf16)
// keeps those guarantees in one pass of five products: pass 1's tasks also add dQ terms, in
// a fixed order (DqTurns).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <limits>
#include <vector>

#include "burst/error.h"
#include "core/thread_pool.h"
#include "burst/kernels.h"
#include "kernels/amx.h"
#include "kernels/blas.h"
#include "kernels/detail.h"
#include "kernels/emulate.h"

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

// The fused route (tile_ops.h, lanes layout): one pass, five products per tile instead of
// seven. One task per (batch, kv head, key block) packs K^T and V^T once (lanes = the
// block's keys) and, per query tile of the `group` heads, reads Q and dO rows in place (bf16
// inputs: widened to fp32 per query tile, K^T, V^T and K rows once per task, so the
// arithmetic is the fp32 route's on the widened values):
//   S = scale Q K^T, dP = dO V^T, P = exp(S - lse), dS = P (dP - delta)  (rows x lanes)
//   dV^T += dO^T P, dK^T += Q^T dS  (d x lanes, the task's own, as in pass 1)
//   dQ_i += scale dS K_j            (rows x d, added to dq in place)
// dQ rows are shared by every key-block task, so their additions are ordered: tile (i, j)
// adds its term to dq_i only after the tiles (i, 0..j-1) have added theirs (DqTurns), which
// is the order one thread takes. The sums are the same for any thread count, so results stay
// bitwise reproducible. Tasks start in increasing order (ThreadPool), so the lowest running
// task never waits; the others keep up to kDqLag computed terms pending before they wait.
class DqTurns {
 public:
  explicit DqTurns(std::int64_t tiles) : done_(static_cast<std::size_t>(tiles)) {
    for (auto& d : done_) d.store(0, std::memory_order_relaxed);
  }
  // Blocks until query tile `at` has the terms of key blocks 0..jb-1 in dq.
  void wait(std::int64_t at, std::int64_t jb) {
    std::atomic<std::int64_t>& done = done_[static_cast<std::size_t>(at)];
    for (std::int64_t seen = done.load(std::memory_order_acquire); seen != jb;
         seen = done.load(std::memory_order_acquire)) {
      if (aborted_.load(std::memory_order_acquire)) std::rethrow_exception(error_);
      done.wait(seen, std::memory_order_acquire);
    }
  }
  // Whether query tile `at` has the terms of key blocks 0..jb-1 (never blocks).
  bool ready(std::int64_t at, std::int64_t jb) {
    if (aborted_.load(std::memory_order_acquire)) std::rethrow_exception(error_);
    return done_[static_cast<std::size_t>(at)].load(std::memory_order_acquire) == jb;
  }
  // Marks key block jb's term of query tile `at` as added.
  void release(std::int64_t at, std::int64_t jb) {
    std::atomic<std::int64_t>& done = done_[static_cast<std::size_t>(at)];
    done.store(jb + 1, std::memory_order_release);
    done.notify_all();
  }
  // A task failed (a progress hook threw): wakes every waiter, which rethrows the same error
  // instead of waiting for a turn that will not come.
  void abort(std::exception_ptr error) {
    if (claimed_.exchange(true)) return;  // the first failure is the one reported
    error_ = std::move(error);
    aborted_.store(true, std::memory_order_release);  // publishes error_ to the waiters
    for (auto& done : done_) {
      done.fetch_add(std::int64_t{1} << 40, std::memory_order_acq_rel);
      done.notify_all();
    }
  }

 private:
  std::vector<std::atomic<std::int64_t>> done_;
  std::atomic<bool> claimed_{false}, aborted_{false};
  std::exception_ptr error_;
};

// dQ terms a task may hold computed but not yet added while it computes the next tile: it
// runs up to this many query tiles ahead of the task before it, so a stall on one core
// (another process, an interrupt) does not stall the other at once. On the shared 2-core
// Xeon, 2-thread backward over 1-thread: 1.46 - 1.73x without lag, 1.73 - 2.07x with 3,
// 7 no better (docs/performance.md).
constexpr int kDqLag = 2;

enum LanesArray { kLKt, kLVt, kLP, kLDS, kLDKt, kLDVt, kLKRows, kLDQ, kLQWide, kLDOWide };

struct LanesScratch {
  float *k_t, *v_t, *p, *ds, *dk_t, *dv_t, *k_rows, *dq;
  float *q_wide, *dout_wide;  // a query tile's Q and dO rows widened to fp32 (bf16 inputs)
  std::int64_t *qpos, *kpos;
};

// The dQ terms of one key-block task (batch ib, key block jb) waiting for their turn, oldest
// first; a query tile with no term (fully masked) still takes its turn, to pass it on in
// order. Terms live in kDqLag + 1 slots of `slot_floats` floats (rows x ld each): one is
// always free for the next term (slot()), as at most kDqLag are pending after a push.
class DqQueue {
 public:
  DqQueue(const BackwardCall& c, std::int64_t ib, std::int64_t jb, DqTurns& turns, float* slots,
          std::int64_t slot_floats, std::int64_t ld)
      : c_(c), ib_(ib), jb_(jb), turns_(turns), slots_(slots), slot_floats_(slot_floats), ld_(ld) {}

  // The free slot the next term is to be computed in; until then it may serve as scratch.
  float* slot() const { return slots_ + (issued_ % kSlots) * slot_floats_; }

  // Queues query tile `turn`'s term (rows x d in slot(), or null for none), then adds the
  // terms whose turn has come, waiting only while every slot is taken.
  void push(std::int64_t turn, std::int64_t ih, std::int64_t q0, int rows, const float* term) {
    if (term != nullptr) ++issued_;
    pending_[(first_ + count_) % kSlots] = {turn, ih, q0, rows, term};
    ++count_;
    flush(false);
  }

  // Adds the pending terms whose turn has come, oldest first; with `all`, or while every slot
  // is taken, waits for the turns.
  void flush(bool all) {
    while (count_ > 0) {
      const Pending& e = pending_[first_];
      if (!turns_.ready(e.turn, jb_)) {
        if (!all && count_ < kSlots) return;
        turns_.wait(e.turn, jb_);
      }
      if (e.term != nullptr) {
        for (int i = 0; i < e.rows; ++i) {
          float* dst = c_.dq.row<float>(ib_, e.q0 + i, e.ih);
          const float* src = e.term + i * ld_;
          for (std::int64_t x = 0; x < c_.g.d; ++x) dst[x] += src[x];
        }
      }
      turns_.release(e.turn, jb_);
      first_ = (first_ + 1) % kSlots;
      --count_;
    }
  }

 private:
  static constexpr int kSlots = kDqLag + 1;  // pending entries: the lag, plus the one just pushed
  struct Pending {
    std::int64_t turn, ih, q0;
    int rows;
    const float* term;
  };
  const BackwardCall& c_;
  std::int64_t ib_, jb_;
  DqTurns& turns_;
  float* slots_;
  std::int64_t slot_floats_, ld_;
  Pending pending_[kSlots] = {};
  int first_ = 0, count_ = 0;
  std::int64_t issued_ = 0;  // terms so far; term t uses slot t % kSlots
};

// Runs tile(turn, ih, q0, rows, vis) for every query tile of key block jb's task (the query
// heads of kv head kvh, in turn order) that the mask does not skip; a skipped tile still takes
// its turn in `queue`, with no term. Reports progress on worker 0.
template <class Tile>
void for_each_query_tile(const BackwardCall& c, std::int64_t ib, std::int64_t kvh, std::int64_t jb, int worker,
                         DqQueue& queue, Tile&& tile) {
  const Geometry& g = c.g;
  for (std::int64_t ih = kvh * g.group; ih < (kvh + 1) * g.group; ++ih) {
    for (std::int64_t iqb = 0; iqb < g.n_qblocks; ++iqb) {
      const std::int64_t turn = (ib * g.n_heads_q + ih) * g.n_qblocks + iqb;
      const auto vis = detail::classify(c.opt.mask, c.qb.lo[iqb], c.qb.hi[iqb], c.kb.lo[jb], c.kb.hi[jb]);
      if (vis == TileVisibility::kNone) {
        queue.push(turn, ih, 0, 0, nullptr);  // nothing to add; the turn passes on in order
        continue;
      }
      if (worker == 0 && c.opt.progress) c.opt.progress();
      const std::int64_t q0 = iqb * g.block_m;
      tile(turn, ih, q0, static_cast<int>(std::min<std::int64_t>(g.block_m, g.seqlen_q - q0)), vis);
    }
  }
}

LanesScratch lanes_scratch_of(const detail::Workspace& ws, int worker) {
  return {ws.floats(worker, kLKt),  ws.floats(worker, kLVt),    ws.floats(worker, kLP),
          ws.floats(worker, kLDS),  ws.floats(worker, kLDKt),   ws.floats(worker, kLDVt),
          ws.floats(worker, kLKRows), ws.floats(worker, kLDQ), ws.floats(worker, kLQWide),
          ws.floats(worker, kLDOWide), ws.ints(worker, 0), ws.ints(worker, 1)};
}

// K^T, V^T, dK^T, dV^T (d x np); P (m x np, or n x dp if larger: once dV is updated it holds
// the zeroed copy of K a partial tile's dQ term may need), dS (m x np); K rows padded to
// dp = lanes_padded(d) columns (n x dp); kDqLag + 1 dQ term slots (m x dp), the one free
// also serving as accumulate_lanes_visible's finite copy of a Q or dO tile (m x d); with bf16
// inputs, the Q and dO rows of a query tile widened to fp32 (m x d each).
detail::WorkspaceLayout lanes_layout(const Geometry& g, DType dtype) {
  const std::int64_t np = lanes_padded(g.block_n), dp = lanes_padded(g.d), m = g.block_m, n = g.block_n, d = g.d;
  const std::int64_t wide = dtype == DType::kBF16 ? m * d : 0;
  return {{d * np, d * np, std::max(m * np, n * dp), m * np, d * np, d * np, n * dp, (kDqLag + 1) * m * dp, wide,
           wide},
          {m, n}};
}

// Q, dO (m x d); K, V (n x d); P, dS (m x n); two accumulators and a finite copy (max(m, n) x
// d); packed keys and values for the bf16 dot-product route.
detail::WorkspaceLayout blas_layout(const Geometry& g, bool bf16_dot) {
  const std::int64_t m = g.block_m, n = g.block_n, d = g.d;
  const std::int64_t acc = std::max(m, n) * d;
  const std::int64_t packed = bf16_dot ? bf16_packed_words(n, d) : 0;
  return {{m * d, m * d, n * d, n * d, m * n, m * n, acc, acc, packed, packed, acc}, {m, n}};
}

// Rows [k0, k0 + cols) of K as a row-major fp32 tile padded to dp columns (zeros), the right
// operand of dQ = dS K; returns whether one of its values is not finite.
bool pack_key_rows(const TensorView& k, std::int64_t ib, std::int64_t k0, int cols, std::int64_t kvh, std::int64_t dp,
                   float* rows, const TileOps& ops) {
  bool non_finite = false;
  for (int j = 0; j < cols; ++j) {
    float* dst = rows + j * dp;
    if (k.dtype == DType::kF32) {
      std::copy_n(k.row<const float>(ib, k0 + j, kvh), k.d, dst);
    } else {
      ops.bf16_to_f32(k.row<const bf16_bits>(ib, k0 + j, kvh), dst, k.d);
    }
    for (std::int64_t x = 0; x < k.d; ++x) {
      non_finite |= !std::isfinite(dst[x]);
    }
    std::fill(dst + k.d, dst + dp, 0.0f);
  }
  return non_finite;
}

void key_block_grads_fused(const BackwardCall& c, std::int64_t ib, std::int64_t kvh, std::int64_t jb, int worker,
                           DqTurns& turns) {
  const Geometry& g = c.g;
  const LanesScratch w = lanes_scratch_of(c.ws, worker);
  const std::int64_t ld = lanes_padded(g.block_n), dp = lanes_padded(g.d), k0 = jb * g.block_n;
  const int cols = static_cast<int>(std::min<std::int64_t>(g.block_n, g.seqlen_k - k0));
  const int lanes = static_cast<int>(lanes_padded(cols));
  const int d = static_cast<int>(g.d);
  detail::pack_lanes(c.k, ib, k0, cols, kvh, w.k_t, ld);  // K^T
  detail::pack_lanes(c.v, ib, k0, cols, kvh, w.v_t, ld);  // V^T
  const bool k_non_finite = pack_key_rows(c.k, ib, k0, cols, kvh, dp, w.k_rows, c.ops);
  std::fill_n(w.dk_t, d * ld, 0.0f);
  std::fill_n(w.dv_t, d * ld, 0.0f);

  DqQueue queue(c, ib, jb, turns, w.dq, g.block_m * dp, dp);

  bool have_kpos = false;
  for_each_query_tile(c, ib, kvh, jb, worker, queue,
                      [&](std::int64_t turn, std::int64_t ih, std::int64_t q0, int rows, TileVisibility vis) {
    // Q and dO rows in place (fp32), or widened (bf16).
    const detail::Rows qr = detail::load_rows(c.q, ib, q0, rows, ih, w.q_wide, c.ops);
    const detail::Rows dor = detail::load_rows(c.dout, ib, q0, rows, ih, w.dout_wide, c.ops);
    const float *q = qr.data, *dout = dor.data;
    // S = scale Q K^T and dP = dO V^T  (rows x lanes: a query per row, a key per lane), then
    // P = exp(S - lse), dS = P (dP - delta); masked pairs zeroed afterwards (tile_probs_and_ds).
    const float* lse = c.lse.row(ib, ih) + q0;
    const float* delta = c.delta.row(ib, ih) + q0;
    if (c.ops.probs_and_ds_lanes != nullptr) {
      c.ops.probs_and_ds_lanes(q, qr.ld, dout, dor.ld, rows, w.k_t, w.v_t, ld, lanes, d, g.scale,
                               lse, delta, w.p, w.ds, ld);
    } else {
      c.ops.scores_lanes(q, qr.ld, rows, w.k_t, ld, lanes, d, g.scale, w.p, ld);
      c.ops.scores_lanes(dout, dor.ld, rows, w.v_t, ld, lanes, d, 1.0f, w.ds, ld);
      c.ops.probs_from_lse(w.p, ld, rows, lanes, lse);
      c.ops.ds_from_dp(w.ds, ld, w.p, ld, rows, lanes, delta);
    }
    const bool partial = vis == TileVisibility::kPartial;
    // This tile's dQ term slot: free (at most kDqLag terms are pending), so it serves as
    // the finite-copy scratch of the products below until the term is written.
    float* term = queue.slot();
    if (partial) {
      if (!have_kpos) {
        detail::fill_positions(c.opt.k_pos, k0, cols, w.kpos);
        have_kpos = true;
      }
      detail::fill_positions(c.opt.q_pos, q0, rows, w.qpos);
      c.ops.apply_mask(w.p, ld, rows, cols, w.qpos, w.kpos, c.opt.mask, 0.0f);
      c.ops.apply_mask(w.ds, ld, rows, cols, w.qpos, w.kpos, c.opt.mask, 0.0f);
      // dV^T += dO^T P and dK^T += Q^T dS (d x lanes), non-finite rows kept to their pairs.
      const detail::TilePairs pairs{w.kpos, w.qpos, false, c.opt.mask};
      detail::accumulate_lanes_visible(c.ops, dout, dor.ld, rows, d, w.p, ld, lanes, cols, nullptr,
                                       w.dv_t, ld, pairs, term);
      detail::accumulate_lanes_visible(c.ops, q, qr.ld, rows, d, w.ds, ld, lanes, cols, nullptr, w.dk_t, ld,
                                       pairs, term);
    } else {
      c.ops.accumulate_lanes(dout, dor.ld, rows, d, w.p, ld, lanes, nullptr, w.dv_t, ld);
      c.ops.accumulate_lanes(q, qr.ld, rows, d, w.ds, ld, lanes, nullptr, w.dk_t, ld);
    }
    // dQ term = scale dS K  (rows x dp; the products run over the block's cols keys). In a
    // partial tile a non-finite K value reaches only the queries that see its key: the
    // product runs on a zeroed copy (in P, dead once dV has it) and those terms are added
    // over visible pairs.
    const bool zeroed = partial && k_non_finite;
    if (zeroed) {
      for (std::int64_t i = 0; i < cols * dp; ++i) w.p[i] = std::isfinite(w.k_rows[i]) ? w.k_rows[i] : 0.0f;
    }
    c.ops.scores_lanes(w.ds, ld, rows, zeroed ? w.p : w.k_rows, dp, static_cast<int>(dp), cols, g.scale, term, dp);
    if (zeroed) {
      for (int j = 0; j < cols; ++j) {
        for (int x = 0; x < d; ++x) {
          const float kv = w.k_rows[j * dp + x];
          if (std::isfinite(kv)) continue;
          for (int i = 0; i < rows; ++i) {
            if (c.opt.mask.visible(w.qpos[i], w.kpos[j])) term[i * dp + x] += g.scale * w.ds[i * ld + j] * kv;
          }
        }
      }
    }
    queue.push(turn, ih, q0, rows, term);
  });
  queue.flush(true);
  detail::add_lanes(c.dk, ib, k0, cols, kvh, w.dk_t, ld, g.scale);
  detail::add_lanes(c.dv, ib, k0, cols, kvh, w.dv_t, ld, 1.0f);
}

// The AMX route (amx.h): the fused route's single pass in row-major tiles, every product a
// tile product. One task per (batch, kv head, key block) packs K and V once as B tiles along
// d (for S and dP) and K once along the keys (for dQ); per query tile it packs Q and dO as A
// tiles (rows, for S and dP; transposed, for dK^T and dV^T), then
//   S = scale Q K^T, dP = dO V^T                 (rows x keys, exact bf16 products)
//   P = exp(S - lse), dS = P (dP - delta)       (the avx512bf16 element-wise code)
//   dV^T += dO^T P, dK^T += Q^T dS               (d x keys, the task's own; P and dS split
//   dQ_i = scale dS K_j                          into bf16 parts, a product per part)
// with the dQ terms added in key-block order (DqQueue), as on the fused route. Padding (rows
// to 16, reductions to 32, C columns to 16) is zero and never stored.
enum AmxArray { kAKt, kAVt, kAKb, kADKt, kADVt, kAQa, kADOa, kAQt, kADOt, kAS, kADP, kAPb, kADSb, kADSa, kADQ };

struct AmxDims {
  std::int64_t mp, mk, nc, nk, dk, dc;  // rows padded to 16 (p, c) or 32 (k: as a reduction)
  explicit AmxDims(const Geometry& g)
      : mp(amx::pad_rows(g.block_m)), mk(amx::pad_depth(g.block_m)), nc(amx::pad_rows(g.block_n)),
        nk(amx::pad_depth(g.block_n)), dk(amx::pad_depth(g.d)), dc(amx::pad_rows(g.d)) {}
};

detail::WorkspaceLayout amx_layout(const Geometry& g) {
  const AmxDims a(g);
  const std::int64_t parts = detail::amx_parts(), m = g.block_m, n = g.block_n, d = g.d;
  const std::int64_t rows_a = detail::floats_holding(a.mp * a.dk, 2), cols_a = detail::floats_holding(a.dc * a.mk, 2);
  const std::int64_t split_b = parts * amx::b_words(m, n), split_a = detail::floats_holding(parts * a.mp * a.nk, 2);
  return {{amx::b_words(d, n), amx::b_words(d, n), amx::b_words(n, d), a.dc * a.nc, a.dc * a.nc, rows_a, rows_a, cols_a,
           cols_a, a.mp * a.nk, a.mp * a.nk, split_b, split_b, split_a, (kDqLag + 1) * a.mp * a.dc},
          {m, n}};
}

void key_block_grads_amx(const BackwardCall& c, std::int64_t ib, std::int64_t kvh, std::int64_t jb, int worker,
                         DqTurns& turns) {
  const Geometry& g = c.g;
  const AmxDims a(g);
  auto words = [&](std::size_t i) { return reinterpret_cast<std::uint32_t*>(c.ws.floats(worker, i)); };
  auto halves = [&](std::size_t i) { return reinterpret_cast<bf16_bits*>(c.ws.floats(worker, i)); };
  std::uint32_t *kt_b = words(kAKt), *vt_b = words(kAVt), *k_b = words(kAKb), *p_b = words(kAPb),
                *ds_b = words(kADSb);
  bf16_bits *q_a = halves(kAQa), *do_a = halves(kADOa), *qt_a = halves(kAQt), *dot_a = halves(kADOt),
            *ds_a = halves(kADSa);
  float *dk_t = c.ws.floats(worker, kADKt), *dv_t = c.ws.floats(worker, kADVt), *p = c.ws.floats(worker, kAS),
        *ds = c.ws.floats(worker, kADP);
  std::int64_t *qpos = c.ws.ints(worker, 0), *kpos = c.ws.ints(worker, 1);
  const int parts = detail::amx_parts(), d = static_cast<int>(g.d);
  const std::int64_t split_a_part = a.mp * a.nk, split_b_part = amx::b_words(g.block_m, g.block_n);
  const std::int64_t k0 = jb * g.block_n;
  const int cols = static_cast<int>(std::min<std::int64_t>(g.block_n, g.seqlen_k - k0));
  const int key_cols = static_cast<int>(amx::pad_rows(cols)), key_depth = static_cast<int>(amx::pad_depth(cols));
  const amx::Ops& tiles = *c.ops.amx;
  const amx::Session session(tiles);

  const bf16_bits* k = c.k.row<const bf16_bits>(ib, k0, kvh);
  amx::pack_b_transposed(k, c.k.stride_s, cols, d, kt_b);
  amx::pack_b_transposed(c.v.row<const bf16_bits>(ib, k0, kvh), c.v.stride_s, cols, d, vt_b);
  const bool k_non_finite = amx::pack_b_rows(k, c.k.stride_s, cols, d, k_b);
  std::fill_n(dk_t, a.dc * a.nc, 0.0f);
  std::fill_n(dv_t, a.dc * a.nc, 0.0f);
  DqQueue queue(c, ib, jb, turns, c.ws.floats(worker, kADQ), a.mp * a.dc, a.dc);

  // One product of the tile: C (rows x cols) = [C +] alpha A B.
  auto product = [&](int rows, int cols_c, int depth, const bf16_bits* a_op, std::int64_t lda, int a_parts,
                     const std::uint32_t* b_op, int b_parts, float* out, std::int64_t ldc, bool accumulate, float alpha) {
    tiles.gemm({.rows = rows, .cols = cols_c, .depth = depth, .a = a_op, .lda = lda, .a_part_stride = split_a_part,
                .a_parts = a_parts, .b = b_op, .b_part_stride = split_b_part, .b_parts = b_parts, .c = out, .ldc = ldc,
                .accumulate = accumulate, .alpha = alpha});
  };

  bool have_kpos = false;
  for_each_query_tile(c, ib, kvh, jb, worker, queue,
                      [&](std::int64_t turn, std::int64_t ih, std::int64_t q0, int rows, TileVisibility vis) {
    const int query_rows = static_cast<int>(amx::pad_rows(rows)), query_depth = static_cast<int>(amx::pad_depth(rows));
    const bf16_bits* q = c.q.row<const bf16_bits>(ib, q0, ih);
    const bf16_bits* dout = c.dout.row<const bf16_bits>(ib, q0, ih);
    amx::pack_a_rows(q, c.q.stride_s, rows, d, q_a, a.dk);
    amx::pack_a_rows(dout, c.dout.stride_s, rows, d, do_a, a.dk);
    const bool q_non_finite = amx::pack_a_transposed(q, c.q.stride_s, rows, d, qt_a, a.mk);
    const bool dout_non_finite = amx::pack_a_transposed(dout, c.dout.stride_s, rows, d, dot_a, a.mk);

    // S = scale Q K^T and dP = dO V^T, then P = exp(S - lse), dS = P (dP - delta); masked
    // pairs zeroed afterwards (tile_probs_and_ds).
    const int dk = static_cast<int>(a.dk);
    product(query_rows, key_cols, dk, q_a, a.dk, 1, kt_b, 1, p, a.nk, false, g.scale);
    product(query_rows, key_cols, dk, do_a, a.dk, 1, vt_b, 1, ds, a.nk, false, 1.0f);
    c.ops.probs_from_lse(p, a.nk, rows, cols, c.lse.row(ib, ih) + q0);
    c.ops.ds_from_dp(ds, a.nk, p, a.nk, rows, cols, c.delta.row(ib, ih) + q0);
    const bool partial = vis == TileVisibility::kPartial;
    if (partial) {
      if (!have_kpos) {
        detail::fill_positions(c.opt.k_pos, k0, cols, kpos);
        have_kpos = true;
      }
      detail::fill_positions(c.opt.q_pos, q0, rows, qpos);
      c.ops.apply_mask(p, a.nk, rows, cols, qpos, kpos, c.opt.mask, 0.0f);
      c.ops.apply_mask(ds, a.nk, rows, cols, qpos, kpos, c.opt.mask, 0.0f);
    }

    // dV^T += dO^T P and dK^T += Q^T dS  (d x keys), P and dS as B tiles in parts.
    amx::split_b(p, a.nk, rows, cols, parts, p_b, split_b_part);
    amx::split_b(ds, a.nk, rows, cols, parts, ds_b, split_b_part);
    product(static_cast<int>(a.dc), key_cols, query_depth, dot_a, a.mk, 1, p_b, parts, dv_t, a.nc, true, 1.0f);
    product(static_cast<int>(a.dc), key_cols, query_depth, qt_a, a.mk, 1, ds_b, parts, dk_t, a.nc, true, 1.0f);
    // dQ term = scale dS K  (rows x dc), dS as A tiles in parts.
    amx::split_a(ds, a.nk, rows, cols, parts, ds_a, a.nk, split_a_part);
    float* term = queue.slot();
    product(query_rows, static_cast<int>(a.dc), key_depth, ds_a, a.nk, parts, k_b, 1, term, a.dc, false, g.scale);

    // The terms of non-finite inputs, which the packing zeroed, over visible pairs only.
    const detail::TilePairs by_key{kpos, qpos, false, c.opt.mask}, by_query{qpos, kpos, true, c.opt.mask};
    if (dout_non_finite) {
      detail::add_non_finite_terms(dout, c.dout.stride_s, rows, d, p, 1, a.nk, cols, 1.0f, dv_t, 1, a.nc,
                                   partial ? &by_key : nullptr);
    }
    if (q_non_finite) {
      detail::add_non_finite_terms(q, c.q.stride_s, rows, d, ds, 1, a.nk, cols, 1.0f, dk_t, 1, a.nc,
                                   partial ? &by_key : nullptr);
    }
    if (k_non_finite) {
      detail::add_non_finite_terms(k, c.k.stride_s, cols, d, ds, a.nk, 1, rows, g.scale, term, a.dc, 1,
                                   partial ? &by_query : nullptr);
    }
    queue.push(turn, ih, q0, rows, term);
  });
  queue.flush(true);
  detail::add_lanes(c.dk, ib, k0, cols, kvh, dk_t, a.nc, g.scale);
  detail::add_lanes(c.dv, ib, k0, cols, kvh, dv_t, a.nc, 1.0f);
}

}  // namespace

namespace detail {

WorkspaceLayout backward_workspace_layout(const Geometry& g, const TileOps& ops, DType dtype) {
  if (route_of(ops, dtype) == Route::kAmx) return amx_layout(g);
  if (route_of(ops, dtype) == Route::kFused) return lanes_layout(g, dtype);
  return blas_layout(g, dtype == DType::kBF16 && ops.gemm_bf16_qkt != nullptr);
}

}  // namespace detail

void attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& dout, const RowStatsView& lse,
                        const RowStatsView& delta, const TensorView& dq, const TensorView& dk,
                        const TensorView& dv, const AttentionOptions& options) {
  const Geometry g = detail::check_qkv(q, k, v, options);
  std::optional<detail::DocumentCoordinates> coordinates;
  const AttentionOptions& opt = detail::resolve_documents(options, g.seqlen_q, g.seqlen_k, coordinates);
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
  if (opt.emulate) {
    detail::wait_emulated(detail::emulated_seconds(g, opt, true), opt);
    return;
  }

  const TileOps& ops = tile_ops(opt.isa);
  const detail::BlockBounds qb = detail::block_bounds(opt.q_pos, g.seqlen_q, g.block_m);
  const detail::BlockBounds kb = detail::block_bounds(opt.k_pos, g.seqlen_k, g.block_n);
  ThreadPool& pool = ThreadPool::for_this_thread(opt.threads);
  const bool bf16_dot = q.dtype == DType::kBF16 && ops.gemm_bf16_qkt != nullptr;
  const detail::Route route = detail::route_of(ops, q.dtype);
  const detail::Workspace ws(detail::backward_workspace_layout(g, ops, q.dtype), pool.size());
  const BackwardCall call{q, k, v, dout, lse, delta, dq, dk, dv, opt, g, ops, qb, kb, ws, bf16_dot};

  if (route != detail::Route::kBlas) {
    DqTurns turns(g.b * g.n_heads_q * g.n_qblocks);
    pool.parallel_for(g.b * g.n_heads_kv * g.n_kblocks, [&](std::int64_t task, int worker) {
      const std::int64_t jb = task % g.n_kblocks;
      const std::int64_t kvh = (task / g.n_kblocks) % g.n_heads_kv;
      const std::int64_t ib = task / (g.n_kblocks * g.n_heads_kv);
      try {
        if (route == detail::Route::kAmx) {
          key_block_grads_amx(call, ib, kvh, jb, worker, turns);
        } else {
          key_block_grads_fused(call, ib, kvh, jb, worker, turns);
        }
      } catch (...) {
        turns.abort(std::current_exception());
        throw;
      }
    });
    return;
  }
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
