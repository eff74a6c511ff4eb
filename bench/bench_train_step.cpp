// Training-step benchmarks: one full step (loss, backward, Adam) of Flow Matching, of
// MeanFlow (forward-mode JVP, and the double-backward fallback) and of Terminal Velocity
// Matching (JVP kept in the graph, target network pass) on the same MLP and batch; and the
// DiT's FM step with onestep's GELU kernel and with LibTorch's (train.cpu_gelu).
// The host's work per step left when the step is captured as CUDA graphs (train.cuda_graph):
// the data batch and the loss's draws of FM and MeanFlow on Fashion-MNIST.
// `<A>Over<B>` interleaves two steps and reports the median of the per-pair time ratios, which
// is robust to the noise of shared machines. Run: make bench.
#include <benchmark/benchmark.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "onestep/core/config.h"
#include "onestep/core/runtime.h"
#include "onestep/data/dataset.h"
#include "onestep/methods/method.h"
#include "onestep/nets/layers.h"
#include "onestep/nets/network.h"
#include "onestep/train/benchmark.h"
#include "onestep/train/optimizer.h"

using namespace onestep;

namespace {

// One method's training step on a fixed network, batch and generator.
class StepRunner {
 public:
  StepRunner(const std::string& method, const std::string& jvp, int64_t batch_size,
             const std::vector<std::string>& overrides = {})
      : gen_(at::detail::createCPUGenerator(0)) {
    config_.apply_override("method.name=" + method);
    if (!jvp.empty()) config_.apply_override("method.jvp=" + jvp);
    for (const auto& o : overrides) config_.apply_override(o);
    config_.validate();
    torch::manual_seed(0);
    dataset_ = make_dataset(config_);
    method_ = make_method(config_);
    modules_ = method_->build_modules(config_, {dataset_->sample_shape(), dataset_->num_classes()});
    optimizer_ = std::make_unique<Adam>(modules_.named_parameters(), AdamOptions{});
    batch_ = dataset_->train_batch(batch_size, gen_);
  }
  void step() {
    const auto out = method_->loss({modules_, &modules_, nullptr, gen_}, batch_);
    optimizer_->zero_grad();
    out.loss.backward();
    optimizer_->step(1e-4);
  }

 private:
  Config config_;
  torch::Generator gen_;
  std::unique_ptr<Dataset> dataset_;
  std::unique_ptr<Method> method_;
  ModuleSet modules_;
  std::unique_ptr<Adam> optimizer_;
  Batch batch_;
};

void train_step(benchmark::State& state, const std::string& method, const std::string& jvp) {
  set_threads(0);
  StepRunner runner(method, jvp, state.range(0));
  for (auto _ : state) runner.step();
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

void BM_FmStep(benchmark::State& state) { train_step(state, "fm", ""); }
void BM_MeanFlowStep(benchmark::State& state) { train_step(state, "meanflow", "forward"); }
void BM_MeanFlowStepDoubleBackward(benchmark::State& state) { train_step(state, "meanflow", "double-backward"); }

void BM_TvmStep(benchmark::State& state) { train_step(state, "tvm", "forward"); }

// Runs `denominator` then `numerator` once per benchmark iteration and reports the median of
// the per-pair time ratios numerator / denominator as the counter median_ratio.
void interleaved_ratio(benchmark::State& state, const std::function<void()>& numerator,
                       const std::function<void()>& denominator) {
  std::vector<double> ratios;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    denominator();
    const auto t1 = std::chrono::steady_clock::now();
    numerator();
    const auto t2 = std::chrono::steady_clock::now();
    ratios.push_back(std::chrono::duration<double>(t2 - t1).count() / std::chrono::duration<double>(t1 - t0).count());
  }
  state.counters["median_ratio"] = median(ratios);
}

// The median over interleaved pairs of (step of `a`) / (step of `b`).
void step_ratio(benchmark::State& state, const std::string& a, const std::string& b) {
  set_threads(0);
  StepRunner numerator(a, a == "fm" ? "" : "forward", state.range(0)), denominator(b, b == "fm" ? "" : "forward", state.range(0));
  interleaved_ratio(state, [&] { numerator.step(); }, [&] { denominator.step(); });
}

// The FM step of the DiT of issue 12 (Fashion-MNIST, width 256, depth 6, patch 2) on one thread,
// with onestep's GELU kernel over LibTorch's, interleaved on one model.
void BM_DitFmStepGeluKernelOverLibTorch(benchmark::State& state) {
  set_threads(1);
  StepRunner runner("fm", "", state.range(0),
                    {"data.name=fashion-mnist", "model.name=dit", "model.width=256", "model.depth=6", "model.heads=4",
                     "model.patch_size=2"});
  interleaved_ratio(
      state,
      [&] {
        set_cpu_gelu("onestep");
        runner.step();
      },
      [&] {
        set_cpu_gelu("libtorch");
        runner.step();
      });
  set_cpu_gelu("onestep");
}

void BM_MeanFlowOverFm(benchmark::State& state) { step_ratio(state, "meanflow", "fm"); }
void BM_TvmOverFm(benchmark::State& state) { step_ratio(state, "tvm", "fm"); }
void BM_TvmOverMeanFlow(benchmark::State& state) { step_ratio(state, "tvm", "meanflow"); }

// Arguments: the batch size, and 0 for FM, 1 for MeanFlow. One thread, as the host of a GPU run
// draws (the generator's draws are serial).
void BM_HostDrawsOfACapturedStep(benchmark::State& state) {
  set_threads(1);
  Config config;
  config.apply_override("data.name=fashion-mnist");
  config.apply_override(std::string("method.name=") + (state.range(1) == 1 ? "meanflow" : "fm"));
  config.validate();
  const auto dataset = make_dataset(config);
  const auto method = make_method(config);
  auto gen = at::detail::createCPUGenerator(0);
  for (auto _ : state) {
    const Batch batch = method->training_batch(*dataset, state.range(0), gen);
    benchmark::DoNotOptimize(method->draw(batch, gen));
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

}  // namespace

BENCHMARK(BM_FmStep)->Arg(256)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MeanFlowStep)->Arg(256)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MeanFlowStepDoubleBackward)->Arg(256)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TvmStep)->Arg(256)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MeanFlowOverFm)->Arg(256)->Unit(benchmark::kMillisecond)->MinTime(3.0);
BENCHMARK(BM_TvmOverFm)->Arg(256)->Unit(benchmark::kMillisecond)->MinTime(3.0);
BENCHMARK(BM_TvmOverMeanFlow)->Arg(256)->Unit(benchmark::kMillisecond)->MinTime(3.0);
BENCHMARK(BM_HostDrawsOfACapturedStep)
    ->ArgsProduct({{64, 256}, {0, 1}})
    ->ArgNames({"batch", "meanflow"})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DitFmStepGeluKernelOverLibTorch)->Arg(8)->Unit(benchmark::kMillisecond)->Iterations(15);

BENCHMARK_MAIN();
