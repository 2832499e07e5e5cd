#include "verify.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/thread_pool.h"
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

// Running max |got - ref| and max |ref| of one tensor.
struct Normwise {
  double diff = 0.0;
  double ref = 0.0;

  void add(double got, double want) {
    diff = std::isfinite(got) ? std::max(diff, std::fabs(got - want)) : kInf;
    ref = std::max(ref, std::fabs(want));
  }
  void merge(const Normwise& other) {
    diff = std::max(diff, other.diff);
    ref = std::max(ref, other.ref);
  }
  double error() const { return diff / std::max(ref, std::numeric_limits<double>::min()); }
};

double lse_error(double got, double want) {
  if (got == want) return 0.0;  // includes -inf == -inf (a row that sees no key)
  if (!std::isfinite(got) || !std::isfinite(want)) return kInf;
  return std::fabs(got - want) / (1.0 + std::fabs(want));
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

bool backward_checkable(const Problem& p) { return work(p) <= kBackwardCheckWork; }

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
  return {{"dq", total.dq.error()}, {"dk", total.dk.error()}, {"dv", total.dv.error()}};
}

}  // namespace burst::cli
