// The training-step and sampling benchmark (see benchmark.h).
#include "onestep/train/benchmark.h"

#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#ifdef ONESTEP_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "onestep/core/compat.h"
#include "onestep/core/cpu_gemm.h"
#include "onestep/core/error.h"
#include "onestep/core/runtime.h"
#include "onestep/methods/linear_path.h"
#include "onestep/nets/layers.h"
#include "onestep/train/trainer.h"
#include "onestep/train/training_state.h"

namespace onestep {
namespace {

constexpr std::array<int64_t, 3> kSamplingNfe = {1, 2, 4};

void synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}

}  // namespace

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

namespace {

// Median wall time in milliseconds of `iters` calls of `fn` after `warmup` untimed ones.
double median_ms(const std::function<void()>& fn, const BenchOptions& options, const torch::Device& device) {
  for (int64_t i = 0; i < options.warmup; ++i) fn();
  synchronize(device);
  std::vector<double> times;
  for (int64_t i = 0; i < options.iters; ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    synchronize(device);
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  return median(times);
}

void reset_peak_memory(const torch::Device& device) {
#ifdef ONESTEP_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#else
  (void)device;
#endif
}

// Peak memory in MiB and what it measures: the CUDA caching allocator's peak of allocated
// bytes since reset_peak_memory, or the process's peak resident set size (getrusage).
std::pair<double, std::string> peak_memory(const torch::Device& device) {
#ifdef ONESTEP_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return {static_cast<double>(stats.allocated_bytes[0].peak) / (1 << 20), "cuda_allocator_peak"};
  }
#else
  (void)device;
#endif
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return {static_cast<double>(usage.ru_maxrss) / 1024.0, "cpu_peak_rss"};  // ru_maxrss: KiB on Linux
}

// Why bfloat16 inference cannot be measured here; empty when it can.
std::string bf16_unavailable(const torch::Device& device) {
  if (device.is_cuda()) return "";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.rfind("flags", 0) == 0) return line.find(" avx512_bf16") != std::string::npos ? "" : "the CPU lacks avx512_bf16";
  return "no /proc/cpuinfo flags to check for avx512_bf16";
}

torch::Tensor class_labels(int64_t classes, int64_t n, const torch::Device& device) {
  if (classes == 0) return {};
  return torch::arange(n, torch::TensorOptions().dtype(torch::kLong)).remainder(classes).to(device);
}

torch::Tensor noise(const std::vector<int64_t>& shape, int64_t n, const torch::Device& device) {
  std::vector<int64_t> full = {n};
  full.insert(full.end(), shape.begin(), shape.end());
  auto gen = at::detail::createCPUGenerator(0);
  return draw_noise(full, gen, device);
}

}  // namespace

nlohmann::ordered_json run_benchmark(const Config& config, const BenchOptions& options) {
  TrainingState state(config);
  const torch::Device device = state.device();
  const int64_t batch = config.get_int("train.batch_size");
  Method& method = state.method();
  int64_t parameters = 0;
  for (const auto& [name, module] : state.modules().items()) parameters += count_parameters(*module);

  nlohmann::ordered_json report;
  report["tool"] = "onestep";
  report["torch"] = compat::torch_version();
  report["method"] = config.get_string("method.name");
  report["network"] = config.get_string("model.name");
  report["data"] = config.get_string("data.name");
  report["parameters"] = parameters;
  report["batch"] = batch;
  report["device"] = device.str();
  report["threads"] = at::get_num_threads();
  report["blas_threads"] = blas_threads();
  report["cpu_gemm"] = cpu_gemm();
  report["cpu_gelu"] = cpu_gelu();
  report["openmp_wait"] = openmp_wait();
  report["cpu_memory"] = cpu_memory();
  report["cpu_memory_tunables"] = cpu_memory_tunables();
  report["warmup"] = options.warmup;
  report["iters"] = options.iters;

  // Training: step 0 gives the initial loss and counts as warm-up.
  reset_peak_memory(device);
  state.modules().train(true);
  int64_t step = 0;
  const StepOutcome first = state.step(step++);
  report["loss_step0"] = first.loss;
  const auto train_step = [&] {
    if (!state.step(step++).finite)
      throw TrainingStopped("bench: step " + std::to_string(step) + " had a non-finite loss or gradient");
  };
  const double step_ms = median_ms(train_step, {std::max<int64_t>(options.warmup - 1, 0), options.iters}, device);
  report["train_step_ms"] = step_ms;
  report["train_samples_per_s"] = static_cast<double>(batch) / (step_ms / 1000.0);
  const auto [memory, memory_kind] = peak_memory(device);
  report["peak_memory_mib"] = memory;
  report["peak_memory_kind"] = memory_kind;

  // Sampling with the EMA modules, as `onestep sample` does.
  ModuleSet& sampler_modules = state.ema().modules();
  sampler_modules.train(false);
  const auto shape = method.noise_shape(state.data_info());
  const int64_t classes = state.data_info().num_classes;
  const auto z = noise(shape, batch, device);
  const auto labels = class_labels(classes, batch, device);
  nlohmann::ordered_json sampling = nlohmann::ordered_json::array();
  for (const int64_t nfe : kSamplingNfe) {
    nlohmann::ordered_json entry;
    entry["nfe"] = nfe;
    try {
      const double ms = median_ms([&] { method.sample(sampler_modules, z, labels, {nfe}); }, options, device);
      entry["ms_per_batch"] = ms;
      entry["samples_per_s"] = static_cast<double>(batch) / (ms / 1000.0);
    } catch (const UserError& err) {  // a plan the method cannot run
      entry["ms_per_batch"] = nullptr;
      entry["samples_per_s"] = nullptr;
      entry["note"] = err.what();
    }
    sampling.push_back(entry);
  }
  report["sampling"] = sampling;

  // Deployment: one sample, one step, inference mode.
  const auto latency = [&](torch::ScalarType dtype) {
    torch::InferenceMode inference;
    const auto z1 = noise(shape, 1, device).to(dtype);
    const auto y1 = class_labels(classes, 1, device);
    return median_ms([&] { method.sample(sampler_modules, z1, y1, {1}); }, options, device);
  };
  report["latency_1nfe_batch1_ms"] = latency(torch::kFloat);
  const std::string unavailable = bf16_unavailable(device);
  if (unavailable.empty()) {
    try {
      for (const auto& [name, module] : sampler_modules.items()) module->to(torch::kBFloat16);
      report["latency_1nfe_batch1_bf16_ms"] = latency(torch::kBFloat16);
      report["bf16_note"] = "weights and activations in bfloat16";
    } catch (const c10::Error& err) {
      const std::string message = err.what_without_backtrace();
      report["latency_1nfe_batch1_bf16_ms"] = nullptr;
      report["bf16_note"] = "bfloat16 sampling failed: " + message.substr(0, message.find('\n'));
    }
  } else {
    report["latency_1nfe_batch1_bf16_ms"] = nullptr;
    report["bf16_note"] = unavailable;
  }
  report["config"] = config.to_toml();  // the fully resolved config (bench/python reads it)
  return report;
}

}  // namespace onestep
