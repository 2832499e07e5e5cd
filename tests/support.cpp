#include "support.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

namespace burst::testing {

Tensor random_tensor(DType dtype, std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d,
                     std::uint64_t seed, double stddev) {
  Tensor t(dtype, b, s, h, d);
  std::mt19937_64 gen(seed * 0x9E3779B97F4A7C15ull + 12345);
  std::normal_distribution<float> dist(0.0f, static_cast<float>(stddev));
  const auto n = static_cast<std::size_t>(t.view().numel());
  for (std::size_t i = 0; i < n; ++i) {
    const float x = dist(gen);
    if (dtype == DType::kF32) {
      t.data<float>()[i] = x;
    } else {
      t.data<bf16_bits>()[i] = float_to_bf16(x);
    }
  }
  return t;
}

std::vector<std::int64_t> zigzag_positions(std::int64_t total, int world, int rank) {
  const std::int64_t chunks = 2 * world;
  auto chunk_start = [&](std::int64_t c) { return c * total / chunks; };
  std::vector<std::int64_t> out;
  for (std::int64_t c : {std::int64_t{rank}, chunks - 1 - rank}) {
    for (std::int64_t t = chunk_start(c); t < chunk_start(c + 1); ++t) out.push_back(t);
  }
  return out;
}

std::vector<std::int64_t> striped_positions(std::int64_t total, int world, int rank) {
  std::vector<std::int64_t> out;
  for (std::int64_t t = rank; t < total; t += world) out.push_back(t);
  return out;
}

namespace {
constexpr double kUnit = 1.0 / (1 << 24);
constexpr double kBf16Unit = 1.0 / (1 << 8);
}  // namespace

double forward_tolerance(std::int64_t d, std::int64_t seqlen_k, double max_abs_score,
                         DType out_dtype) {
  const double fp32 = 2 * kUnit * (static_cast<double>(d) * (1 + max_abs_score) +
                                   static_cast<double>(seqlen_k));
  return fp32 + (out_dtype == DType::kBF16 ? kBf16Unit : 0.0);
}

double backward_tolerance(std::int64_t d, std::int64_t seqlen_k, double max_abs_score) {
  return 4 * kUnit * (static_cast<double>(d) * (1 + max_abs_score) +
                       static_cast<double>(seqlen_k) + static_cast<double>(d));
}

std::vector<double> to_double(const TensorView& t) {
  std::vector<double> out;
  out.reserve(static_cast<std::size_t>(t.numel()));
  for (std::int64_t ib = 0; ib < t.b; ++ib)
    for (std::int64_t is = 0; is < t.s; ++is)
      for (std::int64_t ih = 0; ih < t.h; ++ih)
        for (std::int64_t x = 0; x < t.d; ++x) out.push_back(reference::element(t, ib, is, ih, x));
  return out;
}

double max_abs(const TensorView& t) {
  double m = 0.0;
  for (double x : to_double(t)) m = std::max(m, std::fabs(x));
  return m;
}

GradientFloors gradient_floors(const TensorView& q, const TensorView& k, const TensorView& v,
                               const TensorView& dout, double scale) {
  const reference::GradientFloors f = reference::gradient_floors(q, k, v, dout, scale);
  return {f.dq, f.dk, f.dv};
}

double relative_error(const TensorView& got, const std::vector<double>& ref, double floor) {
  const std::vector<double> g = to_double(got);
  if (g.size() != ref.size()) return std::numeric_limits<double>::infinity();
  reference::NormwiseError e;
  for (std::size_t i = 0; i < g.size(); ++i) e.add(g[i], ref[i]);
  return e.error(floor);
}

double lse_error(const RowStatsView& got, const std::vector<double>& ref) {
  double err = 0.0;
  std::size_t i = 0;
  for (std::int64_t ib = 0; ib < got.b; ++ib) {
    for (std::int64_t ih = 0; ih < got.h; ++ih) {
      const float* row = got.row(ib, ih);
      for (std::int64_t is = 0; is < got.s; ++is, ++i) {
        err = std::max(err, reference::lse_error(row[is], ref[i]));
      }
    }
  }
  return err;
}

namespace {
const char* row_bytes_at(const TensorView& t, std::int64_t ib, std::int64_t is, std::int64_t ih) {
  const std::int64_t element = ib * t.stride_b + is * t.stride_s + ih * t.stride_h;
  return static_cast<const char*>(t.data) + element * static_cast<std::int64_t>(dtype_size(t.dtype));
}
}  // namespace

bool bitwise_equal(const TensorView& a, const TensorView& b) {
  if (a.b != b.b || a.s != b.s || a.h != b.h || a.d != b.d || a.dtype != b.dtype) return false;
  const std::size_t row_bytes = static_cast<std::size_t>(a.d) * dtype_size(a.dtype);
  for (std::int64_t ib = 0; ib < a.b; ++ib)
    for (std::int64_t is = 0; is < a.s; ++is)
      for (std::int64_t ih = 0; ih < a.h; ++ih)
        if (std::memcmp(row_bytes_at(a, ib, is, ih), row_bytes_at(b, ib, is, ih), row_bytes) != 0)
          return false;
  return true;
}

bool bitwise_equal(const RowStatsView& a, const RowStatsView& b) {
  if (a.b != b.b || a.h != b.h || a.s != b.s) return false;
  for (std::int64_t ib = 0; ib < a.b; ++ib)
    for (std::int64_t ih = 0; ih < a.h; ++ih)
      if (std::memcmp(a.row(ib, ih), b.row(ib, ih), static_cast<std::size_t>(a.s) * 4) != 0) return false;
  return true;
}

std::vector<kernels::Isa> isas_under_test() { return kernels::supported_isas(); }

}  // namespace burst::testing
