#include "reference/block.h"

#include <algorithm>
#include <cmath>

#include "burst/error.h"
#include "kernels/blas.h"
#include "reference/layer.h"

namespace burst::reference {
namespace {

using Vector = std::vector<double>;

Vector to_double(const float* p, std::int64_t count) { return Vector(p, p + count); }

// c (m x n) = op(a) op(b) + (accumulate ? c : 0), row-major and dense.
void gemm(const Vector& a, bool ta, const Vector& b, bool tb, Vector& c, std::int64_t m, std::int64_t n,
          std::int64_t k, bool accumulate = false) {
  if (!accumulate) c.assign(static_cast<std::size_t>(m * n), 0.0);
  kernels::dgemm(ta, tb, m, n, k, 1.0, a.data(), ta ? m : k, b.data(), tb ? k : n, accumulate ? 1.0 : 0.0, c.data(),
                 n);
}

struct Norm {
  Vector h, inv_rms;  // [rows, dim], [rows]
};

Norm rms_norm(const Vector& x, const Vector& g, std::int64_t rows, std::int64_t dim, double eps) {
  Norm out{Vector(x.size()), Vector(static_cast<std::size_t>(rows))};
  for (std::int64_t i = 0; i < rows; ++i) {
    double squares = 0;
    for (std::int64_t j = 0; j < dim; ++j) squares += x[i * dim + j] * x[i * dim + j];
    const double r = 1.0 / std::sqrt(squares / static_cast<double>(dim) + eps);
    out.inv_rms[i] = r;
    for (std::int64_t j = 0; j < dim; ++j) out.h[i * dim + j] = x[i * dim + j] * r * g[j];
  }
  return out;
}

// dx += the gradient through the norm of dh; dg = sum over rows of dh x r.
void rms_norm_backward(const Vector& x, const Vector& g, const Vector& inv_rms, const Vector& dh, std::int64_t rows,
                       std::int64_t dim, Vector& dx, Vector& dg) {
  dg.assign(static_cast<std::size_t>(dim), 0.0);
  for (std::int64_t i = 0; i < rows; ++i) {
    const double r = inv_rms[i];
    double dot = 0;
    for (std::int64_t j = 0; j < dim; ++j) {
      dg[j] += dh[i * dim + j] * x[i * dim + j] * r;
      dot += dh[i * dim + j] * g[j] * x[i * dim + j] * r;
    }
    const double mean = dot / static_cast<double>(dim);
    for (std::int64_t j = 0; j < dim; ++j) dx[i * dim + j] += r * (dh[i * dim + j] * g[j] - x[i * dim + j] * r * mean);
  }
}

double sigmoid(double a) { return 1.0 / (1.0 + std::exp(-a)); }

LayerInputs attention_inputs(const BlockInputs& in, const BlockWeights& w) {
  LayerInputs l;
  l.b = in.b;
  l.n = in.n;
  l.dim = in.dim;
  l.heads = in.heads;
  l.kv_heads = in.kv_heads;
  l.head_dim = in.head_dim;
  l.rope_base = in.rope_base;
  l.mask = in.mask;
  l.wq = w.wq;
  l.wk = w.wk;
  l.wv = w.wv;
  l.wo = w.wo;
  return l;
}

// What a block's forward keeps for its backward.
struct Saved {
  Vector x, x2, h2, gate, up;
  Norm norm1, norm2;
};

Vector block_forward(const BlockInputs& in, const BlockWeights& w, const Vector& x, Saved& s, double& max_score) {
  const std::int64_t rows = in.b * in.n, dim = in.dim, f = in.mlp_dim;
  s.x = x;
  s.norm1 = rms_norm(x, to_double(w.g1, dim), rows, dim, in.norm_eps);
  const LayerResult attended = layer(attention_inputs(in, w), s.norm1.h, nullptr);
  max_score = std::max(max_score, attended.max_abs_score);
  s.x2 = x;
  for (std::size_t i = 0; i < s.x2.size(); ++i) s.x2[i] += attended.y[i];
  s.norm2 = rms_norm(s.x2, to_double(w.g2, dim), rows, dim, in.norm_eps);
  s.h2 = s.norm2.h;
  gemm(s.h2, false, to_double(w.w1, dim * f), false, s.gate, rows, f, dim);
  gemm(s.h2, false, to_double(w.w3, dim * f), false, s.up, rows, f, dim);
  Vector z(s.gate.size()), y;
  for (std::size_t i = 0; i < z.size(); ++i) z[i] = s.gate[i] * sigmoid(s.gate[i]) * s.up[i];
  gemm(z, false, to_double(w.w2, f * dim), false, y, rows, dim, f);
  for (std::size_t i = 0; i < y.size(); ++i) y[i] += s.x2[i];
  return y;
}

// dy in, dx out (the same vector); fills the block's gradients.
void block_backward(const BlockInputs& in, const BlockWeights& w, const Saved& s, Vector& grad, BlockGradients& g) {
  const std::int64_t rows = in.b * in.n, dim = in.dim, f = in.mlp_dim;
  Vector z(s.gate.size()), dz, da(s.gate.size()), du(s.gate.size()), dh2;
  for (std::size_t i = 0; i < z.size(); ++i) z[i] = s.gate[i] * sigmoid(s.gate[i]) * s.up[i];
  gemm(z, true, grad, false, g.dw2, f, dim, rows);
  gemm(grad, false, to_double(w.w2, f * dim), true, dz, rows, f, dim);
  for (std::size_t i = 0; i < z.size(); ++i) {
    const double a = s.gate[i], sg = sigmoid(a);
    du[i] = dz[i] * a * sg;
    da[i] = dz[i] * s.up[i] * sg * (1 + a * (1 - sg));
  }
  gemm(s.h2, true, da, false, g.dw1, dim, f, rows);
  gemm(s.h2, true, du, false, g.dw3, dim, f, rows);
  gemm(da, false, to_double(w.w1, dim * f), true, dh2, rows, dim, f);
  gemm(du, false, to_double(w.w3, dim * f), true, dh2, rows, dim, f, true);
  rms_norm_backward(s.x2, to_double(w.g2, dim), s.norm2.inv_rms, dh2, rows, dim, grad, g.dg2);
  const LayerResult attention = layer(attention_inputs(in, w), s.norm1.h, grad.data());
  g.dwq = attention.dwq;
  g.dwk = attention.dwk;
  g.dwv = attention.dwv;
  g.dwo = attention.dwo;
  rms_norm_backward(s.x, to_double(w.g1, dim), s.norm1.inv_rms, attention.dx, rows, dim, grad, g.dg1);
}

}  // namespace

BlockResult block(const BlockInputs& in, const float* dy) {
  BURST_CHECK(in.x && !in.layers.empty() && in.mlp_dim > 0 && in.norm_eps > 0,
              "reference block: x, at least one layer, mlp_dim > 0 and norm_eps > 0 are needed");
  for (const BlockWeights& w : in.layers)
    BURST_CHECK(w.g1 && w.g2 && w.w1 && w.w3 && w.w2, "reference block: null norm or MLP weights");
  const std::int64_t count = in.b * in.n * in.dim;
  BlockResult r;
  std::vector<Saved> saved(in.layers.size());
  Vector x = to_double(in.x, count);
  for (std::size_t i = 0; i < in.layers.size(); ++i) x = block_forward(in, in.layers[i], x, saved[i], r.max_abs_score);
  r.y = x;
  if (!dy) return r;
  Vector grad = to_double(dy, count);
  r.grads.resize(in.layers.size());
  for (std::size_t i = in.layers.size(); i-- > 0;) block_backward(in, in.layers[i], saved[i], grad, r.grads[i]);
  r.dx = grad;
  return r;
}

}  // namespace burst::reference
