#include "core/tensor.h"

#include <cstdlib>
#include <new>
#include <sstream>

namespace burst {

std::string TensorView::shape_string() const {
  std::ostringstream os;
  os << "[" << b << ", " << s << ", " << h << ", " << d << "] " << dtype_name(dtype);
  return os.str();
}

TensorView dense_view(void* data, DType dtype, std::int64_t b, std::int64_t s, std::int64_t h,
                      std::int64_t d) {
  return TensorView{data, dtype, b, s, h, d, s * h * d, h * d, d};
}

RowStatsView dense_stats(float* data, std::int64_t b, std::int64_t h, std::int64_t s) {
  return RowStatsView{data, b, h, s, h * s, s};
}

AlignedBuffer::AlignedBuffer(std::size_t bytes) : bytes_(bytes) {
  constexpr std::size_t kAlign = 64;
  const std::size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, rounded == 0 ? kAlign : rounded);
  if (p == nullptr) throw std::bad_alloc();
  ptr_.reset(p);
}

void AlignedBuffer::Free::operator()(void* p) const { std::free(p); }

}  // namespace burst
