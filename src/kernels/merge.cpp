// Row-wise helpers around the kernels: running-state setup, merging partial results,
// delta = rowsum(dO * O), and the visible fraction of a mask.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "burst/error.h"
#include "core/thread_pool.h"
#include "burst/kernels.h"
#include "kernels/detail.h"

namespace burst::kernels {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

float element(const TensorView& t, const void* row, std::int64_t x) {
  return t.dtype == DType::kF32 ? static_cast<const float*>(row)[x]
                                : bf16_to_float(static_cast<const bf16_bits*>(row)[x]);
}

// Runs fn(ib, ih, is) over every query row, split by (batch, head) across threads.
template <class Fn>
void for_each_row(std::int64_t b, std::int64_t h, std::int64_t s, int threads, Fn&& fn) {
  ThreadPool& pool = ThreadPool::for_this_thread(threads);
  pool.parallel_for(b * h, [&](std::int64_t task, int) {
    for (std::int64_t is = 0; is < s; ++is) fn(task / h, task % h, is);
  });
}

}  // namespace

void init_forward_state(const TensorView& out, const RowStatsView& lse) {
  detail::check_dtype(out, "out (running state)", DType::kF32);
  detail::check_stats(lse, "lse", out.b, out.h, out.s);
  for (std::int64_t ib = 0; ib < out.b; ++ib) {
    for (std::int64_t ih = 0; ih < out.h; ++ih) {
      float* l = lse.row(ib, ih);
      for (std::int64_t is = 0; is < out.s; ++is) {
        l[is] = kNegInf;
        std::fill_n(out.row<float>(ib, is, ih), out.d, 0.0f);
      }
    }
  }
}

void merge_partials(const TensorView& out, const RowStatsView& lse, const TensorView& other_out,
                    const RowStatsView& other_lse, int threads) {
  detail::check_dtype(out, "out", DType::kF32);
  detail::check_same_shape(other_out, "other_out", out, "out");
  detail::check_stats(lse, "lse", out.b, out.h, out.s);
  detail::check_stats(other_lse, "other_lse", out.b, out.h, out.s);
  BURST_CHECK(threads >= 1, "threads: expected >= 1, got ", threads);
  for_each_row(out.b, out.h, out.s, threads, [&](std::int64_t ib, std::int64_t ih, std::int64_t is) {
    float& a = lse.row(ib, ih)[is];
    const float b = other_lse.row(ib, ih)[is];
    if (b == kNegInf) return;  // empty partial: identity
    float* o = out.row<float>(ib, is, ih);
    const void* ob = other_out.dtype == DType::kF32
                         ? static_cast<const void*>(other_out.row<const float>(ib, is, ih))
                         : static_cast<const void*>(other_out.row<const bf16_bits>(ib, is, ih));
    // Weight of the other partial: sigmoid(b - a) = 1 / (1 + exp(a - b)); 1 when a = -inf.
    const float w = 1.0f / (1.0f + std::exp(a - b));
    for (std::int64_t x = 0; x < out.d; ++x) o[x] += w * (element(other_out, ob, x) - o[x]);
    // logaddexp(a, b) = max + log1p(exp(-|a - b|)); a = -inf gives b.
    const float hi = a > b ? a : b;
    a = a == kNegInf ? b : hi + std::log1p(std::exp(-std::fabs(a - b)));
  });
}

void compute_delta(const TensorView& dout, const TensorView& out, const RowStatsView& delta,
                   int threads) {
  detail::check_same_shape(out, "out", dout, "dout");
  detail::check_stats(delta, "delta", dout.b, dout.h, dout.s);
  BURST_CHECK(threads >= 1, "threads: expected >= 1, got ", threads);
  for_each_row(dout.b, dout.h, dout.s, threads, [&](std::int64_t ib, std::int64_t ih, std::int64_t is) {
    const void* g = dout.dtype == DType::kF32 ? static_cast<const void*>(dout.row<const float>(ib, is, ih))
                                              : static_cast<const void*>(dout.row<const bf16_bits>(ib, is, ih));
    const void* o = out.dtype == DType::kF32 ? static_cast<const void*>(out.row<const float>(ib, is, ih))
                                             : static_cast<const void*>(out.row<const bf16_bits>(ib, is, ih));
    double sum = 0.0;  // d <= 256 terms; double keeps D exact to fp32 rounding
    for (std::int64_t x = 0; x < dout.d; ++x) {
      sum += static_cast<double>(element(dout, g, x)) * element(out, o, x);
    }
    delta.row(ib, ih)[is] = static_cast<float>(sum);
  });
}

double visible_fraction(std::int64_t seqlen_q, std::int64_t seqlen_k,
                        const AttentionOptions& options) {
  if (!options.mask.masks_anything()) return 1.0;
  // A query's visible keys form one run of positions (MaskSpec::key_range): count the keys
  // in it, in closed form for contiguous keys and by binary search in sorted ids otherwise.
  std::vector<std::int64_t> keys;
  if (options.k_pos.ids != nullptr) {
    keys.assign(options.k_pos.ids, options.k_pos.ids + seqlen_k);
    std::sort(keys.begin(), keys.end());
  }
  double visible = 0.0;
  for (std::int64_t i = 0; i < seqlen_q; ++i) {
    const MaskSpec::KeyRange r = options.mask.key_range(options.q_pos.at(i));
    if (r.last < r.first) continue;
    if (keys.empty()) {
      const std::int64_t lo = std::max(options.k_pos.offset, r.first);
      const std::int64_t hi = std::min(options.k_pos.offset + seqlen_k - 1, r.last);
      if (hi >= lo) visible += static_cast<double>(hi - lo + 1);
    } else {
      visible += static_cast<double>(std::upper_bound(keys.begin(), keys.end(), r.last) -
                                     std::lower_bound(keys.begin(), keys.end(), r.first));
    }
  }
  return visible / (static_cast<double>(seqlen_q) * static_cast<double>(seqlen_k));
}

}  // namespace burst::kernels
