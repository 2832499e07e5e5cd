#include "core/cpu.h"

#include <cpuid.h>

#include <cstdint>

namespace burst {
namespace {

std::uint64_t read_xcr0() {
  std::uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<std::uint64_t>(hi) << 32) | lo;
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1u;
  const bool fma = (c >> 12) & 1u;
  if (!osxsave) return f;
  const std::uint64_t xcr0 = read_xcr0();
  const bool ymm_state = (xcr0 & 0x6) == 0x6;
  const bool zmm_state = (xcr0 & 0xe6) == 0xe6;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  f.fma = fma && ymm_state;
  f.avx2 = ((b >> 5) & 1u) && ymm_state;
  f.avx512f = ((b >> 16) & 1u) && zmm_state;
  f.avx512dq = ((b >> 17) & 1u) && zmm_state;
  f.avx512bw = ((b >> 30) & 1u) && zmm_state;
  f.avx512vl = ((b >> 31) & 1u) && zmm_state;
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512bf16 = ((a >> 5) & 1u) && zmm_state;
  return f;
}

}  // namespace

std::string CpuFeatures::describe() const {
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(avx2, "avx2");
  add(fma, "fma");
  add(avx512f, "avx512f");
  add(avx512bw, "avx512bw");
  add(avx512dq, "avx512dq");
  add(avx512vl, "avx512vl");
  add(avx512bf16, "avx512_bf16");
  return s.empty() ? "baseline x86-64" : s;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

}  // namespace burst
