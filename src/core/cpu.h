// What the processor can do, read once with cpuid (and xgetbv for OS register support).
#pragma once

#include <string>

namespace burst {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512dq = false;
  bool avx512vl = false;
  bool avx512bf16 = false;

  // The AVX-512 subset Burst's AVX-512 kernels are compiled for.
  bool has_avx512_kernels() const { return avx512f && avx512bw && avx512dq && avx512vl && avx2 && fma; }
  bool has_avx2_kernels() const { return avx2 && fma; }
  std::string describe() const;
};

// Features of the processor this process runs on (cached after the first call).
const CpuFeatures& cpu_features();

}  // namespace burst
