#include "kernels/blas.h"

#include <dlfcn.h>

#include <climits>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/cpu.h"
#include "burst/error.h"

namespace burst::kernels {
namespace {

// CBLAS's ABI constants.
constexpr int kRowMajor = 101;
constexpr int kNoTrans = 111;
constexpr int kTrans = 112;

using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*,
                         int, float, float*, int);
using DgemmFn = void (*)(int, int, int, int, int, int, double, const double*, int, const double*,
                         int, double, double*, int);

struct Blas {
  SgemmFn sgemm = nullptr;
  DgemmFn dgemm = nullptr;
  BlasInfo info;
};

// OpenBLAS 0.3.21 picks its kernels once, while it loads, and does not recognise every
// AVX-512 processor (it falls back to an SSE3 kernel at a fifth of the speed). When the user
// has not chosen, Burst names the AVX-512 core for it; OpenBLAS still checks that the
// processor supports what it is told.
std::string choose_core(std::string& how) {
  if (const char* user = std::getenv("OPENBLAS_CORETYPE"); user != nullptr && *user != '\0') {
    how = "OPENBLAS_CORETYPE set by the user";
    return {};
  }
  const CpuFeatures& cpu = cpu_features();
  if (!cpu.has_avx512_kernels()) {
    how = "detected by OpenBLAS";
    return {};
  }
  how = "chosen by Burst for this AVX-512 processor";
  return cpu.avx512bf16 ? "Cooperlake" : "SkylakeX";
}

Blas load() {
  Blas blas;
  const std::string core = choose_core(blas.info.how);
  // Both variables are read by OpenBLAS's constructor only; restore them afterwards so child
  // processes see the environment the user gave.
  const bool set_core = !core.empty();
  const bool set_threads = std::getenv("OPENBLAS_NUM_THREADS") == nullptr;
  if (set_core) setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
  if (set_threads) setenv("OPENBLAS_NUM_THREADS", "1", 1);

  std::vector<std::string> candidates;
  if (const char* path = std::getenv("BURST_OPENBLAS"); path != nullptr && *path != '\0') {
    candidates.emplace_back(path);
  } else {
    candidates = {"/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
                  "libopenblas.so.0"};
  }
  void* handle = nullptr;
  std::string tried;
  for (const auto& path : candidates) {
    handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle != nullptr) {
      blas.info.library = path;
      break;
    }
    tried += (tried.empty() ? "" : ", ") + path;
  }
  if (set_core) unsetenv("OPENBLAS_CORETYPE");
  if (set_threads) unsetenv("OPENBLAS_NUM_THREADS");
  BURST_CHECK(handle != nullptr, "OpenBLAS: could not load it (tried ", tried,
              "); run scripts/install-deps.sh or set BURST_OPENBLAS to libopenblas.so");

  blas.sgemm = reinterpret_cast<SgemmFn>(dlsym(handle, "cblas_sgemm"));
  BURST_CHECK(blas.sgemm != nullptr, "OpenBLAS: ", blas.info.library, " has no cblas_sgemm");
  blas.dgemm = reinterpret_cast<DgemmFn>(dlsym(handle, "cblas_dgemm"));
  BURST_CHECK(blas.dgemm != nullptr, "OpenBLAS: ", blas.info.library, " has no cblas_dgemm");
  if (auto set_threads_fn = reinterpret_cast<void (*)(int)>(dlsym(handle, "openblas_set_num_threads"))) {
    set_threads_fn(1);
  }
  if (auto corename = reinterpret_cast<char* (*)()>(dlsym(handle, "openblas_get_corename"))) {
    blas.info.core = corename();
  }
  return blas;
}

const Blas& blas() {
  static const Blas instance = load();
  return instance;
}

int to_int(std::int64_t v, const char* what) {
  BURST_CHECK(v >= 0 && v <= INT_MAX, "gemm: ", what, " must fit a 32-bit BLAS int, got ", v);
  return static_cast<int>(v);
}

}  // namespace

const BlasInfo& blas_info() { return blas().info; }

void sgemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
           float alpha, const float* a, std::int64_t lda, const float* b, std::int64_t ldb,
           float beta, float* c, std::int64_t ldc) {
  blas().sgemm(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans,
               to_int(m, "m"), to_int(n, "n"), to_int(k, "k"), alpha, a, to_int(lda, "lda"), b,
               to_int(ldb, "ldb"), beta, c, to_int(ldc, "ldc"));
}

void dgemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
           double alpha, const double* a, std::int64_t lda, const double* b, std::int64_t ldb,
           double beta, double* c, std::int64_t ldc) {
  blas().dgemm(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans,
               to_int(m, "m"), to_int(n, "n"), to_int(k, "k"), alpha, a, to_int(lda, "lda"), b,
               to_int(ldb, "ldb"), beta, c, to_int(ldc, "ldc"));
}

}  // namespace burst::kernels
