// Row-major fp32 matrices and the projections of the attention layer (layer.h): products
// through the BLAS tiles of `kernels`, split over the rank's threads, and the rotary position
// embedding in global token positions.
#pragma once

#include <cstdint>
#include <vector>

#include "burst/tensor.h"

namespace burst::algo {

// A row-major fp32 matrix: element (i, j) at data[i * ld + j].
struct MatrixView {
  float* data = nullptr;
  std::int64_t rows = 0, cols = 0, ld = 0;
};

// The rows of one batch entry of a [b, s, h, d] fp32 tensor whose (h, d) axes are dense, as
// an s x (h d) matrix (the projections' operand).
MatrixView batch_matrix(const TensorView& t, std::int64_t ib);

// C = op(A) op(B) + beta C, with op(A) m x k and op(B) k x n. The rows of C are split over
// `threads` threads (the calling thread's pool); each part runs one BLAS call, so results do
// not depend on the thread count.
void matmul(const MatrixView& a, bool trans_a, const MatrixView& b, bool trans_b, const MatrixView& c,
            float beta, int threads);

// Rotary position embedding (RoFormer, in the half-split pairing LLaMA uses): for every head,
// element pair (j, j + d/2) of the row at rotary position p is rotated by the angle
// p * base^(-2j/d). `positions` are the rotary positions of the tensor's s rows, given per
// token so every shard and layout rotates a token alike: global positions, or positions
// within each packed document (AttentionLayer::rope_positions). inverse = true applies the transposed rotation,
// which carries a gradient back through the forward rotation. d must be even.
void rotary_embedding(const TensorView& t, const std::vector<std::int64_t>& positions, double base,
                      bool inverse, int threads);

// Converts a dense fp32 tensor to bf16 (round to nearest even) or copies fp32 to fp32.
void convert_rows(const TensorView& from, const TensorView& to);

}  // namespace burst::algo
