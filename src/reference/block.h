// The transformer block of burst/block.h (RMSNorm, attention layer, residual, RMSNorm,
// SwiGLU MLP, residual) and a stack of them, forward and backward with every weight
// gradient, in double precision: the ground truth for the block tests and the CLI's verify
// path. The attention part is reference::layer's arithmetic on double inputs; use it on
// small problems only (attention is naive).
#pragma once

#include <cstdint>
#include <vector>

#include "burst/kernels.h"

namespace burst::reference {

// One block's full weights, row-major fp32: the attention layer's (as LayerInputs) and
// g1, g2 [dim], w1, w3 [dim, mlp_dim], w2 [mlp_dim, dim].
struct BlockWeights {
  const float *wq = nullptr, *wk = nullptr, *wv = nullptr, *wo = nullptr;
  const float *g1 = nullptr, *g2 = nullptr, *w1 = nullptr, *w3 = nullptr, *w2 = nullptr;
};

struct BlockInputs {
  std::int64_t b = 0, n = 0;  // batch, global tokens
  std::int64_t dim = 0, heads = 0, kv_heads = 0, head_dim = 0, mlp_dim = 0;
  double rope_base = 10000.0;
  double norm_eps = 1e-5;
  kernels::MaskSpec mask;             // in token positions 0..n-1
  const float* x = nullptr;           // [b, n, dim]
  std::vector<BlockWeights> layers;   // applied in order
};

struct BlockGradients {
  std::vector<double> dwq, dwk, dwv, dwo, dg1, dg2, dw1, dw3, dw2;
};

struct BlockResult {
  std::vector<double> y;                 // [b, n, dim]
  std::vector<double> dx;                // filled when a dy is given
  std::vector<BlockGradients> grads;     // per layer, filled when a dy is given
  double max_abs_score = 0.0;            // largest |scale q.k| over visible pairs, any layer
};

// Forward, and backward of sum(y * dy) when dy ([b, n, dim]) is not null.
BlockResult block(const BlockInputs& in, const float* dy);

}  // namespace burst::reference
