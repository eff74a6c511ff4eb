// The CPU float32 matrix products' library (see cpu_gemm.h): onestep's sgemm_, which LibTorch's
// calls bind to, and the switch between oneDNN and the BLAS behind it.
#include "onestep/core/cpu_gemm.h"

#include <dlfcn.h>

#include <atomic>
#include <cstdint>

#include "onestep/core/error.h"

namespace onestep {
namespace {

std::atomic<bool> use_onednn{onednn_gemm_available()};

}  // namespace

void set_cpu_gemm(const std::string& name) {
  if (name == "onednn" && !onednn_gemm_available())
    throw UserError("config: key 'train.cpu_gemm' = 'onednn': this build does not route LibTorch's matrix products "
                    "to oneDNN (no libdnnl beside LibTorch, or LibTorch does not call sgemm_); use auto or blas");
  use_onednn = name != "blas" && onednn_gemm_available();
}

std::string cpu_gemm() { return use_onednn ? "oneDNN" : "BLAS"; }

}  // namespace onestep

#ifdef ONESTEP_ONEDNN_GEMM
// oneDNN's public C API (dnnl.h, which Debian ships only in libdnnl-dev): a row-major sgemm.
extern "C" int dnnl_sgemm(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// The reference BLAS interface, column-major, as LibTorch declares and calls it.
// C = alpha op(A) op(B) + beta C in column-major storage is C^T = alpha op(B)^T op(A)^T + beta C^T
// in row-major storage: oneDNN's row-major sgemm with the operands swapped. Sizes that the BLAS
// would reject or treat as a no-op go to it, so that its checks and conventions hold.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc) {
  using Sgemm = void (*)(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                         const int*, const float*, const int*, const float*, float*, const int*);
  static const auto blas = reinterpret_cast<Sgemm>(dlsym(RTLD_NEXT, "sgemm_"));
  const auto transposed = [](char t) { return t == 't' || t == 'T' || t == 'c' || t == 'C'; };
  if (onestep::use_onednn.load(std::memory_order_relaxed) && *m > 0 && *n > 0 && *k > 0) {
    const int status = dnnl_sgemm(transposed(*transb) ? 'T' : 'N', transposed(*transa) ? 'T' : 'N', *n, *m, *k, *alpha,
                                  b, *ldb, a, *lda, *beta, c, *ldc);
    if (status == 0) return;  // dnnl_success; otherwise it has checked its arguments and written nothing
  }
  blas(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

bool onestep::onednn_gemm_available() {
  // LibTorch resolves sgemm_ in the global scope, where this definition must come first.
  static const bool bound = dlsym(RTLD_DEFAULT, "sgemm_") == reinterpret_cast<void*>(&sgemm_);
  return bound;
}
#else
bool onestep::onednn_gemm_available() { return false; }
#endif
