#include "reference/layer.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "burst/error.h"
#include "kernels/blas.h"

namespace burst::reference {
namespace {

using Matrix = std::vector<double>;  // row-major, dimensions tracked by the caller

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

Matrix to_double(const float* p, std::int64_t count) { return Matrix(p, p + count); }

// C = op(A) op(B) (+ C when accumulate).
void gemm(const Matrix& a, bool ta, const Matrix& b, bool tb, Matrix& c, std::int64_t m, std::int64_t n,
          std::int64_t k, bool accumulate = false) {
  if (!accumulate) c.assign(static_cast<std::size_t>(m * n), 0.0);
  if (m == 0 || n == 0 || k == 0) return;
  kernels::dgemm(ta, tb, m, n, k, 1.0, a.data(), ta ? m : k, b.data(), tb ? k : n, 1.0, c.data(), n);
}

// Rotates the (j, j + d/2) pairs of every head of the rows at `positions`; sign -1 rotates back.
void rope(Matrix& t, std::int64_t heads, std::int64_t d, const std::vector<std::int64_t>& positions, double base,
          double sign) {
  if (base == 0.0) return;
  const std::int64_t half = d / 2;
  for (std::size_t i = 0; i < positions.size(); ++i)
    for (std::int64_t j = 0; j < half; ++j) {
      const double angle =
          static_cast<double>(positions[i]) * std::pow(base, -2.0 * static_cast<double>(j) / static_cast<double>(d));
      const double c = std::cos(angle), s = sign * std::sin(angle);
      for (std::int64_t h = 0; h < heads; ++h) {
        double* x = &t[static_cast<std::size_t>((static_cast<std::int64_t>(i) * heads + h) * d)];
        const double lo = x[j], hi = x[j + half];
        x[j] = lo * c - hi * s;
        x[j + half] = hi * c + lo * s;
      }
    }
}

// Rotary positions of tokens at `positions`: within their document (position minus the
// document's first), so a packed document is rotated as if it stood alone.
std::vector<std::int64_t> within_documents(const kernels::MaskSpec& mask, const std::vector<std::int64_t>& positions) {
  std::vector<std::int64_t> out = positions;
  const auto& c = mask.documents;
  for (std::int64_t& p : out)
    if (!c.empty()) p -= *(std::upper_bound(c.begin(), c.end(), p) - 1);  // the last boundary <= p
  return out;
}

struct Dims {
  std::int64_t n, dim, hq, hkv, d;
  double scale;
};

// Softmax probabilities of query row (q_row, head h) at position qpos over all keys; returns
// the lse and tracks the largest |score|.
double probabilities(const Dims& z, const kernels::MaskSpec& mask, const double* q_row, std::int64_t qpos,
                     const Matrix& k, std::int64_t kvh, std::vector<double>& p, double& max_abs) {
  p.assign(static_cast<std::size_t>(z.n), kNegInf);
  double top = kNegInf;
  for (std::int64_t j = 0; j < z.n; ++j) {
    if (!mask.visible(qpos, j)) continue;
    const double* kr = &k[static_cast<std::size_t>((j * z.hkv + kvh) * z.d)];
    double dot = 0.0;
    for (std::int64_t x = 0; x < z.d; ++x) dot += q_row[x] * kr[x];
    const double s = z.scale * dot;
    p[static_cast<std::size_t>(j)] = s;
    top = std::max(top, s);
    max_abs = std::max(max_abs, std::fabs(s));
  }
  if (top == kNegInf) {
    std::fill(p.begin(), p.end(), 0.0);
    return kNegInf;
  }
  double sum = 0.0;
  for (double& s : p) {
    s = s == kNegInf ? 0.0 : std::exp(s - top);
    sum += s;
  }
  for (double& s : p) s /= sum;
  return top + std::log(sum);
}

// o (zeroed, one row per query) += softmax(scale q k^T, masked) v for query rows at `positions`
// against every key 0..n-1.
void attend(const Dims& z, const kernels::MaskSpec& mask, const Matrix& q, const std::vector<std::int64_t>& positions,
            const Matrix& k, const Matrix& v, Matrix& o, double& max_abs) {
  const std::int64_t group = z.hq / z.hkv;
  std::vector<double> p;
  for (std::int64_t h = 0; h < z.hq; ++h)
    for (std::size_t i = 0; i < positions.size(); ++i) {
      const auto row = static_cast<std::int64_t>(i);
      probabilities(z, mask, &q[static_cast<std::size_t>((row * z.hq + h) * z.d)], positions[i], k, h / group, p,
                    max_abs);
      double* orow = &o[static_cast<std::size_t>((row * z.hq + h) * z.d)];
      for (std::int64_t j = 0; j < z.n; ++j) {
        const double pj = p[static_cast<std::size_t>(j)];
        if (pj == 0.0) continue;
        const double* vr = &v[static_cast<std::size_t>((j * z.hkv + h / group) * z.d)];
        for (std::int64_t e = 0; e < z.d; ++e) orow[e] += pj * vr[e];
      }
    }
}

void check(const LayerInputs& in) {
  BURST_CHECK(in.b > 0 && in.n > 0 && in.dim > 0 && in.heads > 0 && in.kv_heads > 0 && in.head_dim > 0 &&
                  in.heads % in.kv_heads == 0,
              "reference layer: bad sizes");
  BURST_CHECK(in.rope_base == 0.0 || in.head_dim % 2 == 0, "reference layer: RoPE needs an even head_dim");
  BURST_CHECK(in.wq && in.wk && in.wv && in.wo, "reference layer: null weights");
  const auto& c = in.mask.documents;
  if (!c.empty()) {
    BURST_CHECK(c.size() >= 2 && c.front() == 0 && c.back() == in.n, "reference layer: documents must run from 0 to ",
                in.n);
    for (std::size_t i = 1; i < c.size(); ++i)
      BURST_CHECK(c[i] > c[i - 1], "reference layer: document boundaries must increase");
  }
}

Dims dims_of(const LayerInputs& in) {
  return Dims{in.n, in.dim, in.heads, in.kv_heads, in.head_dim,
              in.scale ? static_cast<double>(*in.scale) : 1.0 / std::sqrt(static_cast<double>(in.head_dim))};
}

}  // namespace

LayerResult layer(const LayerInputs& in, const float* dy) {
  BURST_CHECK(in.x, "reference layer: null x");
  check(in);
  const std::size_t count = static_cast<std::size_t>(in.b * in.n * in.dim);
  const std::vector<double> x(in.x, in.x + count);
  if (!dy) return layer(in, x, nullptr);
  const std::vector<double> g(dy, dy + count);
  return layer(in, x, g.data());
}

LayerResult layer(const LayerInputs& in, const std::vector<double>& x_all, const double* dy) {
  BURST_CHECK(x_all.size() == static_cast<std::size_t>(in.b * in.n * in.dim), "reference layer: x has ", x_all.size(),
              " elements, expected b n dim = ", in.b * in.n * in.dim);
  check(in);
  const Dims z = dims_of(in);
  const std::int64_t qd = z.hq * z.d, kvd = z.hkv * z.d, group = z.hq / z.hkv;
  const Matrix wq = to_double(in.wq, z.dim * qd), wk = to_double(in.wk, z.dim * kvd),
               wv = to_double(in.wv, z.dim * kvd), wo = to_double(in.wo, qd * z.dim);
  std::vector<std::int64_t> positions(static_cast<std::size_t>(z.n));
  for (std::int64_t i = 0; i < z.n; ++i) positions[static_cast<std::size_t>(i)] = i;
  const std::vector<std::int64_t> rotary = within_documents(in.mask, positions);

  LayerResult r;
  r.y.resize(static_cast<std::size_t>(in.b * z.n * z.dim));
  if (dy) {
    r.dx.resize(r.y.size());
    r.dwq.assign(wq.size(), 0.0);
    r.dwk.assign(wk.size(), 0.0);
    r.dwv.assign(wv.size(), 0.0);
    r.dwo.assign(wo.size(), 0.0);
  }
  std::vector<double> p;
  for (std::int64_t ib = 0; ib < in.b; ++ib) {
    const Matrix x(x_all.begin() + ib * z.n * z.dim, x_all.begin() + (ib + 1) * z.n * z.dim);
    Matrix q, k, v, o(static_cast<std::size_t>(z.n * qd), 0.0), y;
    gemm(x, false, wq, false, q, z.n, qd, z.dim);
    gemm(x, false, wk, false, k, z.n, kvd, z.dim);
    gemm(x, false, wv, false, v, z.n, kvd, z.dim);
    rope(q, z.hq, z.d, rotary, in.rope_base, 1.0);
    rope(k, z.hkv, z.d, rotary, in.rope_base, 1.0);
    attend(z, in.mask, q, positions, k, v, o, r.max_abs_score);
    gemm(o, false, wo, false, y, z.n, z.dim, qd);
    std::copy(y.begin(), y.end(), r.y.begin() + ib * z.n * z.dim);
    if (!dy) continue;

    // Backward of sum(y * dy).
    const Matrix g(dy + ib * z.n * z.dim, dy + (ib + 1) * z.n * z.dim);
    Matrix dout, dq(q.size(), 0.0), dk(k.size(), 0.0), dv(v.size(), 0.0), dx;
    gemm(o, true, g, false, r.dwo, qd, z.dim, z.n, true);
    gemm(g, false, wo, true, dout, z.n, qd, z.dim);
    std::vector<double> dp(static_cast<std::size_t>(z.n));
    for (std::int64_t h = 0; h < z.hq; ++h) {
      const std::int64_t kvh = h / group;
      for (std::int64_t i = 0; i < z.n; ++i) {
        const double* qrow = &q[static_cast<std::size_t>((i * z.hq + h) * z.d)];
        const double* grow = &dout[static_cast<std::size_t>((i * z.hq + h) * z.d)];
        probabilities(z, in.mask, qrow, i, k, kvh, p, r.max_abs_score);
        double delta = 0.0;
        for (std::int64_t j = 0; j < z.n; ++j) {
          const double pj = p[static_cast<std::size_t>(j)];
          dp[static_cast<std::size_t>(j)] = 0.0;
          if (pj == 0.0) continue;
          const double* vr = &v[static_cast<std::size_t>((j * z.hkv + kvh) * z.d)];
          double dot = 0.0;
          for (std::int64_t e = 0; e < z.d; ++e) dot += grow[e] * vr[e];
          dp[static_cast<std::size_t>(j)] = dot;
          delta += pj * dot;
        }
        double* dqrow = &dq[static_cast<std::size_t>((i * z.hq + h) * z.d)];
        for (std::int64_t j = 0; j < z.n; ++j) {
          const double pj = p[static_cast<std::size_t>(j)];
          if (pj == 0.0) continue;
          const double ds = pj * (dp[static_cast<std::size_t>(j)] - delta);
          const auto at = static_cast<std::size_t>((j * z.hkv + kvh) * z.d);
          for (std::int64_t e = 0; e < z.d; ++e) {
            dqrow[e] += z.scale * ds * k[at + static_cast<std::size_t>(e)];
            dk[at + static_cast<std::size_t>(e)] += z.scale * ds * qrow[e];
            dv[at + static_cast<std::size_t>(e)] += pj * grow[e];
          }
        }
      }
    }
    rope(dq, z.hq, z.d, rotary, in.rope_base, -1.0);
    rope(dk, z.hkv, z.d, rotary, in.rope_base, -1.0);
    gemm(x, true, dq, false, r.dwq, z.dim, qd, z.n, true);
    gemm(x, true, dk, false, r.dwk, z.dim, kvd, z.n, true);
    gemm(x, true, dv, false, r.dwv, z.dim, kvd, z.n, true);
    gemm(dq, false, wq, true, dx, z.n, z.dim, qd);
    gemm(dk, false, wk, true, dx, z.n, z.dim, kvd, true);
    gemm(dv, false, wv, true, dx, z.n, z.dim, kvd, true);
    std::copy(dx.begin(), dx.end(), r.dx.begin() + ib * z.n * z.dim);
  }
  return r;
}

LayerResult layer_rows(const LayerInputs& in, const std::vector<std::int64_t>& rows) {
  BURST_CHECK(in.x, "reference layer: null x");
  check(in);
  const Dims z = dims_of(in);
  const std::int64_t qd = z.hq * z.d, kvd = z.hkv * z.d;
  const auto m = static_cast<std::int64_t>(rows.size());
  for (std::int64_t row : rows)
    BURST_CHECK(row >= 0 && row < z.n, "reference layer: row ", row, " outside [0, ", z.n, ")");
  const Matrix wq = to_double(in.wq, z.dim * qd), wk = to_double(in.wk, z.dim * kvd),
               wv = to_double(in.wv, z.dim * kvd), wo = to_double(in.wo, qd * z.dim);
  std::vector<std::int64_t> positions(static_cast<std::size_t>(z.n));
  for (std::int64_t i = 0; i < z.n; ++i) positions[static_cast<std::size_t>(i)] = i;
  const std::vector<std::int64_t> q_rotary = within_documents(in.mask, rows),
                                  k_rotary = within_documents(in.mask, positions);
  LayerResult r;
  r.y.resize(static_cast<std::size_t>(in.b * m * z.dim));
  for (std::int64_t ib = 0; ib < in.b; ++ib) {
    const Matrix x = to_double(in.x + ib * z.n * z.dim, z.n * z.dim);
    Matrix xs(static_cast<std::size_t>(m * z.dim));
    for (std::int64_t i = 0; i < m; ++i)
      std::copy_n(x.begin() + rows[static_cast<std::size_t>(i)] * z.dim, z.dim, xs.begin() + i * z.dim);
    Matrix q, k, v, o(static_cast<std::size_t>(m * qd), 0.0), y;
    gemm(xs, false, wq, false, q, m, qd, z.dim);
    gemm(x, false, wk, false, k, z.n, kvd, z.dim);
    gemm(x, false, wv, false, v, z.n, kvd, z.dim);
    rope(q, z.hq, z.d, q_rotary, in.rope_base, 1.0);
    rope(k, z.hkv, z.d, k_rotary, in.rope_base, 1.0);
    attend(z, in.mask, q, rows, k, v, o, r.max_abs_score);
    gemm(o, false, wo, false, y, m, z.dim, qd);
    std::copy(y.begin(), y.end(), r.y.begin() + ib * m * z.dim);
  }
  return r;
}

}  // namespace burst::reference
