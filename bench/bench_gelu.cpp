// The tanh-approximate GELU on the CPU, float32, on the activations of the DiT's MLP (batch 8,
// 196 tokens, width 1024), one thread: LibTorch's gelu against onestep's kernel (gelu_tanh,
// nets/layers.h), the forward pass alone (sampling) and forward with backward through autograd
// (training). Reports elements per second. Run: make bench.
#include <benchmark/benchmark.h>

#include "onestep/core/runtime.h"
#include "onestep/nets/layers.h"

using namespace onestep;

namespace {

void BM_GeluTanh(benchmark::State& state) {
  const bool ours = state.range(0) == 1, backward = state.range(1) == 1;
  set_threads(1);
  torch::manual_seed(0);
  const auto x = (torch::randn({8, 196, 1024}) * 2).requires_grad_(backward);
  const auto g = torch::randn_like(x);
  for (auto _ : state) {
    const auto y = ours ? gelu_tanh(x) : torch::gelu(x, "tanh");
    if (backward) {
      benchmark::DoNotOptimize(torch::autograd::grad({y}, {x}, {g})[0].data_ptr());
    } else {
      benchmark::DoNotOptimize(y.data_ptr());
    }
  }
  state.counters["elements"] = benchmark::Counter(static_cast<double>(x.numel()) * state.iterations(),
                                                  benchmark::Counter::kIsRate);
}

}  // namespace

// onestep: 0 LibTorch's gelu, 1 onestep's kernel; backward: 0 forward only, 1 forward and backward.
BENCHMARK(BM_GeluTanh)->ArgsProduct({{0, 1}, {0, 1}})->ArgNames({"onestep", "backward"})->MinTime(1.0)->UseRealTime();
