// `onestep bench`: times the training step that `onestep train` runs (TrainingState::step,
// the same method, network, optimizer and EMA built from the same config) and the method's
// sampler, and reports a JSON object (README, "onestep bench"): the median step time over
// `iters` timed steps after `warmup` steps, samples/s, peak memory, 1/2/4-NFE sampling
// throughput at the training batch, and the batch-1 latency of a one-step sample under
// inference mode, in float32 and in bfloat16 where the device supports it, and the resolved
// config as TOML (the Python twin, bench/python, builds the same run from it). Medians, not
// means: the CPU machine is shared.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <vector>

#include "onestep/core/config.h"

namespace onestep {

struct BenchOptions {
  int64_t warmup = 5;  // untimed training steps (and sampler calls) first; the first gives loss_step0
  int64_t iters = 20;  // timed repetitions of each measurement
};

// The median of `values` (not empty): the mean of the middle two for an even count.
double median(std::vector<double> values);

// Benchmarks `config` (threads already set: set_threads) and returns the report.
nlohmann::ordered_json run_benchmark(const Config& config, const BenchOptions& options);

}  // namespace onestep
