#include "burst/tensor.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <sstream>
#include <string>

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
std::atomic<std::size_t> g_high{0};  // the most ever in use (never reset): the cache's bound

void raise_to(std::atomic<std::size_t>& mark, std::size_t now) {
  std::size_t seen = mark.load(std::memory_order_relaxed);
  while (now > seen && !mark.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
  }
}

void note_allocated(std::size_t bytes) {
  const std::size_t now = g_current.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  raise_to(g_peak, now);
  raise_to(g_high, now);
}

// Freed large buffers by size (see tensor.h).
class BufferCache {
 public:
  // Never destroyed: buffers of static objects may be freed after main returns.
  static BufferCache& instance() {
    static BufferCache* cache = new BufferCache;
    return *cache;
  }
  // A cached buffer of exactly `bytes`, or nullptr after making room for a new one.
  void* take(std::size_t bytes) {
    std::lock_guard lock(mutex_);
    if (!enabled_) return nullptr;
    auto it = free_.find(bytes);
    if (it != free_.end()) {
      void* p = it->second;
      free_.erase(it);
      cached_ -= bytes;
      return p;
    }
    // Room for a new buffer within the high-water mark: largest cached first.
    while (!free_.empty() && g_current.load(std::memory_order_relaxed) + cached_ + bytes > g_high.load(std::memory_order_relaxed)) {
      auto last = std::prev(free_.end());
      std::free(last->second);
      cached_ -= last->first;
      free_.erase(last);
    }
    return nullptr;
  }
  // Keeps a freed buffer; false when the cache is off.
  bool keep(void* p, std::size_t bytes) {
    std::lock_guard lock(mutex_);
    if (!enabled_) return false;
    free_.emplace(bytes, p);
    cached_ += bytes;
    return true;
  }
  void release() {
    std::lock_guard lock(mutex_);
    for (auto& [bytes, p] : free_) std::free(p);
    free_.clear();
    cached_ = 0;
  }
  std::size_t cached() {
    std::lock_guard lock(mutex_);
    return cached_;
  }

 private:
  BufferCache() {
    const char* env = std::getenv("BURST_BUFFER_CACHE");
    enabled_ = env == nullptr || std::string(env) != "0";
  }
  std::mutex mutex_;
  std::multimap<std::size_t, void*> free_;
  std::size_t cached_ = 0;
  bool enabled_ = true;
};

}  // namespace

MemoryStats memory_stats() {
  return {g_current.load(std::memory_order_relaxed), g_peak.load(std::memory_order_relaxed),
          BufferCache::instance().cached()};
}

void reset_memory_peak() { g_peak.store(g_current.load(std::memory_order_relaxed)); }

void release_cached_buffers() { BufferCache::instance().release(); }

AlignedBuffer::AlignedBuffer(std::size_t bytes) : bytes_(bytes) {
  constexpr std::size_t kAlign = 64;
  const std::size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  const std::size_t size = rounded == 0 ? kAlign : rounded;
  void* p = size >= kLargeBuffer ? BufferCache::instance().take(size) : nullptr;
  if (p == nullptr) p = std::aligned_alloc(kAlign, size);
  if (p == nullptr) throw std::bad_alloc();
  ptr_ = std::unique_ptr<void, Free>(p, Free{size});
  note_allocated(size);
}

void AlignedBuffer::Free::operator()(void* p) const {
  g_current.fetch_sub(bytes, std::memory_order_relaxed);
  if (bytes < kLargeBuffer || !BufferCache::instance().keep(p, bytes)) std::free(p);
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
