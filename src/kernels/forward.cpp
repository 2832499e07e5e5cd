// Forward driver: one task per (batch, query head, query block); each task streams the key
// blocks through an online softmax held in fp32 registers of the task (row max, row sum and
// an accumulator of block_m x d).
#include <algorithm>
#include <cmath>
#include <limits>

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

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Per-worker scratch of one forward call.
struct ForwardScratch {
  float *q, *k, *v, *s, *acc, *row_max, *row_sum, *factor;
  float* v_finite;          // V with non-finite elements zeroed (sgemm_visible's scratch)
  std::uint32_t* k_packed;  // keys packed for the bf16 dot-product route
  std::int64_t *qpos, *kpos;
};

enum ForwardArray { kQ, kK, kV, kS, kAcc, kRowMax, kRowSum, kFactor, kKPacked, kVFinite };

detail::WorkspaceLayout blas_layout(const Geometry& g, bool bf16_dot) {
  const std::int64_t m = g.block_m, n = g.block_n, d = g.d;
  const std::int64_t packed = bf16_dot ? bf16_packed_words(n, d) : 0;
  return {{m * d, n * d, n * d, m * n, m * d, m, m, m, packed, n * d}, {m, n}};
}

ForwardScratch scratch_of(const detail::Workspace& ws, int worker) {
  return {ws.floats(worker, kQ),      ws.floats(worker, kK),      ws.floats(worker, kV),
          ws.floats(worker, kS),      ws.floats(worker, kAcc),    ws.floats(worker, kRowMax),
          ws.floats(worker, kRowSum), ws.floats(worker, kFactor),
          ws.floats(worker, kVFinite),
          reinterpret_cast<std::uint32_t*>(ws.floats(worker, kKPacked)),
          ws.ints(worker, 0),         ws.ints(worker, 1)};
}

struct ForwardCall {
  const TensorView &q, &k, &v, &out;
  const RowStatsView& lse;
  const AttentionOptions& opt;
  const Geometry& g;
  const TileOps& ops;
  const detail::BlockBounds &qb, &kb;
  bool continue_state;
  bool bf16_dot;  // S = Q K^T by bf16 dot products (q, k bf16 and the ISA has them)
};

// Runs tile(k0, cols, vis) for every key block the mask does not skip for query block iqb, in
// order; reports progress between tiles on the calling thread.
template <class Tile>
void for_each_key_block(const ForwardCall& c, std::int64_t iqb, bool calling_thread, Tile&& tile) {
  const Geometry& g = c.g;
  for (std::int64_t jb = 0; jb < g.n_kblocks; ++jb) {
    const auto vis = detail::classify(c.opt.mask, c.qb.lo[iqb], c.qb.hi[iqb], c.kb.lo[jb], c.kb.hi[jb]);
    if (vis == TileVisibility::kNone) continue;
    if (calling_thread && c.opt.progress) c.opt.progress();
    const std::int64_t k0 = jb * g.block_n;
    tile(k0, static_cast<int>(std::min<std::int64_t>(g.block_n, g.seqlen_k - k0)), vis);
  }
}

// The running state of `rows` query rows from q0 (acc row-major, leading dimension ld): fresh,
// or the normalised partial (O, lse) read back as max = lse, sum = 1.
void start_rows(const ForwardCall& c, std::int64_t ib, std::int64_t ih, std::int64_t q0, int rows, float* acc,
                std::int64_t ld, float* row_max, float* row_sum) {
  const float* lse_row = c.lse.row(ib, ih) + q0;
  for (int i = 0; i < rows; ++i) {
    float* a = acc + i * ld;
    if (c.continue_state && lse_row[i] != kNegInf) {
      row_max[i] = lse_row[i];
      row_sum[i] = 1.0f;
      std::copy_n(c.out.row<const float>(ib, q0 + i, ih), c.g.d, a);
    } else {
      row_max[i] = kNegInf;
      row_sum[i] = 0.0f;
      std::fill_n(a, c.g.d, 0.0f);
    }
  }
}

// Normalise: O = acc / sum, lse = max + log(sum), written to out and lse. Rows that saw
// nothing above -inf give exactly 0 and -inf (acc may hold NaN from 0 * a NaN of V, which
// such a row drops like a merge drops an empty partial); a NaN row_sum gives NaN.
void finish_rows(const ForwardCall& c, std::int64_t ib, std::int64_t ih, std::int64_t q0, int rows, float* acc,
                 std::int64_t ld, const float* row_max, const float* row_sum) {
  float* lse_row = c.lse.row(ib, ih) + q0;
  const std::int64_t d = c.g.d;
  for (int i = 0; i < rows; ++i) {
    float* a = acc + i * ld;
    const bool empty = row_sum[i] == 0.0f;
    if (empty) {
      std::fill_n(a, d, 0.0f);
    } else {
      const float inv = 1.0f / row_sum[i];
      for (std::int64_t x = 0; x < d; ++x) a[x] *= inv;
    }
    lse_row[i] = empty ? kNegInf : row_max[i] + std::log(row_sum[i]);
    if (c.out.dtype == DType::kF32) {
      std::copy_n(a, d, c.out.row<float>(ib, q0 + i, ih));
    } else {
      c.ops.f32_to_bf16(a, c.out.row<bf16_bits>(ib, q0 + i, ih), d);
    }
  }
}

// Per-row state and positions of a row-major forward task.
struct RowState {
  float *row_max, *row_sum, *factor;
  std::int64_t *qpos, *kpos;
};

// The online-softmax step of the row-major score tile s (rows x cols, leading dimension ld) of
// the key block at k0: masks a partially visible tile (query positions filled on first use),
// turns s into P and rescales the accumulator (rows x d, leading dimension ld_acc).
void softmax_step(const ForwardCall& c, TileVisibility vis, std::int64_t q0, std::int64_t k0, int rows, int cols,
                  float* s, std::int64_t ld, float* acc, std::int64_t ld_acc, const RowState& st, bool& have_qpos) {
  if (vis == TileVisibility::kPartial) {
    if (!have_qpos) {
      detail::fill_positions(c.opt.q_pos, q0, rows, st.qpos);
      have_qpos = true;
    }
    detail::fill_positions(c.opt.k_pos, k0, cols, st.kpos);
    c.ops.apply_mask(s, ld, rows, cols, st.qpos, st.kpos, c.opt.mask, kNegInf);
  }
  c.ops.online_softmax(s, ld, rows, cols, st.row_max, st.row_sum, st.factor);
  c.ops.scale_rows(acc, ld_acc, rows, static_cast<int>(c.g.d), st.factor);
}

void forward_block(const ForwardCall& c, std::int64_t ib, std::int64_t ih, std::int64_t iqb,
                   const ForwardScratch& w, bool calling_thread) {
  const Geometry& g = c.g;
  const std::int64_t q0 = iqb * g.block_m;
  const int rows = static_cast<int>(std::min<std::int64_t>(g.block_m, g.seqlen_q - q0));
  const std::int64_t kvh = ih / g.group;
  const std::int64_t d = g.d;
  start_rows(c, ib, ih, q0, rows, w.acc, d, w.row_max, w.row_sum);

  // The dot-product route reads q in place as bf16; the other widens it once per block.
  const detail::Rows qrows = c.bf16_dot ? detail::Rows{nullptr, 0}
                                        : detail::load_rows(c.q, ib, q0, rows, ih, w.q, c.ops);
  bool have_qpos = false;
  for_each_key_block(c, iqb, calling_thread, [&](std::int64_t k0, int cols, TileVisibility vis) {
    const detail::Rows vrows = detail::load_rows(c.v, ib, k0, cols, kvh, w.v, c.ops);

    // S = scale * Q K^T  (rows x cols)
    if (c.bf16_dot) {
      c.ops.pack_bf16_keys(c.k.row<const bf16_bits>(ib, k0, kvh), c.k.stride_s, cols,
                           static_cast<int>(d), w.k_packed);
      c.ops.gemm_bf16_qkt(c.q.row<const bf16_bits>(ib, q0, ih), c.q.stride_s, rows, w.k_packed,
                          cols, static_cast<int>(d), g.scale, w.s, g.block_n);
    } else {
      const detail::Rows krows = detail::load_rows(c.k, ib, k0, cols, kvh, w.k, c.ops);
      sgemm(false, true, rows, cols, d, g.scale, qrows.data, qrows.ld, krows.data, krows.ld,
            0.0f, w.s, g.block_n);
    }
    softmax_step(c, vis, q0, k0, rows, cols, w.s, g.block_n, w.acc, d, {w.row_max, w.row_sum, w.factor, w.qpos, w.kpos},
                 have_qpos);
    // acc += P V  (rows x d); P is 0 at masked pairs, which must not let a non-finite V row
    // reach the rows masked from it.
    if (vis == TileVisibility::kPartial) {
      detail::sgemm_visible(false, rows, static_cast<int>(d), cols, 1.0f, w.s, g.block_n, vrows.data,
                            vrows.ld, w.acc, d, {w.qpos, w.kpos, true, c.opt.mask}, w.v_finite);
    } else {
      sgemm(false, false, rows, d, cols, 1.0f, w.s, g.block_n, vrows.data, vrows.ld, 1.0f, w.acc, d);
    }
  });

  finish_rows(c, ib, ih, q0, rows, w.acc, d, w.row_max, w.row_sum);
}

// The fused routes (tile_ops.h, lanes layout): the task's state is held transposed, one
// lane per query of the block: Q^T and O^T (d x lanes), and per tile S^T (block_n x lanes).
// K and V rows are read in place; nothing is packed per tile. bf16 inputs (the fused bf16
// route, TileOps::fused_bf16) are widened: Q^T once per task, each K and V tile into
// k_wide and v_wide, so every product and P are the fp32 route's (docs/numerics.md).
struct LanesScratch {
  float *q_t, *o_t, *s_t, *row_max, *row_sum, *factor;
  float* v_finite;         // V with non-finite elements zeroed (accumulate_lanes_visible's scratch)
  float *k_wide, *v_wide;  // the K and V tiles widened to fp32 (bf16 inputs; empty for fp32)
  std::int64_t *qpos, *kpos;
  std::int64_t ld;  // lanes_padded(block_m): the leading dimension of every lanes array
};

enum LanesArray { kLQ, kLO, kLS, kLRowMax, kLRowSum, kLFactor, kLVFinite, kLKWide, kLVWide };

detail::WorkspaceLayout lanes_layout(const Geometry& g, DType dtype) {
  const std::int64_t mp = lanes_padded(g.block_m), n = g.block_n, d = g.d;
  const std::int64_t wide = dtype == DType::kBF16 ? n * d : 0;
  return {{d * mp, d * mp, n * mp, mp, mp, mp, n * d, wide, wide}, {g.block_m, n}};
}

LanesScratch lanes_scratch_of(const detail::Workspace& ws, const Geometry& g, int worker) {
  return {ws.floats(worker, kLQ),       ws.floats(worker, kLO),      ws.floats(worker, kLS),
          ws.floats(worker, kLRowMax),  ws.floats(worker, kLRowSum), ws.floats(worker, kLFactor),
          ws.floats(worker, kLVFinite), ws.floats(worker, kLKWide),  ws.floats(worker, kLVWide),
          ws.ints(worker, 0),           ws.ints(worker, 1),          lanes_padded(g.block_m)};
}

void forward_block_lanes(const ForwardCall& c, std::int64_t ib, std::int64_t ih, std::int64_t iqb,
                         const LanesScratch& w, bool calling_thread) {
  const Geometry& g = c.g;
  const std::int64_t q0 = iqb * g.block_m;
  const int rows = static_cast<int>(std::min<std::int64_t>(g.block_m, g.seqlen_q - q0));
  const int lanes = static_cast<int>(lanes_padded(rows));
  const std::int64_t kvh = ih / g.group, ld = w.ld;
  const int d = static_cast<int>(g.d);
  float* lse_row = c.lse.row(ib, ih) + q0;

  // Running state as in forward_block; padded lanes start empty and are never stored.
  detail::pack_lanes(c.q, ib, q0, rows, ih, w.q_t, ld);
  std::fill_n(w.o_t, d * ld, 0.0f);
  for (int i = 0; i < lanes; ++i) {
    if (i < rows && c.continue_state && lse_row[i] != kNegInf) {
      w.row_max[i] = lse_row[i];
      w.row_sum[i] = 1.0f;
      const float* o = c.out.row<const float>(ib, q0 + i, ih);
      for (int x = 0; x < d; ++x) w.o_t[x * ld + i] = o[x];
    } else {
      w.row_max[i] = kNegInf;
      w.row_sum[i] = 0.0f;
    }
  }

  const MaskSpec lanes_mask = detail::transposed_mask(c.opt.mask);
  bool have_qpos = false;
  for_each_key_block(c, iqb, calling_thread, [&](std::int64_t k0, int cols, TileVisibility vis) {
    // K and V rows in place (fp32), or widened into k_wide and v_wide (bf16).
    const detail::Rows k = detail::load_rows(c.k, ib, k0, cols, kvh, w.k_wide, c.ops);
    const detail::Rows v = detail::load_rows(c.v, ib, k0, cols, kvh, w.v_wide, c.ops);

    // S^T = scale K Q^T  (cols x lanes)
    c.ops.scores_lanes(k.data, k.ld, cols, w.q_t, ld, lanes, d, g.scale, w.s_t, ld);
    if (vis == TileVisibility::kPartial) {
      if (!have_qpos) {
        detail::fill_positions(c.opt.q_pos, q0, rows, w.qpos);
        have_qpos = true;
      }
      detail::fill_positions(c.opt.k_pos, k0, cols, w.kpos);
      c.ops.apply_mask(w.s_t, ld, cols, rows, w.kpos, w.qpos, lanes_mask, kNegInf);
    }
    c.ops.online_softmax_lanes(w.s_t, ld, cols, lanes, w.row_max, w.row_sum, w.factor);
    // O^T = O^T diag(factor) + V^T P^T  (d x lanes); P is 0 at masked pairs, which must not
    // let a non-finite V row reach the queries masked from it.
    if (vis == TileVisibility::kPartial) {
      detail::accumulate_lanes_visible(c.ops, v.data, v.ld, cols, d, w.s_t, ld, lanes, rows, w.factor, w.o_t, ld,
                                       {w.qpos, w.kpos, true, c.opt.mask}, w.v_finite);
    } else {
      c.ops.accumulate_lanes(v.data, v.ld, cols, d, w.s_t, ld, lanes, w.factor, w.o_t, ld);
    }
  });

  // Normalise as forward_block does, transposing back: O = acc / sum, lse = max + log(sum).
  float* row = w.v_finite;  // free now: one output row
  for (int i = 0; i < rows; ++i) {
    const bool empty = w.row_sum[i] == 0.0f;
    const float inv = empty ? 0.0f : 1.0f / w.row_sum[i];
    for (int x = 0; x < d; ++x) row[x] = empty ? 0.0f : w.o_t[x * ld + i] * inv;
    lse_row[i] = empty ? kNegInf : w.row_max[i] + std::log(w.row_sum[i]);
    if (c.out.dtype == DType::kF32) {
      std::copy_n(row, d, c.out.row<float>(ib, q0 + i, ih));
    } else {
      c.ops.f32_to_bf16(row, c.out.row<bf16_bits>(ib, q0 + i, ih), d);
    }
  }
}

// The AMX route (amx.h): row-major tiles as on the BLAS route, the two products as tile
// products. Per task Q is packed once as A tiles; per key block K is packed as B tiles along d
// and V as B tiles along the keys, and then
//   S = scale Q K^T                      (mp x nc, exact bf16 products, fp32 sums)
//   online softmax on S -> P, factor     (the avx512bf16 element-wise code)
//   O = O diag(factor) + P V             (P split into detail::amx_parts() bf16 parts, one
//                                         product each; docs/numerics.md)
// Padding (rows to 16, the reductions to 32, C columns to 16) is zero and never stored.
struct AmxScratch {
  bf16_bits *q_a, *p_a;     // Q (mp x dk) and the parts of P (mp x nk each)
  std::uint32_t *k_b, *v_b;  // K along d, V along the keys, as B tiles
  float *s, *o, *row_max, *row_sum, *factor;
  std::int64_t *qpos, *kpos;
};

struct AmxDims {
  std::int64_t mp, nk, dk, dc;  // rows padded to 16, the reductions to 32, C columns to 16
  explicit AmxDims(const Geometry& g)
      : mp(amx::pad_rows(g.block_m)), nk(amx::pad_depth(g.block_n)), dk(amx::pad_depth(g.d)), dc(amx::pad_rows(g.d)) {}
};

enum AmxArray { kAQ, kAP, kAK, kAV, kAS, kAO, kARowMax, kARowSum, kAFactor };

detail::WorkspaceLayout amx_layout(const Geometry& g) {
  const AmxDims a(g);
  return {{detail::floats_holding(a.mp * a.dk, 2), detail::floats_holding(detail::amx_parts() * a.mp * a.nk, 2),
           amx::b_words(g.d, g.block_n), amx::b_words(g.block_n, g.d), a.mp * a.nk, a.mp * a.dc, a.mp, a.mp, a.mp},
          {g.block_m, g.block_n}};
}

AmxScratch amx_scratch_of(const detail::Workspace& ws, int worker) {
  auto words = [&](std::size_t i) { return reinterpret_cast<std::uint32_t*>(ws.floats(worker, i)); };
  auto halves = [&](std::size_t i) { return reinterpret_cast<bf16_bits*>(ws.floats(worker, i)); };
  return {halves(kAQ),         halves(kAP),           words(kAK),           words(kAV),
          ws.floats(worker, kAS), ws.floats(worker, kAO), ws.floats(worker, kARowMax), ws.floats(worker, kARowSum),
          ws.floats(worker, kAFactor), ws.ints(worker, 0), ws.ints(worker, 1)};
}

void forward_block_amx(const ForwardCall& c, std::int64_t ib, std::int64_t ih, std::int64_t iqb, const AmxScratch& w,
                       bool calling_thread) {
  const Geometry& g = c.g;
  const AmxDims a(g);
  const std::int64_t q0 = iqb * g.block_m, kvh = ih / g.group;
  const int rows = static_cast<int>(std::min<std::int64_t>(g.block_m, g.seqlen_q - q0));
  const int d = static_cast<int>(g.d), mp = static_cast<int>(amx::pad_rows(rows));
  const amx::Ops& tiles = *c.ops.amx;
  const amx::Session session(tiles);

  std::fill_n(w.o, a.mp * a.dc, 0.0f);
  start_rows(c, ib, ih, q0, rows, w.o, a.dc, w.row_max, w.row_sum);
  amx::pack_a_rows(c.q.row<const bf16_bits>(ib, q0, ih), c.q.stride_s, rows, d, w.q_a, a.dk);
  const std::int64_t part = a.mp * a.nk;  // elements between the parts of P
  bool have_qpos = false;
  for_each_key_block(c, iqb, calling_thread, [&](std::int64_t k0, int cols, TileVisibility vis) {
    const bf16_bits* k = c.k.row<const bf16_bits>(ib, k0, kvh);
    const bf16_bits* v = c.v.row<const bf16_bits>(ib, k0, kvh);
    amx::pack_b_transposed(k, c.k.stride_s, cols, d, w.k_b);
    const bool v_non_finite = amx::pack_b_rows(v, c.v.stride_s, cols, d, w.v_b);

    // S = scale Q K^T  (mp x pad_rows(cols))
    tiles.gemm({.rows = mp, .cols = static_cast<int>(amx::pad_rows(cols)), .depth = static_cast<int>(a.dk), .a = w.q_a,
                .lda = a.dk, .b = w.k_b, .c = w.s, .ldc = a.nk, .alpha = g.scale});
    softmax_step(c, vis, q0, k0, rows, cols, w.s, a.nk, w.o, a.dc, {w.row_max, w.row_sum, w.factor, w.qpos, w.kpos},
                 have_qpos);

    // O += P V  (mp x dc), P as the sum of its bf16 parts.
    const int depth = static_cast<int>(amx::pad_depth(cols));
    amx::split_a(w.s, a.nk, rows, cols, detail::amx_parts(), w.p_a, a.nk, part);
    tiles.gemm({.rows = mp, .cols = static_cast<int>(a.dc), .depth = depth, .a = w.p_a, .lda = a.nk,
                .a_part_stride = part, .a_parts = detail::amx_parts(), .b = w.v_b, .c = w.o, .ldc = a.dc,
                .accumulate = true});
    if (v_non_finite) {
      const detail::TilePairs pairs{w.qpos, w.kpos, true, c.opt.mask};
      detail::add_non_finite_terms(v, c.v.stride_s, cols, d, w.s, a.nk, 1, rows, 1.0f, w.o, a.dc, 1,
                                   vis == TileVisibility::kPartial ? &pairs : nullptr);
    }
  });
  finish_rows(c, ib, ih, q0, rows, w.o, a.dc, w.row_max, w.row_sum);
}

// An emulated call (EmulatedCompute): a fresh forward's out and lse become zeros, then the
// model's time passes.
void emulate_forward(const Geometry& g, const AttentionOptions& opt, const TensorView& out, const RowStatsView& lse,
                     bool continue_state) {
  if (!continue_state) {
    for (std::int64_t ib = 0; ib < g.b; ++ib) {
      for (std::int64_t i = 0; i < g.seqlen_q; ++i)
        for (std::int64_t h = 0; h < g.n_heads_q; ++h) {
          if (out.dtype == DType::kF32) {
            std::fill_n(out.row<float>(ib, i, h), g.d, 0.0f);
          } else {
            std::fill_n(out.row<bf16_bits>(ib, i, h), g.d, bf16_bits{0});
          }
        }
      for (std::int64_t h = 0; h < g.n_heads_q; ++h) std::fill_n(lse.row(ib, h), g.seqlen_q, 0.0f);
    }
  }
  detail::wait_emulated(detail::emulated_seconds(g, opt, false), opt);
}

void run_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                 const TensorView& out, const RowStatsView& lse, const AttentionOptions& options,
                 bool continue_state) {
  const Geometry g = detail::check_qkv(q, k, v, options);
  std::optional<detail::DocumentCoordinates> coordinates;
  const AttentionOptions& opt = detail::resolve_documents(options, g.seqlen_q, g.seqlen_k, coordinates);
  detail::check_same_shape(out, "out", q, "q");
  if (continue_state) {
    detail::check_dtype(out, "out (running state)", DType::kF32);
  }
  detail::check_stats(lse, "lse", g.b, g.n_heads_q, g.seqlen_q);
  if (opt.emulate) {
    emulate_forward(g, opt, out, lse, continue_state);
    return;
  }

  const TileOps& ops = tile_ops(opt.isa);
  const detail::BlockBounds qb = detail::block_bounds(opt.q_pos, g.seqlen_q, g.block_m);
  const detail::BlockBounds kb = detail::block_bounds(opt.k_pos, g.seqlen_k, g.block_n);
  ThreadPool& pool = ThreadPool::for_this_thread(opt.threads);
  const bool bf16_dot = q.dtype == DType::kBF16 && ops.gemm_bf16_qkt != nullptr;
  const detail::Route route = detail::route_of(ops, q.dtype);
  const detail::Workspace workspace(detail::forward_workspace_layout(g, ops, q.dtype), pool.size());
  const ForwardCall call{q, k, v, out, lse, opt, g, ops, qb, kb, continue_state, bf16_dot};

  const std::int64_t tasks = g.b * g.n_heads_q * g.n_qblocks;
  pool.parallel_for(tasks, [&](std::int64_t task, int worker) {
    const std::int64_t iqb = task % g.n_qblocks;
    const std::int64_t ih = (task / g.n_qblocks) % g.n_heads_q;
    const std::int64_t ib = task / (g.n_qblocks * g.n_heads_q);
    if (route == detail::Route::kAmx) {
      forward_block_amx(call, ib, ih, iqb, amx_scratch_of(workspace, worker), worker == 0);
    } else if (route == detail::Route::kFused) {
      forward_block_lanes(call, ib, ih, iqb, lanes_scratch_of(workspace, g, worker), worker == 0);
    } else {
      forward_block(call, ib, ih, iqb, scratch_of(workspace, worker), worker == 0);
    }
  });
}

}  // namespace

namespace detail {

WorkspaceLayout forward_workspace_layout(const Geometry& g, const TileOps& ops, DType dtype) {
  if (route_of(ops, dtype) == Route::kAmx) return amx_layout(g);
  if (route_of(ops, dtype) == Route::kFused) return lanes_layout(g, dtype);
  return blas_layout(g, dtype == DType::kBF16 && ops.gemm_bf16_qkt != nullptr);
}

}  // namespace detail

void attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                       const TensorView& out, const RowStatsView& lse,
                       const AttentionOptions& options) {
  run_forward(q, k, v, out, lse, options, false);
}

void attention_forward_continue(const TensorView& q, const TensorView& k, const TensorView& v,
                                const TensorView& out, const RowStatsView& lse,
                                const AttentionOptions& options) {
  run_forward(q, k, v, out, lse, options, true);
}

}  // namespace burst::kernels
