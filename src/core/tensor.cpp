#include "burst/tensor.h"

#include <algorithm>
#include <atomic>
#include <limits>
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

namespace {

std::atomic<std::size_t> g_current{0};
std::atomic<std::size_t> g_peak{0};

void note_allocated(std::size_t bytes) {
  const std::size_t now = g_current.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  std::size_t peak = g_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

}  // namespace

MemoryStats memory_stats() {
  return {g_current.load(std::memory_order_relaxed), g_peak.load(std::memory_order_relaxed)};
}

void reset_memory_peak() { g_peak.store(g_current.load(std::memory_order_relaxed)); }

AlignedBuffer::AlignedBuffer(std::size_t bytes) : bytes_(bytes) {
  constexpr std::size_t kAlign = 64;
  const std::size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  const std::size_t size = rounded == 0 ? kAlign : rounded;
  void* p = std::aligned_alloc(kAlign, size);
  if (p == nullptr) throw std::bad_alloc();
  ptr_ = std::unique_ptr<void, Free>(p, Free{size});
  note_allocated(size);
}

void AlignedBuffer::Free::operator()(void* p) const {
  std::free(p);
  g_current.fetch_sub(bytes, std::memory_order_relaxed);
}

Tensor::Tensor(DType dtype, std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d)
    : buffer_(static_cast<std::size_t>(b * s * h * d) * dtype_size(dtype)),
      view_(dense_view(buffer_.data(), dtype, b, s, h, d)) {}

void Tensor::fill_nan() {
  const auto n = static_cast<std::size_t>(view_.numel());
  if (view_.dtype == DType::kF32) {
    std::fill_n(data<float>(), n, std::numeric_limits<float>::quiet_NaN());
  } else {
    std::fill_n(data<bf16_bits>(), n, float_to_bf16(std::numeric_limits<float>::quiet_NaN()));
  }
}

void Tensor::fill_zero() {
  std::fill_n(static_cast<char*>(view_.data), static_cast<std::size_t>(view_.numel()) * dtype_size(view_.dtype), 0);
}

RowStats::RowStats(std::int64_t b, std::int64_t h, std::int64_t s)
    : buffer_(static_cast<std::size_t>(b * h * s) * sizeof(float)),
      view_(dense_stats(buffer_.as<float>(), b, h, s)) {}

void RowStats::fill_nan() {
  std::fill_n(view_.data, static_cast<std::size_t>(view_.b * view_.h * view_.s),
              std::numeric_limits<float>::quiet_NaN());
}

}  // namespace burst
