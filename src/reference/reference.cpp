#include "reference/reference.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "burst/error.h"

namespace burst::reference {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

double scale_of(const TensorView& q, const kernels::AttentionOptions& o) {
  return o.scale ? static_cast<double>(*o.scale) : 1.0 / std::sqrt(static_cast<double>(q.d));
}

// Scaled scores of query row `is` against every key; masked entries are -inf.
void score_row(const TensorView& q, const TensorView& k, const kernels::AttentionOptions& o,
               std::int64_t ib, std::int64_t is, std::int64_t ih, std::vector<double>& s) {
  const std::int64_t kvh = ih / (q.h / k.h);
  const double scale = scale_of(q, o);
  s.assign(static_cast<std::size_t>(k.s), kNegInf);
  for (std::int64_t j = 0; j < k.s; ++j) {
    if (!o.mask.visible(o.q_pos.at(is), o.k_pos.at(j))) continue;
    double dot = 0.0;
    for (std::int64_t x = 0; x < q.d; ++x) dot += element(q, ib, is, ih, x) * element(k, ib, j, kvh, x);
    s[static_cast<std::size_t>(j)] = scale * dot;
  }
}

bool visible(const kernels::AttentionOptions& o, std::int64_t is, std::int64_t j) {
  return o.mask.visible(o.q_pos.at(is), o.k_pos.at(j));
}

// Turns scores into probabilities in place and returns the lse: -inf (and P = 0) for a row
// with no score above -inf, NaN (and P NaN) for a row with a NaN score. std::max would drop
// a NaN, so the max is taken by hand.
double softmax_row(std::vector<double>& s) {
  double m = kNegInf;
  for (double x : s) m = std::isnan(x) || std::isnan(m) ? std::numeric_limits<double>::quiet_NaN() : std::max(m, x);
  if (m == kNegInf) {
    std::fill(s.begin(), s.end(), 0.0);
    return kNegInf;
  }
  double sum = 0.0;
  for (double& x : s) sum += (x = std::exp(x - m));
  for (double& x : s) x /= sum;
  return m + std::log(sum);
}

// dP_j = dO . V_j for the keys row `is` sees (0 elsewhere), and returns delta = sum_j P_j dP_j
// (= dO . O). Every sum here and below runs over the visible pairs only, a zero probability
// included: a non-finite input reaches exactly the outputs whose formula holds it
// (docs/numerics.md, "Non-finite inputs").
double dp_and_delta(const TensorView& dout, const TensorView& v, const kernels::AttentionOptions& o, std::int64_t ib,
                    std::int64_t is, std::int64_t ih, std::int64_t kvh, const std::vector<double>& p,
                    std::vector<double>& dp) {
  dp.assign(p.size(), 0.0);
  double delta = 0.0;
  for (std::size_t j = 0; j < p.size(); ++j) {
    if (!visible(o, is, static_cast<std::int64_t>(j))) continue;
    double dot = 0.0;
    for (std::int64_t x = 0; x < dout.d; ++x)
      dot += element(dout, ib, is, ih, x) * element(v, ib, static_cast<std::int64_t>(j), kvh, x);
    dp[j] = dot;
    delta += p[j] * dot;
  }
  return delta;
}

// delta = dO . O for a row with lse = -inf, whose O is exactly 0: 0, or NaN when dO holds a
// non-finite value (the kernels compute dO . O too).
double empty_row_delta(const TensorView& dout, std::int64_t ib, std::int64_t is, std::int64_t ih) {
  double delta = 0.0;
  for (std::int64_t x = 0; x < dout.d; ++x) delta += element(dout, ib, is, ih, x) * 0.0;
  return delta;
}

void check_problem(const TensorView& q, const TensorView& k, const TensorView& v) {
  BURST_CHECK(q.d == k.d && k.d == v.d && q.b == k.b && k.s == v.s && k.h == v.h &&
                  k.h > 0 && q.h % k.h == 0,
              "reference: inconsistent shapes q ", q.shape_string(), " k ", k.shape_string(),
              " v ", v.shape_string());
}

}  // namespace

double element(const TensorView& t, std::int64_t ib, std::int64_t is, std::int64_t ih,
               std::int64_t x) {
  if (t.dtype == DType::kF32) return t.row<const float>(ib, is, ih)[x];
  return bf16_to_float(t.row<const bf16_bits>(ib, is, ih)[x]);
}

ForwardResult forward_rows(const TensorView& q, const TensorView& k, const TensorView& v,
                           const kernels::AttentionOptions& o,
                           const std::vector<std::int64_t>& rows) {
  check_problem(q, k, v);
  const auto n = static_cast<std::int64_t>(rows.size());
  ForwardResult r;
  r.out.assign(static_cast<std::size_t>(q.b * n * q.h * q.d), 0.0);
  r.lse.assign(static_cast<std::size_t>(q.b * q.h * n), 0.0);
  std::vector<double> s;
  for (std::int64_t ib = 0; ib < q.b; ++ib) {
    for (std::int64_t ih = 0; ih < q.h; ++ih) {
      const std::int64_t kvh = ih / (q.h / k.h);
      for (std::int64_t r_i = 0; r_i < n; ++r_i) {
        const std::int64_t is = rows[static_cast<std::size_t>(r_i)];
        score_row(q, k, o, ib, is, ih, s);
        for (double x : s) {
          if (std::isfinite(x)) r.max_abs_score = std::max(r.max_abs_score, std::fabs(x));
        }
        const double lse = softmax_row(s);
        r.lse[static_cast<std::size_t>((ib * q.h + ih) * n + r_i)] = lse;
        if (lse == kNegInf) continue;  // O = 0 exactly, whatever V holds
        double* out = &r.out[static_cast<std::size_t>(((ib * n + r_i) * q.h + ih) * q.d)];
        for (std::int64_t j = 0; j < k.s; ++j) {
          const double p = s[static_cast<std::size_t>(j)];
          if (!visible(o, is, j)) continue;
          for (std::int64_t x = 0; x < q.d; ++x) out[x] += p * element(v, ib, j, kvh, x);
        }
      }
    }
  }
  return r;
}

ForwardResult forward(const TensorView& q, const TensorView& k, const TensorView& v,
                      const kernels::AttentionOptions& o) {
  std::vector<std::int64_t> rows(static_cast<std::size_t>(q.s));
  for (std::int64_t i = 0; i < q.s; ++i) rows[static_cast<std::size_t>(i)] = i;
  return forward_rows(q, k, v, o, rows);
}

BackwardResult backward(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& dout, const kernels::AttentionOptions& o) {
  check_problem(q, k, v);
  const double scale = scale_of(q, o);
  const std::int64_t group = q.h / k.h;
  BackwardResult r;
  r.dq.assign(static_cast<std::size_t>(q.b * q.s * q.h * q.d), 0.0);
  r.dk.assign(static_cast<std::size_t>(k.b * k.s * k.h * k.d), 0.0);
  r.dv.assign(r.dk.size(), 0.0);
  std::vector<double> p, dp;
  for (std::int64_t ib = 0; ib < q.b; ++ib) {
    for (std::int64_t ih = 0; ih < q.h; ++ih) {
      const std::int64_t kvh = ih / group;
      for (std::int64_t is = 0; is < q.s; ++is) {
        score_row(q, k, o, ib, is, ih, p);
        const bool empty = softmax_row(p) == kNegInf;
        // dS_j = P_j (dP_j - delta).
        double delta = dp_and_delta(dout, v, o, ib, is, ih, kvh, p, dp);
        if (empty) delta = empty_row_delta(dout, ib, is, ih);
        double* dq = &r.dq[static_cast<std::size_t>(((ib * q.s + is) * q.h + ih) * q.d)];
        for (std::int64_t j = 0; j < k.s; ++j) {
          const double pj = p[static_cast<std::size_t>(j)];
          if (!visible(o, is, j)) continue;
          const double ds = pj * (dp[static_cast<std::size_t>(j)] - delta);
          const std::size_t kv_at = static_cast<std::size_t>(((ib * k.s + j) * k.h + kvh) * k.d);
          for (std::int64_t x = 0; x < q.d; ++x) {
            dq[x] += scale * ds * element(k, ib, j, kvh, x);
            r.dk[kv_at + static_cast<std::size_t>(x)] += scale * ds * element(q, ib, is, ih, x);
            r.dv[kv_at + static_cast<std::size_t>(x)] += pj * element(dout, ib, is, ih, x);
          }
        }
      }
    }
  }
  return r;
}

std::vector<double> backward_dq_rows(const TensorView& q, const TensorView& k, const TensorView& v,
                                     const TensorView& dout, const kernels::AttentionOptions& o,
                                     const std::vector<std::int64_t>& rows) {
  check_problem(q, k, v);
  const double scale = scale_of(q, o);
  const auto n = static_cast<std::int64_t>(rows.size());
  std::vector<double> dq(static_cast<std::size_t>(q.b * n * q.h * q.d), 0.0);
  std::vector<double> p, dp;
  for (std::int64_t ib = 0; ib < q.b; ++ib)
    for (std::int64_t ih = 0; ih < q.h; ++ih) {
      const std::int64_t kvh = ih / (q.h / k.h);
      for (std::int64_t r = 0; r < n; ++r) {
        const std::int64_t is = rows[static_cast<std::size_t>(r)];
        score_row(q, k, o, ib, is, ih, p);
        const bool empty = softmax_row(p) == kNegInf;
        // dQ = scale sum_j P_j (dP_j - delta) K_j.
        double delta = dp_and_delta(dout, v, o, ib, is, ih, kvh, p, dp);
        if (empty) delta = empty_row_delta(dout, ib, is, ih);
        double* out = &dq[static_cast<std::size_t>(((ib * n + r) * q.h + ih) * q.d)];
        for (std::int64_t j = 0; j < k.s; ++j) {
          const double pj = p[static_cast<std::size_t>(j)];
          if (!visible(o, is, j)) continue;
          const double ds = scale * pj * (dp[static_cast<std::size_t>(j)] - delta);
          for (std::int64_t x = 0; x < q.d; ++x) out[x] += ds * element(k, ib, j, kvh, x);
        }
      }
    }
  return dq;
}

}  // namespace burst::reference
