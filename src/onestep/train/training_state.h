// Everything one training step reads and changes, and the step itself: the dataset, the
// method and its modules on the device, the frozen modules, the EMA (and a fast target EMA
// for methods that ask for one), Adam with its learning-rate schedule, and the run's
// generator. `onestep train` (trainer.cpp) and `onestep bench` (benchmark.cpp) build it from
// a config and call the same step().
#pragma once

#include <map>
#include <memory>
#include <string>

#include "onestep/core/config.h"
#include "onestep/methods/method.h"
#include "onestep/train/ema.h"
#include "onestep/train/optimizer.h"

namespace onestep {

// What one step did. A step whose loss or gradient norm is not finite is skipped (no update):
// finite is false and loss / grad_norm hold what was seen.
struct StepOutcome {
  bool finite = false;
  double loss = 0;
  double grad_norm = 0;
  std::map<std::string, torch::Tensor> parts;  // the method's detached loss parts
};

class TrainingState {
 public:
  // Validates the config and builds everything, initialised from train.seed, on train.device.
  explicit TrainingState(const Config& config);

  // One training step at 0-based index `step` (sets the learning rate of the schedule):
  // a batch, the method's loss, backward, gradient clipping, Adam and the EMA updates.
  StepOutcome step(int64_t step);

  const Config& config() const { return config_; }
  const torch::Device& device() const { return device_; }
  Dataset& dataset() { return *dataset_; }
  Method& method() { return *method_; }
  const DataInfo& data_info() const { return data_info_; }
  ModuleSet& modules() { return modules_; }
  Ema& ema() { return *ema_; }
  Ema* target_ema() { return target_ema_.get(); }
  Adam& optimizer() { return *optimizer_; }
  const LearningRateSchedule& schedule() const { return schedule_; }
  torch::Generator& generator() { return gen_; }

 private:
  Config config_;
  torch::Device device_;
  std::unique_ptr<Dataset> dataset_;
  std::unique_ptr<Method> method_;
  DataInfo data_info_;
  ModuleSet modules_;
  FrozenModules frozen_;
  std::unique_ptr<Ema> ema_, target_ema_;
  std::unique_ptr<Adam> optimizer_;
  LearningRateSchedule schedule_;
  torch::Generator gen_;
  int64_t batch_size_;
  double grad_clip_;
  bool bf16_ = false;  // train.precision
};

}  // namespace onestep
