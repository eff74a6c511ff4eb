// Float32 matrix products on the CPU: oneDNN's sgemm against LibTorch's BLAS (cpu_gemm.h),
// square n x n products on one and two threads; reports GFLOP/s. Each library runs in blocks of
// its own (all BLAS runs first): OpenBLAS's threads spin for a while after each product, so
// interleaving the two on two threads would leave oneDNN one core. Run: make bench (with
// OMP_WAIT_POLICY=PASSIVE, else OpenBLAS keeps to one thread: runtime.h).
#include <benchmark/benchmark.h>

#include "onestep/core/cpu_gemm.h"
#include "onestep/core/runtime.h"

using namespace onestep;

namespace {

void BM_Matmul(benchmark::State& state) {
  const bool onednn = state.range(2) == 1;
  if (onednn && !onednn_gemm_available()) {
    state.SkipWithError("this build does not route the products to oneDNN");
    return;
  }
  set_cpu_gemm(onednn ? "onednn" : "blas");
  set_threads(state.range(0));
  const int64_t n = state.range(1);
  torch::manual_seed(0);
  const auto a = torch::randn({n, n}), b = torch::randn({n, n});
  auto out = torch::empty({n, n});
  for (auto _ : state) torch::mm_out(out, a, b);
  state.counters["gflops"] = benchmark::Counter(2.0 * n * n * n * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  set_cpu_gemm("auto");
}

}  // namespace

// library: 0 the BLAS, 1 oneDNN (the last list varies slowest).
BENCHMARK(BM_Matmul)
    ->ArgsProduct({{1, 2}, {64, 128, 256, 384, 512, 1024}, {0, 1}})
    ->ArgNames({"threads", "n", "library"})
    ->MinTime(1.0)
    ->UseRealTime();
