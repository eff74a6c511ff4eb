// The tanh-approximate GELU on the CPU, float32, on the activations of the DiT's MLP (batch 8,
// 196 tokens, width 1024), one thread: LibTorch's gelu against onestep's kernel (gelu_tanh,
// nets/layers.h), the forward pass alone (sampling) and forward with backward through autograd
// (training); and onestep's loops alone in each instruction set this CPU runs (gelu_kernel.h).
// Reports elements per second. Run: make bench.
#include <benchmark/benchmark.h>

#include "onestep/core/runtime.h"
#include "onestep/nets/gelu_kernel.h"
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

// The loops on one thread, without autograd or allocation: range(0) indexes supported_isas().
void BM_GeluKernelIsa(benchmark::State& state) {
  const auto isas = gelu_kernel::supported_isas();
  const auto index = static_cast<size_t>(state.range(0));
  if (index >= isas.size()) {
    state.SkipWithError("instruction set not supported by this CPU");
    return;
  }
  const auto isa = isas[index];
  const bool backward = state.range(1) == 1;
  state.SetLabel(gelu_kernel::isa_name(isa));
  torch::manual_seed(0);
  const auto x = torch::randn({8, 196, 1024}) * 2;
  const auto g = torch::randn_like(x);
  auto out = torch::empty_like(x);
  for (auto _ : state) {
    if (backward) {
      gelu_kernel::backward(g.data_ptr<float>(), x.data_ptr<float>(), out.data_ptr<float>(), x.numel(), isa);
    } else {
      gelu_kernel::forward(x.data_ptr<float>(), out.data_ptr<float>(), x.numel(), isa);
    }
    benchmark::DoNotOptimize(out.data_ptr<float>());
    benchmark::ClobberMemory();
  }
  state.counters["elements"] = benchmark::Counter(static_cast<double>(x.numel()) * state.iterations(),
                                                  benchmark::Counter::kIsRate);
}

}  // namespace

// onestep: 0 LibTorch's gelu, 1 onestep's kernel; backward: 0 forward only, 1 forward and backward.
BENCHMARK(BM_GeluTanh)->ArgsProduct({{0, 1}, {0, 1}})->ArgNames({"onestep", "backward"})->MinTime(1.0)->UseRealTime();
// isa: 0 baseline, 1 AVX2, 2 AVX-512 (where the CPU runs it); backward: 0 forward, 1 backward.
BENCHMARK(BM_GeluKernelIsa)->ArgsProduct({{0, 1, 2}, {0, 1}})->ArgNames({"isa", "backward"})->MinTime(1.0)->UseRealTime();
