#include "algo/ring_rsa.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "algo/common.h"
#include "burst/error.h"
#include "kernels/blas.h"
#include "kernels/detail.h"
#include "kernels/tile_ops.h"

namespace burst::algo {
namespace {

using comm::Communicator;
using comm::Request;
using Clock = std::chrono::steady_clock;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int kTagPass = 5;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// One [b, n, h, d] operand as fp32 rows of one (batch, head): the tensor itself when fp32,
// else widened into `scratch`.
const float* rows_f32(const TensorView& t, std::int64_t ib, std::int64_t ih, std::vector<float>& scratch,
                      std::int64_t& ld) {
  if (t.dtype == DType::kF32) {
    ld = t.stride_s;
    return t.row<const float>(ib, 0, ih);
  }
  scratch.resize(static_cast<std::size_t>(t.s * t.d));
  for (std::int64_t i = 0; i < t.s; ++i)
    for (std::int64_t x = 0; x < t.d; ++x) scratch[static_cast<std::size_t>(i * t.d + x)] = bf16_to_float(t.row<const bf16_bits>(ib, i, ih)[x]);
  ld = t.d;
  return scratch.data();
}

// The materialised rows: [b, h, n_r, N] fp32, columns in rank order of the shards.
struct Scores {
  std::int64_t b, h, n, total;
  AlignedBuffer data;  // counted by core's allocation statistics, like every Burst tensor

  Scores(std::int64_t b_, std::int64_t h_, std::int64_t n_, std::int64_t total_)
      : b(b_), h(h_), n(n_), total(total_), data(static_cast<std::size_t>(b_ * h_ * n_ * total_) * sizeof(float)) {}
  float* at(std::int64_t ib, std::int64_t ih) { return data.as<float>() + ((ib * h + ih) * n) * total; }
};

struct Setup {
  detail::Plan plan;
  std::vector<std::int64_t> offsets;  // first column of each rank's keys
  std::vector<std::int64_t> columns;  // global position of every score column
  std::int64_t total = 0;
  float scale = 0;
};

Setup setup(Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v, const DistributedOptions& o) {
  Setup s;
  s.plan = detail::check_and_plan(comm, q, k, v, o);
  // After the agreement check, so every rank refuses alike.
  BURST_CHECK(!o.mask.has_documents(), "strategy ring-rsa: packed documents are not supported (its materialised score "
              "rows are masked by position only); use burst or ring");
  for (std::int64_t n : s.plan.lengths) {
    s.offsets.push_back(s.total);
    s.total += n;
  }
  for (const auto& pos : s.plan.positions) s.columns.insert(s.columns.end(), pos.begin(), pos.end());
  s.scale = o.scale ? *o.scale : 1.0f / std::sqrt(static_cast<float>(q.d));
  return s;
}

// One ring pass of a [b, n, h, d] shard (K or V) around the ring, double buffered; calls
// visit(origin, shard view) for every rank's shard, this rank's first.
void ring_pass(Communicator& comm, const Setup& s, const TensorView& own, StrategyStats& stats,
               const std::function<void(int, const TensorView&)>& visit) {
  const int p = comm.world_size(), r = comm.rank();
  const std::size_t elem = dtype_size(own.dtype);
  auto bytes = [&](int j) { return static_cast<std::size_t>(own.b * s.plan.lengths[static_cast<std::size_t>(j)] * own.h * own.d) * elem; };
  std::size_t max_bytes = 0;
  for (int j = 0; j < p; ++j) max_bytes = std::max(max_bytes, bytes(j));
  AlignedBuffer buffers[2] = {AlignedBuffer(max_bytes), AlignedBuffer(max_bytes)};
  pack_rows(own, buffers[0].data());
  int cur = 0;
  for (int t = 0; t < p; ++t) {
    const int j = (r - t + p) % p;
    Request moves[2];
    if (t + 1 < p) {
      moves[0] = comm.irecv(buffers[1 - cur].data(), bytes((r - t - 1 + p) % p), (r - 1 + p) % p, kTagPass);
      moves[1] = comm.isend(buffers[cur].data(), bytes(j), (r + 1) % p, kTagPass);
    }
    const auto t0 = Clock::now();
    visit(j, dense_view(buffers[cur].data(), own.dtype, own.b, s.plan.lengths[static_cast<std::size_t>(j)], own.h, own.d));
    const double took = seconds_since(t0);
    stats.compute_seconds += took;
    stats.step_seconds.push_back(took);
    ++stats.steps_computed;
    const auto w0 = Clock::now();
    comm::wait_all(moves, comm.deadline());
    stats.wait_seconds += seconds_since(w0);
    cur = 1 - cur;
  }
}

// Fills the score columns of shard j: scale Q K_j^T, masked to -inf (global positions).
void fill_scores(Scores& sc, const Setup& s, int r, int j, const TensorView& q, const TensorView& kj,
                 const DistributedOptions& o) {
  const std::int64_t group = q.h / kj.h, nj = kj.s;
  const auto& qpos = s.plan.positions[static_cast<std::size_t>(r)];
  const auto& kpos = s.plan.positions[static_cast<std::size_t>(j)];
  std::vector<float> qs, ks;
  for (std::int64_t ib = 0; ib < q.b; ++ib)
    for (std::int64_t ih = 0; ih < q.h; ++ih) {
      std::int64_t ldq = 0, ldk = 0;
      const float* qr = rows_f32(q, ib, ih, qs, ldq);
      const float* kr = rows_f32(kj, ib, ih / group, ks, ldk);
      float* out = sc.at(ib, ih) + s.offsets[static_cast<std::size_t>(j)];
      kernels::sgemm(false, true, q.s, nj, q.d, s.scale, qr, ldq, kr, ldk, 0.0f, out, sc.total);
      if (o.mask.masks_anything()) {
        for (std::int64_t i = 0; i < q.s; ++i)
          for (std::int64_t c = 0; c < nj; ++c)
            if (!o.mask.visible(qpos[static_cast<std::size_t>(i)], kpos[static_cast<std::size_t>(c)])) out[i * sc.total + c] = kNegInf;
      }
    }
}

// C (m x d) += alpha op(A) B for score columns: with a mask, A is 0 at masked pairs, and a
// non-finite row of B must not reach through them the rows of C masked from it.
void product(const DistributedOptions& o, bool trans_a, std::int64_t m, std::int64_t d, std::int64_t k, float alpha,
             const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float* c, std::int64_t ldc,
             const kernels::detail::TilePairs& pairs, std::vector<float>& scratch) {
  if (!o.mask.masks_anything()) {
    kernels::sgemm(trans_a, false, m, d, k, alpha, a, lda, b, ldb, 1.0f, c, ldc);
    return;
  }
  scratch.resize(static_cast<std::size_t>(k * d));
  kernels::detail::sgemm_visible(trans_a, static_cast<int>(m), static_cast<int>(d), static_cast<int>(k), alpha, a,
                                 lda, b, ldb, c, ldc, pairs, scratch.data());
}

// Scores of every key, rows complete: one K ring pass.
Scores all_scores(Communicator& comm, const Setup& s, const TensorView& q, const TensorView& k, const DistributedOptions& o,
                  StrategyStats& stats) {
  Scores sc(q.b, q.h, q.s, s.total);
  ring_pass(comm, s, k, stats, [&](int j, const TensorView& kj) { fill_scores(sc, s, comm.rank(), j, q, kj, o); });
  return sc;
}

}  // namespace

std::uint64_t ring_rsa_score_bytes(std::int64_t b, std::int64_t hq, std::int64_t shard, std::int64_t seqlen) {
  return static_cast<std::uint64_t>(b * hq * shard * seqlen) * 4;
}

StrategyStats ring_rsa_forward(Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v,
                               const TensorView& out, const RowStatsView& lse, const DistributedOptions& o) {
  const Setup s = setup(comm, q, k, v, o);
  kernels::detail::check_same_shape(out, "out", q, "q");
  kernels::detail::check_stats(lse, "lse", q.b, q.h, q.s);
  StrategyStats stats;
  const detail::TrafficMark mark = detail::mark_traffic(comm);
  Scores sc = all_scores(comm, s, q, k, o, stats);
  // Row softmax over all N keys: P = exp(S - lse); a row that sees nothing is 0, lse -inf.
  // std::max drops NaN, so a row whose max is -inf is searched for a NaN score (which makes
  // it NaN); below a finite max a NaN score turns the sum, and so the row, NaN.
  const kernels::TileOps& ops = kernels::tile_ops(o.isa);
  const std::int64_t* qpos = s.plan.positions[static_cast<std::size_t>(comm.rank())].data();
  for (std::int64_t ib = 0; ib < q.b; ++ib)
    for (std::int64_t ih = 0; ih < q.h; ++ih)
      for (std::int64_t i = 0; i < q.s; ++i) {
        float* row = sc.at(ib, ih) + i * s.total;
        float m = kNegInf;
        for (std::int64_t c = 0; c < s.total; ++c) m = std::max(m, row[c]);
        if (m == kNegInf) {
          const bool poisoned = std::any_of(row, row + s.total, [](float x) { return std::isnan(x); });
          const float fill = poisoned ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
          std::fill_n(row, s.total, fill);
          lse.row(ib, ih)[i] = poisoned ? fill : kNegInf;
          continue;
        }
        double sum = 0;
        for (std::int64_t c = 0; c < s.total; ++c) row[c] -= m;
        ops.exp(row, row, s.total);
        for (std::int64_t c = 0; c < s.total; ++c) sum += row[c];
        const float inv = static_cast<float>(1.0 / sum);
        for (std::int64_t c = 0; c < s.total; ++c) row[c] *= inv;
        lse.row(ib, ih)[i] = m + static_cast<float>(std::log(sum));
      }
  // O = P V: one V ring pass, accumulated in fp32.
  Tensor acc(DType::kF32, q.b, q.s, q.h, q.d);
  acc.fill_zero();
  std::vector<float> vs, scratch;
  ring_pass(comm, s, v, stats, [&](int j, const TensorView& vj) {
    const std::int64_t group = q.h / vj.h;
    const kernels::detail::TilePairs pairs{qpos, s.plan.positions[static_cast<std::size_t>(j)].data(), true, o.mask};
    for (std::int64_t ib = 0; ib < q.b; ++ib)
      for (std::int64_t ih = 0; ih < q.h; ++ih) {
        std::int64_t ldv = 0;
        const float* vr = rows_f32(vj, ib, ih / group, vs, ldv);
        product(o, false, q.s, q.d, vj.s, 1.0f, sc.at(ib, ih) + s.offsets[static_cast<std::size_t>(j)], s.total, vr, ldv,
                acc.view().row<float>(ib, 0, ih), acc.view().stride_s, pairs, scratch);
      }
  });
  for (std::int64_t ib = 0; ib < q.b; ++ib)
    for (std::int64_t is = 0; is < q.s; ++is)
      for (std::int64_t ih = 0; ih < q.h; ++ih) {
        float* a = acc.view().row<float>(ib, is, ih);
        // A row with lse = -inf is exactly 0, as the kernels make it (docs/numerics.md).
        if (lse.row(ib, ih)[is] == kNegInf) std::fill_n(a, q.d, 0.0f);
        if (out.dtype == DType::kF32) {
          std::memcpy(out.row<float>(ib, is, ih), a, static_cast<std::size_t>(q.d) * 4);
        } else {
          for (std::int64_t x = 0; x < q.d; ++x) out.row<bf16_bits>(ib, is, ih)[x] = float_to_bf16(a[x]);
        }
      }
  detail::add_traffic_since(comm, mark, {comm::Op::kPointToPoint}, stats);
  return stats;
}

StrategyStats ring_rsa_backward(Communicator& comm, const TensorView& q, const TensorView& k, const TensorView& v,
                                const TensorView& out, const RowStatsView& lse, const TensorView& dout, const TensorView& dq,
                                const TensorView& dk, const TensorView& dv, const DistributedOptions& o) {
  const Setup s = setup(comm, q, k, v, o);
  detail::check_backward_tensors(q, k, out, dout, dq, dk, dv);
  StrategyStats stats;
  const detail::TrafficMark mark = detail::mark_traffic(comm);
  const kernels::TileOps& ops = kernels::tile_ops(o.isa);
  RowStats delta(q.b, q.h, q.s);
  kernels::compute_delta(dout, out, delta.view(), o.threads);
  // Pass 1 (K): scores again, turned into P = exp(S - lse).
  const std::int64_t* qpos = s.plan.positions[static_cast<std::size_t>(comm.rank())].data();
  Scores prob = all_scores(comm, s, q, k, o, stats);
  for (std::int64_t ib = 0; ib < q.b; ++ib)
    for (std::int64_t ih = 0; ih < q.h; ++ih)
      ops.probs_from_lse(prob.at(ib, ih), s.total, static_cast<int>(q.s), static_cast<int>(s.total), lse.row(ib, ih));
  // Pass 2 (V): dP = dO V^T for every key, then dS = P (dP - delta) in place of dP.
  Scores grad(q.b, q.h, q.s, s.total);
  std::vector<float> os, vs, ks, qs;
  ring_pass(comm, s, v, stats, [&](int j, const TensorView& vj) {
    const std::int64_t group = q.h / vj.h;
    for (std::int64_t ib = 0; ib < q.b; ++ib)
      for (std::int64_t ih = 0; ih < q.h; ++ih) {
        std::int64_t ldo = 0, ldv = 0;
        const float* dor = rows_f32(dout, ib, ih, os, ldo);
        const float* vr = rows_f32(vj, ib, ih / group, vs, ldv);
        kernels::sgemm(false, true, q.s, vj.s, q.d, 1.0f, dor, ldo, vr, ldv, 0.0f,
                       grad.at(ib, ih) + s.offsets[static_cast<std::size_t>(j)], s.total);
      }
  });
  // Masked entries of P and dS become exactly 0: a NaN lse or a non-finite dO or V row makes
  // them NaN, and they must not reach the gradients of keys and queries they do not pair.
  for (std::int64_t ib = 0; ib < q.b; ++ib)
    for (std::int64_t ih = 0; ih < q.h; ++ih) {
      ops.ds_from_dp(grad.at(ib, ih), s.total, prob.at(ib, ih), s.total, static_cast<int>(q.s), static_cast<int>(s.total),
                     delta.view().row(ib, ih));
      if (o.mask.masks_anything()) {
        for (float* t : {prob.at(ib, ih), grad.at(ib, ih)})
          ops.apply_mask(t, s.total, static_cast<int>(q.s), static_cast<int>(s.total), qpos, s.columns.data(), o.mask, 0.0f);
      }
    }
  // dK and dV of every key from this rank's queries, in full-length buffers (rank order).
  const std::int64_t group = q.h / k.h;
  Tensor dk_all(DType::kF32, k.b, s.total, k.h, k.d), dv_all(DType::kF32, k.b, s.total, k.h, k.d);
  dk_all.fill_zero();
  dv_all.fill_zero();
  std::vector<float> scratch;
  const kernels::detail::TilePairs key_pairs{s.columns.data(), qpos, false, o.mask};
  for (std::int64_t ib = 0; ib < q.b; ++ib)
    for (std::int64_t ih = 0; ih < q.h; ++ih) {
      std::int64_t ldq = 0, ldo = 0;
      const float* qr = rows_f32(q, ib, ih, qs, ldq);
      const float* dor = rows_f32(dout, ib, ih, os, ldo);
      product(o, true, s.total, q.d, q.s, s.scale, grad.at(ib, ih), s.total, qr, ldq,
              dk_all.view().row<float>(ib, 0, ih / group), dk_all.view().stride_s, key_pairs, scratch);
      product(o, true, s.total, q.d, q.s, 1.0f, prob.at(ib, ih), s.total, dor, ldo,
              dv_all.view().row<float>(ib, 0, ih / group), dv_all.view().stride_s, key_pairs, scratch);
    }
  // Pass 3 (K): dQ = scale dS K.
  Tensor dq_acc(DType::kF32, q.b, q.s, q.h, q.d);
  dq_acc.fill_zero();
  ring_pass(comm, s, k, stats, [&](int j, const TensorView& kj) {
    const kernels::detail::TilePairs pairs{qpos, s.plan.positions[static_cast<std::size_t>(j)].data(), true, o.mask};
    for (std::int64_t ib = 0; ib < q.b; ++ib)
      for (std::int64_t ih = 0; ih < q.h; ++ih) {
        std::int64_t ldk = 0;
        const float* kr = rows_f32(kj, ib, ih / group, ks, ldk);
        product(o, false, q.s, q.d, kj.s, s.scale, grad.at(ib, ih) + s.offsets[static_cast<std::size_t>(j)], s.total, kr,
                ldk, dq_acc.view().row<float>(ib, 0, ih), dq_acc.view().stride_s, pairs, scratch);
      }
  });
  // The full-length K/V gradient buffers are summed over all ranks; each keeps its rows.
  const auto w0 = Clock::now();
  comm.all_reduce_sum(dk_all.data<float>(), static_cast<std::size_t>(dk_all.view().numel()));
  comm.all_reduce_sum(dv_all.data<float>(), static_cast<std::size_t>(dv_all.view().numel()));
  stats.wait_seconds += seconds_since(w0);
  const std::int64_t mine = s.offsets[static_cast<std::size_t>(comm.rank())];
  for (std::int64_t ib = 0; ib < k.b; ++ib)
    for (std::int64_t is = 0; is < k.s; ++is)
      for (std::int64_t ih = 0; ih < k.h; ++ih) {
        std::memcpy(dk.row<float>(ib, is, ih), dk_all.view().row<const float>(ib, mine + is, ih), static_cast<std::size_t>(k.d) * 4);
        std::memcpy(dv.row<float>(ib, is, ih), dv_all.view().row<const float>(ib, mine + is, ih), static_cast<std::size_t>(k.d) * 4);
      }
  for (std::int64_t ib = 0; ib < q.b; ++ib)
    for (std::int64_t is = 0; is < q.s; ++is)
      for (std::int64_t ih = 0; ih < q.h; ++ih)
        std::memcpy(dq.row<float>(ib, is, ih), dq_acc.view().row<const float>(ib, is, ih), static_cast<std::size_t>(q.d) * 4);
  detail::add_traffic_since(comm, mark, {comm::Op::kPointToPoint, comm::Op::kAllReduce}, stats);
  return stats;
}

}  // namespace burst::algo
