// Exponential moving average of a method's module weights, held in shadow modules of the same
// architecture: shadow = d * shadow + (1 - d) * live after each step, as one operation over flat
// buffers (flat_parameters.h), with d the schedule's decay at that update (train.ema_decay, or
// with train.ema_warmup the warm-up min(decay, (1 + n) / (10 + n)) at the n-th update).
// Evaluation and sampling use the EMA; methods with a target network (TVM) get a second, fast
// one (constant decay).
#pragma once

#include "onestep/core/config.h"
#include "onestep/methods/method.h"
#include "onestep/train/flat_parameters.h"

namespace onestep {

struct EmaSchedule {
  double decay = 0.999;
  bool warmup = false;

  // train.ema_decay and train.ema_warmup.
  static EmaSchedule from_config(const Config& config);
  // The decay of update n (n = 0 for the first): with the warm-up min(decay, (1 + n) / (10 + n)),
  // so that an early EMA follows the live weights instead of holding on to the initial ones.
  double at(int64_t n) const;
  // The share of the initial weights left after `updates` updates, the product of at(n) over them
  // (the shadow starts as a copy of them): without the warm-up 62% at step 473 for decay 0.999,
  // 5% at step 3,000; with it 0.45% after 3 updates and 1e-5 after 10.
  double initial_share(int64_t updates) const;
  // ", still N% the initial weights" where that share is above 10% (early evaluations and samples
  // of EMA weights look undertrained for that reason), else "".
  std::string initial_share_note(int64_t updates) const;
};

class Ema {
 public:
  // `shadow` must have the modules and architecture of `live`; it is set to `live`.
  Ema(ModuleSet shadow, const ModuleSet& live, EmaSchedule schedule);
  // One update after training step `step` (0 for the first; a resumed run goes on from its step).
  // `live_parameters` holds the parameters of `live`, in the order of live.named_parameters().
  // prepare(step), then apply().
  void update(const ModuleSet& live, const FlatParameters& live_parameters, int64_t step);
  // The host half of an update: the decay of step `step` (in a tensor on the weights' device
  // off the CPU).
  void prepare(int64_t step);
  // The device half, with the decay of the last prepare(), no host value read (a CUDA graph
  // captures it once and replays it after each prepare()).
  void apply(const ModuleSet& live, const FlatParameters& live_parameters);
  ModuleSet& modules() { return shadow_; }
  const ModuleSet& modules() const { return shadow_; }
  const EmaSchedule& schedule() const { return schedule_; }

 private:
  ModuleSet shadow_;
  FlatParameters shadow_parameters_;
  EmaSchedule schedule_;
  double weight_ = 0;            // 1 - decay of the last prepare()
  torch::Tensor weight_tensor_;  // the same on the weights' device (off the CPU)
};

// Copies parameters and buffers of `from` into `to` (same architecture).
void copy_weights(const torch::nn::Module& from, torch::nn::Module& to);

}  // namespace onestep
