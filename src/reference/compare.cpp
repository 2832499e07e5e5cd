#include "reference/compare.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "reference/reference.h"

namespace burst::reference {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// The same non-finite value on both sides: NaN and NaN, or equal infinities.
bool same_non_finite(double got, double want) {
  return (std::isnan(got) && std::isnan(want)) || (std::isinf(got) && got == want);
}

}  // namespace

void NormwiseError::add(double got, double want) {
  if (std::isfinite(got) && std::isfinite(want)) {
    diff_ = std::max(diff_, std::fabs(got - want));
    ref_ = std::max(ref_, std::fabs(want));
  } else if (!same_non_finite(got, want)) {
    mismatch_ = true;
  }
}

void NormwiseError::merge(const NormwiseError& other) {
  diff_ = std::max(diff_, other.diff_);
  ref_ = std::max(ref_, other.ref_);
  mismatch_ = mismatch_ || other.mismatch_;
}

double NormwiseError::error(double floor) const {
  if (mismatch_) return kInf;
  const double scale = std::max(ref_, floor);
  return scale == 0.0 ? diff_ : diff_ / scale;
}

double lse_error(double got, double want) {
  if (std::isfinite(got) && std::isfinite(want)) return std::fabs(got - want) / (1.0 + std::fabs(want));
  return same_non_finite(got, want) ? 0.0 : kInf;
}

double max_abs_finite(const TensorView& t) {
  double m = 0.0;
  for (std::int64_t ib = 0; ib < t.b; ++ib)
    for (std::int64_t is = 0; is < t.s; ++is)
      for (std::int64_t ih = 0; ih < t.h; ++ih)
        for (std::int64_t x = 0; x < t.d; ++x) {
          const double v = element(t, ib, is, ih, x);
          if (std::isfinite(v)) m = std::max(m, std::fabs(v));
        }
  return m;
}

GradientFloors gradient_floors(const TensorView& q, const TensorView& k, const TensorView& v,
                               const TensorView& dout, double scale) {
  const double fraction = std::ldexp(static_cast<double>(q.d), kGradientFloorLog2 - 24);
  const double dp = max_abs_finite(dout) * max_abs_finite(v);
  return {fraction * scale * dp * max_abs_finite(k), fraction * scale * dp * max_abs_finite(q), 0.0};
}

}  // namespace burst::reference
