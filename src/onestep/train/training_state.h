// Everything one training step reads and changes, and the step itself: the dataset, the
// method and its modules on the device, the frozen modules, the EMA (and a fast target EMA
// for methods that ask for one), Adam with its learning-rate schedule, and the data, noise and
// time streams. In a data-parallel run (a ProcessGroup) each process draws its share of the
// batch, split into train.accumulate micro-batches, from streams of its own, and gradients are
// averaged over the processes before clipping. `onestep train` (trainer.cpp) and `onestep
// bench` (benchmark.cpp) build it from a config and call the same step(). With train.cuda_graph
// the step's device work is captured as two CUDA graphs (the gradient; clipping, Adam and the
// EMA) and replayed, so that the host's work per step is the data and noise draws, their copies,
// two launches and, between them, what the eager step does there too (the average over processes,
// the gradient norm and the one transfer).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "onestep/core/config.h"
#include "onestep/methods/method.h"
#include "onestep/train/distributed.h"
#include "onestep/train/ema.h"
#include "onestep/train/optimizer.h"

namespace onestep {

// What one step did. A step whose loss or gradient norm is not finite is skipped (no update):
// finite is false and loss / grad_norm hold what was seen.
struct StepOutcome {
  bool finite = false;
  double loss = 0;
  double grad_norm = 0;
  std::map<std::string, double> parts;  // the method's loss parts, averaged over the batch
  bool stop = false;  // some process was asked to stop (stop_requested)
};

class TrainingState {
 public:
  // Validates the config and builds everything, initialised from train.seed, on train.device
  // (CUDA: device `local_rank` in a multi-process run). Throws UserError when the batch does
  // not split into the run's shares, the method's loss cannot be split, or train.cuda_graph is
  // asked for where it cannot run (not on CUDA, a method whose loss does not split:
  // Method::capture_refusal).
  explicit TrainingState(const Config& config, ProcessGroup* group = nullptr, int local_rank = 0);
  ~TrainingState();

  // One training step at 0-based index `step` (sets the learning rate of the schedule): the
  // micro-batches, the method's loss, backward, the gradient average over processes, gradient
  // clipping, Adam and the EMA updates. `stop_requested`: this process was asked to stop; every
  // process learns it through outcome.stop. With train.cuda_graph the process's first step runs
  // on a side stream (the warm-up), the second captures the graphs, and from the second on every
  // step replays them.
  StepOutcome step(int64_t step, bool stop_requested = false);

  // The states of all the run's data streams, in stream order (a collective in a multi-process
  // run: every process calls it), for the checkpoint.
  std::vector<torch::Tensor> stream_states();
  // Restores stream states read from a checkpoint written at `start_step`. With another split
  // of the batch than the checkpoint's, the streams restart from the seed; returns false then.
  bool restore_streams(const std::vector<torch::Tensor>& states, int64_t start_step);
  // Rank 0's weights (modules, EMA, target EMA) to every process.
  void broadcast_weights();

  ProcessGroup* group() { return group_; }
  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  int64_t share_size() const { return share_size_; }
  int64_t accumulate() const { return accumulate_; }

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
  ProcessGroup* group_;  // null in a one-process run
  int rank_ = 0, world_size_ = 1;
  int64_t accumulate_, share_size_;
  // Stream rank * accumulate + k of the run's world_size * accumulate shares of each step.
  std::vector<torch::Generator> streams_;
  double grad_clip_;
  bool bf16_ = false;  // train.precision

  // train.cuda_graph: the captured work with its inputs and outputs (from the second step on).
  struct Graphs;
  bool cuda_graph_ = false;
  std::unique_ptr<Graphs> graphs_;
  std::vector<std::string> part_names_;  // the loss parts of the last step, in name order

  StepOutcome graph_step(int64_t step, bool stop_requested);
  // The gradient of this process's share of the step's mean loss from the shares' batches and
  // loss draws (on the device) through Method::loss_given, with no host transfer: returns the
  // shares' numbers, [loss sum, non-finite count, the parts' sums], as doubles on the device.
  torch::Tensor gradient_given(const std::vector<Batch>& batches, const std::vector<LossDraws>& draws);
  // The rest of a step after this process's gradient and its shares' numbers: the numbers and the
  // stop flag summed over processes and the gradients averaged, the gradient norm, one transfer
  // to the host, and for a finite step the rates of step `step` and `update(gradient norm)`.
  StepOutcome finish_step(int64_t step, const torch::Tensor& share_numbers, bool stop_requested,
                          const std::function<void(const torch::Tensor&)>& update);
  // The update after a finite step, in halves: on the host, the rates of step `step`; on the
  // device, clipping by `grad_norm` (a device tensor), Adam and the EMA.
  void prepare_update(int64_t step);
  void apply_update(const torch::Tensor& grad_norm);
  // The outcome from the step's numbers on the host: [loss sum, non-finite count, the parts'
  // sums, stop flag, gradient norm].
  StepOutcome outcome_of(const torch::Tensor& numbers, bool stop) const;
};

}  // namespace onestep
