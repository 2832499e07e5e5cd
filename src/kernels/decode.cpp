#include "kernels/decode.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "burst/error.h"

namespace burst::kernels {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int kKeyBlock = 64;  // keys whose scores are held at once per query row

// The two loops that touch K and V, compiled for AVX-512, AVX2 and plain x86-64 and chosen
// when the program loads (GCC's target_clones), so decoding streams the cache at memory
// speed on any of them.
// 16 independent partial sums (one vector of lanes, summed in a fixed order at the end): a
// single running sum would be a chain of dependent adds that no compiler may reorder.
__attribute__((target_clones("avx512f", "avx2", "default"))) float dot(const float* a, const float* b, int n) {
  constexpr int kLanes = 16;
  float lanes[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] += a[i + l] * b[i + l];
  float s = 0.0f;
  for (; i < n; ++i) s += a[i] * b[i];
  for (int l = 0; l < kLanes; ++l) s += lanes[l];
  return s;
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void add_scaled(float* acc, const float* v, float p, int n) {
  for (int i = 0; i < n; ++i) acc[i] += p * v[i];
}

// Row `j` of a [b, s, h, d] view at (ib, ih), as fp32 (bf16 widened into `buf`).
const float* row_f32(const TensorView& t, std::int64_t ib, std::int64_t j, std::int64_t ih, float* buf) {
  if (t.dtype == DType::kF32) return t.row<float>(ib, j, ih);
  const bf16_bits* x = t.row<bf16_bits>(ib, j, ih);
  for (std::int64_t i = 0; i < t.d; ++i) buf[i] = bf16_to_float(x[i]);
  return buf;
}

}  // namespace

void attention_forward_few_rows(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                                const RowStatsView& lse, const AttentionOptions& o) {
  check_inputs(q, k, v, o);
  BURST_CHECK(out.dtype == DType::kF32, "out: expected fp32, got ", dtype_name(out.dtype));
  const std::int64_t group = q.h / k.h, d = q.d, rows = q.s * group;
  const auto dn = static_cast<int>(d);
  const float scale = o.scale ? *o.scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  std::vector<float> qf(static_cast<std::size_t>(rows * d)), acc(static_cast<std::size_t>(rows * d));
  std::vector<float> row_max(static_cast<std::size_t>(rows)), row_sum(static_cast<std::size_t>(rows));
  std::vector<float> scores(static_cast<std::size_t>(rows * kKeyBlock)), kbuf(static_cast<std::size_t>(d)),
      vbuf(static_cast<std::size_t>(d));
  std::vector<char> nan_score(static_cast<std::size_t>(rows));
  for (std::int64_t ib = 0; ib < q.b; ++ib)
    for (std::int64_t g = 0; g < k.h; ++g) {
      // The queries of this kv head: row r = (query i, head g group + h').
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t i = r / group, h = g * group + r % group;
        std::copy_n(row_f32(q, ib, i, h, kbuf.data()), d, qf.begin() + r * d);
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      std::fill(row_max.begin(), row_max.end(), kNegInf);
      std::fill(row_sum.begin(), row_sum.end(), 0.0f);
      std::fill(nan_score.begin(), nan_score.end(), 0);
      for (std::int64_t j0 = 0; j0 < k.s; j0 += kKeyBlock) {
        const int nb = static_cast<int>(std::min<std::int64_t>(kKeyBlock, k.s - j0));
        // Scores of the block, -inf where the mask hides the pair (masked pairs are never
        // computed, so a NaN key reaches only the queries that see it).
        for (int j = 0; j < nb; ++j) {
          const float* kj = row_f32(k, ib, j0 + j, g, kbuf.data());
          const std::int64_t kp = o.k_pos.at(j0 + j);
          for (std::int64_t r = 0; r < rows; ++r) {
            const bool visible = o.mask.visible(o.q_pos.at(r / group), kp);
            scores[static_cast<std::size_t>(r * kKeyBlock + j)] = visible ? scale * dot(qf.data() + r * d, kj, dn) : kNegInf;
          }
        }
        for (std::int64_t r = 0; r < rows; ++r) {
          float* s = scores.data() + r * kKeyBlock;
          float m = row_max[static_cast<std::size_t>(r)];
          for (int j = 0; j < nb; ++j) {
            if (std::isnan(s[j])) nan_score[static_cast<std::size_t>(r)] = 1;
            m = std::max(m, s[j]);
          }
          if (m == kNegInf) continue;  // nothing visible yet
          const float factor = std::exp(row_max[static_cast<std::size_t>(r)] - m);  // exp(-inf) = 0 at the start
          float sum = row_sum[static_cast<std::size_t>(r)] * factor;
          for (int j = 0; j < nb; ++j) {
            s[j] = std::exp(s[j] - m);
            sum += s[j];
          }
          row_sum[static_cast<std::size_t>(r)] = sum;
          row_max[static_cast<std::size_t>(r)] = m;
          float* a = acc.data() + r * d;
          if (factor != 1.0f)
            for (std::int64_t x = 0; x < d; ++x) a[x] *= factor;
          // Visible keys only: a masked pair's probability is 0, but 0 * NaN is not.
          for (int j = 0; j < nb; ++j)
            if (o.mask.visible(o.q_pos.at(r / group), o.k_pos.at(j0 + j)))
              add_scaled(a, row_f32(v, ib, j0 + j, g, vbuf.data()), s[j], dn);
        }
      }
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t i = r / group, h = g * group + r % group;
        float* dst = out.row<float>(ib, i, h);
        const float m = row_max[static_cast<std::size_t>(r)], l = row_sum[static_cast<std::size_t>(r)];
        if (nan_score[static_cast<std::size_t>(r)]) {
          std::fill_n(dst, d, std::numeric_limits<float>::quiet_NaN());
          lse.row(ib, h)[i] = std::numeric_limits<float>::quiet_NaN();
        } else if (m == kNegInf) {  // sees no key: 0 and -inf, as every kernel
          std::fill_n(dst, d, 0.0f);
          lse.row(ib, h)[i] = kNegInf;
        } else {
          for (std::int64_t x = 0; x < d; ++x) dst[x] = acc[static_cast<std::size_t>(r * d + x)] / l;
          lse.row(ib, h)[i] = m + std::log(l);
        }
      }
    }
}

}  // namespace burst::kernels
