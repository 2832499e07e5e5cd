// Non-owning views of the tensors attention works on, and an owning aligned buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "burst/dtype.h"

namespace burst {

// A [b, s, h, d] tensor: batch, sequence, heads, head_dim. The d axis is contiguous; the
// other three have element strides, so a view can address one head group, one shard of a
// larger sequence, or a tensor laid out [b, h, s, d] without a copy.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  std::int64_t b = 0, s = 0, h = 0, d = 0;
  std::int64_t stride_b = 0, stride_s = 0, stride_h = 0;

  // Address of element (ib, is, ih, 0), typed.
  template <class T>
  T* row(std::int64_t ib, std::int64_t is, std::int64_t ih) const {
    return static_cast<T*>(data) + ib * stride_b + is * stride_s + ih * stride_h;
  }
  // Untyped address of element (ib, is, ih, 0).
  void* at(std::int64_t ib, std::int64_t is, std::int64_t ih) const {
    return static_cast<char*>(data) +
           (ib * stride_b + is * stride_s + ih * stride_h) * static_cast<std::int64_t>(dtype_size(dtype));
  }
  // The view of batch entry ib alone: [1, s, h, d].
  TensorView batch_slice(std::int64_t ib) const {
    TensorView t = *this;
    t.data = at(ib, 0, 0);
    t.b = 1;
    return t;
  }
  std::int64_t numel() const { return b * s * h * d; }
  std::string shape_string() const;
};

// Builds a view of a densely packed [b, s, h, d] tensor.
TensorView dense_view(void* data, DType dtype, std::int64_t b, std::int64_t s, std::int64_t h,
                      std::int64_t d);

// Per-row fp32 statistics (lse, D = rowsum(dO * O)) of shape [b, h, s], s contiguous.
struct RowStatsView {
  float* data = nullptr;
  std::int64_t b = 0, h = 0, s = 0;
  std::int64_t stride_b = 0, stride_h = 0;

  float* row(std::int64_t ib, std::int64_t ih) const { return data + ib * stride_b + ih * stride_h; }
};

// Builds a view of a densely packed [b, h, s] statistics array.
RowStatsView dense_stats(float* data, std::int64_t b, std::int64_t h, std::int64_t s);

// Bytes held by all AlignedBuffers of the process: now, and the most since the last reset.
// Every tensor and kernel workspace of Burst lives in an AlignedBuffer, so the peak is the
// library's own memory high-water mark (benchmarks report it per call).
struct MemoryStats {
  std::size_t current = 0;
  std::size_t peak = 0;
  std::size_t cached = 0;  // freed large buffers kept for reuse (not counted in current)
};
MemoryStats memory_stats();
// Sets the peak to the current value.
void reset_memory_peak();

// Large buffers (kLargeBuffer bytes and up: shards on the wire, accumulators, gathered K/V)
// are kept when freed and handed out again to a request of the same size, so repeated calls
// (the passes of a step, the steps of training) do not fault in fresh pages each time: the
// operating system zeroes every new page, which took a third of the cycles of a 128K-token
// backward on this project's virtual machines (docs/packed-documents.md). The cache never
// makes Burst hold more than its own largest working set so far: a request it cannot serve
// first returns cached buffers until current + cached + request fits that high-water mark.
// BURST_BUFFER_CACHE=0 turns it off; release_cached_buffers() returns them now.
constexpr std::size_t kLargeBuffer = std::size_t{8} << 20;
void release_cached_buffers();

// 64-byte aligned heap memory, sized in bytes; contents start uninitialised.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t bytes);
  void* data() const { return ptr_.get(); }
  std::size_t bytes() const { return bytes_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_.get());
  }

 private:
  struct Free {
    std::size_t bytes;
    void operator()(void* p) const;
  };
  std::unique_ptr<void, Free> ptr_;
  std::size_t bytes_ = 0;
};

// A dense, owning [b, s, h, d] tensor.
class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d);
  const TensorView& view() const { return view_; }
  template <class T>
  T* data() const {
    return static_cast<T*>(view_.data);
  }
  // Bytes of the (dense) data; 0 for a default-constructed tensor.
  std::size_t bytes() const { return buffer_.bytes(); }
  // Fills with quiet NaN, so a kernel that skips an element is caught.
  void fill_nan();
  void fill_zero();

 private:
  AlignedBuffer buffer_;
  TensorView view_;
};

// A dense, owning [b, h, s] array of fp32 row statistics (lse, delta).
class RowStats {
 public:
  RowStats() = default;
  RowStats(std::int64_t b, std::int64_t h, std::int64_t s);
  const RowStatsView& view() const { return view_; }
  float* data() const { return view_.data; }
  void fill_nan();

 private:
  AlignedBuffer buffer_;
  RowStatsView view_;
};

}  // namespace burst
