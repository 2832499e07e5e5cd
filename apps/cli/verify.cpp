#include "verify.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/thread_pool.h"
#include "reference/compare.h"
#include "reference/reference.h"

namespace burst::cli {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Problems up to this many score entries (b h seqlen_q seqlen_k) times d are checked on every
// query row; past it the double reference (about 1 GFLOP/s per thread) would dominate the run.
constexpr double kFullCheckWork = 536870912.0;  // 2^29
constexpr std::int64_t kSampledRows = 64;
// The reference backward does about 4 d-long dot products per score entry, single-threaded
// per (batch, kv head) slice; past this it takes minutes.
constexpr double kBackwardCheckWork = 2147483648.0;  // 2^31

using Normwise = reference::NormwiseError;
using reference::lse_error;

double scale_of(const Problem& p) {
  return p.options.scale ? static_cast<double>(*p.options.scale) : 1.0 / std::sqrt(static_cast<double>(p.head_dim()));
}

reference::GradientFloors floors_of(const Problem& p) {
  return reference::gradient_floors(p.q.view(), p.k.view(), p.v.view(), p.dout.view(), scale_of(p));
}

bool all_finite(const TensorView& t) {
  for (std::int64_t ib = 0; ib < t.b; ++ib)
    for (std::int64_t is = 0; is < t.s; ++is)
      for (std::int64_t ih = 0; ih < t.h; ++ih)
        for (std::int64_t x = 0; x < t.d; ++x)
          if (!std::isfinite(reference::element(t, ib, is, ih, x))) return false;
  return true;
}

double work(const Problem& p) {
  return static_cast<double>(p.batch()) * static_cast<double>(p.heads()) *
         static_cast<double>(p.seqlen_q()) * static_cast<double>(p.seqlen_k()) *
         static_cast<double>(p.head_dim());
}

// All rows, or kSampledRows spread evenly with the first and the last among them (sorted,
// no duplicates).
std::vector<std::int64_t> rows_to_check(const Problem& p) {
  const std::int64_t sq = p.seqlen_q();
  std::vector<std::int64_t> rows;
  if (work(p) <= kFullCheckWork || sq <= kSampledRows) {
    for (std::int64_t i = 0; i < sq; ++i) rows.push_back(i);
    return rows;
  }
  for (std::int64_t i = 0; i < kSampledRows; ++i) {
    rows.push_back(i * (sq - 1) / (kSampledRows - 1));
  }
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  return rows;
}

// View of batch ib, heads [h0, h0 + n_heads) of t: (b, s, h, d) -> (1, s, n_heads, d).
TensorView slice(const TensorView& t, std::int64_t ib, std::int64_t h0, std::int64_t n_heads) {
  TensorView s = t;
  s.data = static_cast<char*>(t.data) +
           (ib * t.stride_b + h0 * t.stride_h) * static_cast<std::int64_t>(dtype_size(t.dtype));
  s.b = 1;
  s.h = n_heads;
  return s;
}

}  // namespace

ForwardCheck check_forward(const Problem& p, const ForwardOutputs& fwd, int threads) {
  const std::vector<std::int64_t> rows = rows_to_check(p);
  const auto n_rows = static_cast<std::int64_t>(rows.size());
  // forward_rows is a pure function of its rows, so chunks of rows run on separate threads.
  const std::int64_t n_chunks = std::min<std::int64_t>(n_rows, 4 * std::int64_t{threads});
  std::vector<Normwise> o_err(static_cast<std::size_t>(n_chunks));
  std::vector<double> l_err(static_cast<std::size_t>(n_chunks), 0.0);
  const TensorView& out = fwd.out.view();
  const RowStatsView& lse = fwd.lse.view();

  ThreadPool pool(threads);
  pool.parallel_for(n_chunks, [&](std::int64_t c, int) {
    const auto first = rows.begin() + c * n_rows / n_chunks;
    const auto last = rows.begin() + (c + 1) * n_rows / n_chunks;
    const std::vector<std::int64_t> chunk(first, last);
    const auto n = static_cast<std::int64_t>(chunk.size());
    const reference::ForwardResult ref =
        reference::forward_rows(p.q.view(), p.k.view(), p.v.view(), p.options, chunk);
    Normwise& oe = o_err[static_cast<std::size_t>(c)];
    double& le = l_err[static_cast<std::size_t>(c)];
    for (std::int64_t ib = 0; ib < out.b; ++ib) {
      for (std::int64_t r = 0; r < n; ++r) {
        const std::int64_t is = chunk[static_cast<std::size_t>(r)];
        for (std::int64_t ih = 0; ih < out.h; ++ih) {
          // Reference layouts: out [b, n, h, d], lse [b, h, n].
          const auto at = static_cast<std::size_t>(((ib * n + r) * out.h + ih) * out.d);
          const double* want = &ref.out[at];
          for (std::int64_t x = 0; x < out.d; ++x) {
            oe.add(reference::element(out, ib, is, ih, x), want[x]);
          }
          const double want_lse = ref.lse[static_cast<std::size_t>((ib * out.h + ih) * n + r)];
          le = std::max(le, lse_error(lse.row(ib, ih)[is], want_lse));
        }
      }
    }
  });

  ForwardCheck check;
  check.rows = n_rows;
  Normwise o_total;
  for (const Normwise& e : o_err) o_total.merge(e);
  check.o_error = o_total.error();
  for (double e : l_err) check.lse_error = std::max(check.lse_error, e);
  return check;
}

bool backward_checkable(const Problem& p) {
  if (work(p) <= kBackwardCheckWork) return true;
  // The column-sum identities of the sampled check do not hold once a NaN or an infinity
  // reaches dK or dV, so inputs holding one are checked in full, however long that takes.
  return !(all_finite(p.q.view()) && all_finite(p.k.view()) && all_finite(p.v.view()) && all_finite(p.dout.view()));
}

std::vector<TensorError> check_backward(const Problem& p, const Gradients& grads, int threads) {
  // dk and dv of one kv head gather from its whole query head group only, so the reference
  // runs independently per (batch, kv head) slice: q (1, sq, group, d), k/v (1, sk, 1, d).
  const std::int64_t group = p.heads() / p.kv_heads();
  const std::int64_t n_jobs = p.batch() * p.kv_heads();
  struct JobErrors {
    Normwise dq, dk, dv;
  };
  std::vector<JobErrors> errs(static_cast<std::size_t>(n_jobs));

  ThreadPool pool(threads);
  pool.parallel_for(n_jobs, [&](std::int64_t job, int) {
    const std::int64_t ib = job / p.kv_heads();
    const std::int64_t kvh = job % p.kv_heads();
    const reference::BackwardResult ref = reference::backward(
        slice(p.q.view(), ib, kvh * group, group), slice(p.k.view(), ib, kvh, 1),
        slice(p.v.view(), ib, kvh, 1), slice(p.dout.view(), ib, kvh * group, group), p.options);
    JobErrors& e = errs[static_cast<std::size_t>(job)];
    const std::int64_t d = p.head_dim();
    for (std::int64_t is = 0; is < p.seqlen_q(); ++is) {
      for (std::int64_t g = 0; g < group; ++g) {
        const double* want = &ref.dq[static_cast<std::size_t>((is * group + g) * d)];
        for (std::int64_t x = 0; x < d; ++x) {
          e.dq.add(reference::element(grads.dq.view(), ib, is, kvh * group + g, x), want[x]);
        }
      }
    }
    for (std::int64_t j = 0; j < p.seqlen_k(); ++j) {
      for (std::int64_t x = 0; x < d; ++x) {
        const auto at = static_cast<std::size_t>(j * d + x);
        e.dk.add(reference::element(grads.dk.view(), ib, j, kvh, x), ref.dk[at]);
        e.dv.add(reference::element(grads.dv.view(), ib, j, kvh, x), ref.dv[at]);
      }
    }
  });

  JobErrors total;
  for (const JobErrors& e : errs) {
    total.dq.merge(e.dq);
    total.dk.merge(e.dk);
    total.dv.merge(e.dv);
  }
  const reference::GradientFloors floor = floors_of(p);
  return {{"dq", total.dq.error(floor.dq)}, {"dk", total.dk.error(floor.dk)}, {"dv", total.dv.error(floor.dv)}};
}

std::vector<TensorError> check_backward_sampled(const Problem& p, const Gradients& grads, int threads) {
  const std::vector<std::int64_t> rows = rows_to_check(p);
  const auto n_rows = static_cast<std::int64_t>(rows.size());
  const std::int64_t n_chunks = std::min<std::int64_t>(n_rows, 4 * std::int64_t{threads});
  std::vector<Normwise> dq_err(static_cast<std::size_t>(n_chunks));
  const TensorView& dq = grads.dq.view();
  ThreadPool pool(threads);
  pool.parallel_for(n_chunks, [&](std::int64_t c, int) {
    const std::vector<std::int64_t> chunk(rows.begin() + c * n_rows / n_chunks, rows.begin() + (c + 1) * n_rows / n_chunks);
    const auto n = static_cast<std::int64_t>(chunk.size());
    const std::vector<double> ref = reference::backward_dq_rows(p.q.view(), p.k.view(), p.v.view(), p.dout.view(), p.options, chunk);
    Normwise& e = dq_err[static_cast<std::size_t>(c)];
    for (std::int64_t ib = 0; ib < dq.b; ++ib)
      for (std::int64_t r = 0; r < n; ++r)
        for (std::int64_t ih = 0; ih < dq.h; ++ih)
          for (std::int64_t x = 0; x < dq.d; ++x)
            e.add(reference::element(dq, ib, chunk[static_cast<std::size_t>(r)], ih, x),
                  ref[static_cast<std::size_t>(((ib * n + r) * dq.h + ih) * dq.d + x)]);
  });
  Normwise dq_total;
  for (const Normwise& e : dq_err) dq_total.merge(e);
  const reference::GradientFloors floor = floors_of(p);

  // Column sums, exact identities of the backward: every softmax row's dS sums to zero, so
  // sum_j dK_j = 0; its probabilities sum to one, so sum_j dV_j = sum of dO over the query
  // rows of the group that see at least one key. Measured against sum_j |dK_j| and
  // sum_j |dV_j|, so a shard left out or counted twice shows at once. Where every dK_j is
  // rounding noise around 0 (a window of (0, 0)), sum_j |dK_j| is noise too; the sum of
  // seqlen_k independent noises grows like sqrt(seqlen_k), so dK's floor times that bounds it.
  const double dk_sum_floor = floor.dk * std::sqrt(static_cast<double>(p.seqlen_k()));
  const std::int64_t group = p.heads() / p.kv_heads(), d = p.head_dim();
  const kernels::MaskSpec& mask = p.options.mask;
  // The keys a query sees form one run (its window, cut at the query for causal and at the
  // ends of its document), which must meet the keys 0..seqlen_k-1.
  auto sees_a_key = [&](std::int64_t is) {
    const kernels::MaskSpec::KeyRange r = mask.key_range(p.options.q_pos.at(is));
    return std::max<std::int64_t>(r.first, 0) <= std::min(r.last, p.seqlen_k() - 1);
  };
  double dk_err = 0, dv_err = 0;
  std::vector<double> dk_sum(static_cast<std::size_t>(d)), dk_abs(dk_sum.size()), dv_sum(dk_sum.size()),
      dv_abs(dk_sum.size()), do_sum(dk_sum.size());
  for (std::int64_t ib = 0; ib < p.batch(); ++ib)
    for (std::int64_t kvh = 0; kvh < p.kv_heads(); ++kvh) {
      std::fill(dk_sum.begin(), dk_sum.end(), 0.0);
      std::fill(dk_abs.begin(), dk_abs.end(), 0.0);
      std::fill(dv_sum.begin(), dv_sum.end(), 0.0);
      std::fill(dv_abs.begin(), dv_abs.end(), 0.0);
      std::fill(do_sum.begin(), do_sum.end(), 0.0);
      for (std::int64_t j = 0; j < p.seqlen_k(); ++j)
        for (std::int64_t x = 0; x < d; ++x) {
          const double gk = reference::element(grads.dk.view(), ib, j, kvh, x);
          const double gv = reference::element(grads.dv.view(), ib, j, kvh, x);
          dk_sum[static_cast<std::size_t>(x)] += gk;
          dk_abs[static_cast<std::size_t>(x)] += std::fabs(gk);
          dv_sum[static_cast<std::size_t>(x)] += gv;
          dv_abs[static_cast<std::size_t>(x)] += std::fabs(gv);
        }
      for (std::int64_t is = 0; is < p.seqlen_q(); ++is) {
        if (!sees_a_key(is)) continue;
        for (std::int64_t g = 0; g < group; ++g)
          for (std::int64_t x = 0; x < d; ++x)
            do_sum[static_cast<std::size_t>(x)] += reference::element(p.dout.view(), ib, is, kvh * group + g, x);
      }
      for (std::size_t x = 0; x < dk_sum.size(); ++x) {
        const double ek = std::fabs(dk_sum[x]) / std::max({dk_abs[x], dk_sum_floor, 1e-300});
        const double ev = std::fabs(dv_sum[x] - do_sum[x]) / std::max(dv_abs[x], 1e-300);
        dk_err = std::isfinite(ek) ? std::max(dk_err, ek) : kInf;
        dv_err = std::isfinite(ev) ? std::max(dv_err, ev) : kInf;
      }
    }
  return {{"dq", dq_total.error(floor.dq)}, {"dk_sums", dk_err}, {"dv_sums", dv_err}};
}

}  // namespace burst::cli
