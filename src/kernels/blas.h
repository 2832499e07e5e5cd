// GEMM tiles through OpenBLAS, loaded at run time so that Burst, not the user, picks its
// fastest kernel for this processor (see docs/blas.md).
#pragma once

#include <cstdint>
#include <string>

namespace burst::kernels {

// C = alpha op(A) op(B) + beta C on row-major fp32 matrices; op(A) is m x k, op(B) k x n.
// Runs on the calling thread (OpenBLAS's own threading is switched off).
void sgemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
           float alpha, const float* a, std::int64_t lda, const float* b, std::int64_t ldb,
           float beta, float* c, std::int64_t ldc);
// The same in double precision: the double references' projections.
void dgemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
           double alpha, const double* a, std::int64_t lda, const double* b, std::int64_t ldb,
           double beta, double* c, std::int64_t ldc);

struct BlasInfo {
  std::string library;  // path that was loaded
  std::string core;     // OpenBLAS kernel family in use, e.g. "Cooperlake"
  std::string how;      // why that core: chosen by Burst, by OPENBLAS_CORETYPE, or detected
};

// Loads OpenBLAS on first use; throws burst::Error if it cannot be found.
const BlasInfo& blas_info();

}  // namespace burst::kernels
