#include "burst/linear.h"

#include <algorithm>
#include <cmath>

#include "burst/error.h"
#include "core/thread_pool.h"
#include "kernels/blas.h"

namespace burst::algo {

MatrixView batch_matrix(const TensorView& t, std::int64_t ib) {
  BURST_CHECK(t.dtype == DType::kF32, "projection operand: expected fp32, got ", dtype_name(t.dtype));
  BURST_CHECK(t.h == 1 || t.stride_h == t.d, "projection operand ", t.shape_string(),
              ": the head axis must be dense (stride_h ", t.d, "), got ", t.stride_h);
  return MatrixView{t.row<float>(ib, 0, 0), t.s, t.h * t.d, t.stride_s};
}

void matmul(const MatrixView& a, bool trans_a, const MatrixView& b, bool trans_b, const MatrixView& c, float beta,
            int threads) {
  const std::int64_t m = trans_a ? a.cols : a.rows, k = trans_a ? a.rows : a.cols;
  const std::int64_t kb = trans_b ? b.cols : b.rows, n = trans_b ? b.rows : b.cols;
  BURST_CHECK(k == kb && c.rows == m && c.cols == n, "matmul: op(A) is ", m, "x", k, ", op(B) ", kb, "x", n,
              ", C ", c.rows, "x", c.cols);
  if (m == 0 || n == 0) return;
  // Parts of at least 32 rows, so each BLAS call stays efficient.
  const std::int64_t parts = std::clamp<std::int64_t>(m / 32, 1, std::max(threads, 1));
  ThreadPool& pool = ThreadPool::for_this_thread(std::max(threads, 1));
  pool.parallel_for(parts, [&](std::int64_t part, int) {
    const std::int64_t i0 = m * part / parts, i1 = m * (part + 1) / parts;
    const float* a_rows = trans_a ? a.data + i0 : a.data + i0 * a.ld;
    kernels::sgemm(trans_a, trans_b, i1 - i0, n, k, 1.0f, a_rows, a.ld, b.data, b.ld, beta, c.data + i0 * c.ld, c.ld);
  });
}

void rotary_embedding(const TensorView& t, const std::vector<std::int64_t>& positions, double base, bool inverse,
                      int threads) {
  BURST_CHECK(t.dtype == DType::kF32, "rotary embedding: expected fp32, got ", dtype_name(t.dtype));
  BURST_CHECK(t.d % 2 == 0, "rotary embedding: head_dim must be even, got ", t.d);
  BURST_CHECK(static_cast<std::int64_t>(positions.size()) == t.s, "rotary embedding: ", positions.size(),
              " positions for ", t.s, " rows");
  BURST_CHECK(base > 1.0, "rotary embedding: base must be > 1, got ", base);
  const std::int64_t half = t.d / 2;
  std::vector<double> inv_freq(static_cast<std::size_t>(half));
  for (std::int64_t j = 0; j < half; ++j)
    inv_freq[static_cast<std::size_t>(j)] = std::pow(base, -2.0 * static_cast<double>(j) / static_cast<double>(t.d));
  const float sign = inverse ? -1.0f : 1.0f;
  ThreadPool& pool = ThreadPool::for_this_thread(std::max(threads, 1));
  constexpr std::int64_t kRowsPerTask = 64;
  const std::int64_t tasks = (t.s + kRowsPerTask - 1) / kRowsPerTask;
  pool.parallel_for(tasks, [&](std::int64_t task, int) {
    std::vector<float> cosine(static_cast<std::size_t>(half)), sine(static_cast<std::size_t>(half));
    for (std::int64_t is = task * kRowsPerTask; is < std::min(t.s, (task + 1) * kRowsPerTask); ++is) {
      // Angles in double: positions reach 10^6 and more, where fp32 angles lose the phase.
      const auto p = static_cast<double>(positions[static_cast<std::size_t>(is)]);
      for (std::int64_t j = 0; j < half; ++j) {
        const double angle = p * inv_freq[static_cast<std::size_t>(j)];
        cosine[static_cast<std::size_t>(j)] = static_cast<float>(std::cos(angle));
        sine[static_cast<std::size_t>(j)] = sign * static_cast<float>(std::sin(angle));
      }
      for (std::int64_t ib = 0; ib < t.b; ++ib)
        for (std::int64_t ih = 0; ih < t.h; ++ih) {
          float* x = t.row<float>(ib, is, ih);
          for (std::int64_t j = 0; j < half; ++j) {
            const float c = cosine[static_cast<std::size_t>(j)], s = sine[static_cast<std::size_t>(j)];
            const float lo = x[j], hi = x[j + half];
            x[j] = lo * c - hi * s;
            x[j + half] = hi * c + lo * s;
          }
        }
    }
  });
}

void convert_rows(const TensorView& from, const TensorView& to) {
  BURST_CHECK(from.dtype == DType::kF32, "convert_rows: source must be fp32, got ", dtype_name(from.dtype));
  BURST_CHECK(from.b == to.b && from.s == to.s && from.h == to.h && from.d == to.d, "convert_rows: shapes ",
              from.shape_string(), " and ", to.shape_string(), " differ");
  for (std::int64_t ib = 0; ib < from.b; ++ib)
    for (std::int64_t is = 0; is < from.s; ++is)
      for (std::int64_t ih = 0; ih < from.h; ++ih) {
        const float* src = from.row<float>(ib, is, ih);
        if (to.dtype == DType::kF32) {
          std::copy(src, src + from.d, to.row<float>(ib, is, ih));
        } else {
          bf16_bits* dst = to.row<bf16_bits>(ib, is, ih);
          for (std::int64_t i = 0; i < from.d; ++i) dst[i] = float_to_bf16(src[i]);
        }
      }
}

}  // namespace burst::algo
