// The attention layer of burst/layer.h (projections, RoPE, attention, output projection) and
// its gradients, in double precision: the ground truth for the layer tests and the CLI's
// verify path. RoPE rotates a token at its position within its document (mask.documents;
// the global position without documents), and the mask keeps every query in its document.
// Projections go through BLAS dgemm; attention is naive and materialises score rows, so use
// the full version on small problems and layer_rows on long sequences.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "burst/kernels.h"

namespace burst::reference {

struct LayerInputs {
  std::int64_t b = 0, n = 0;  // batch, global tokens (rows of x in token order)
  std::int64_t dim = 0, heads = 0, kv_heads = 0, head_dim = 0;
  double rope_base = 10000.0;  // 0: no rotary embedding
  kernels::MaskSpec mask;      // in token positions 0..n-1; documents, if any, end at n
  std::optional<float> scale;  // default 1/sqrt(head_dim)
  const float* x = nullptr;    // [b, n, dim]
  // Row-major: wq [dim, heads d], wk and wv [dim, kv_heads d], wo [heads d, dim].
  const float *wq = nullptr, *wk = nullptr, *wv = nullptr, *wo = nullptr;
};

struct LayerResult {
  std::vector<double> y;                     // [b, n or rows, dim]
  std::vector<double> dx, dwq, dwk, dwv, dwo;  // filled when a dy is given
  double max_abs_score = 0.0;                // largest |scale q.k| over visible pairs
};

// Forward, and backward of sum(y * dy) when dy ([b, n, dim]) is not null.
LayerResult layer(const LayerInputs& in, const float* dy);

// The same with x (in place of in.x) and dy in double precision: the transformer block's
// reference feeds it its own double activations.
LayerResult layer(const LayerInputs& in, const std::vector<double>& x, const double* dy);

// Forward for the listed token rows only: y is [b, rows.size(), dim].
LayerResult layer_rows(const LayerInputs& in, const std::vector<std::int64_t>& rows);

}  // namespace burst::reference
