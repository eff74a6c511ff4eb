// Exponential moving average of a method's module weights, held in shadow modules of the same
// architecture: shadow = decay * shadow + (1 - decay) * live after each step, as one operation
// over flat buffers (flat_parameters.h). Evaluation and sampling use the EMA; methods with a
// target network (TVM) get a second, fast one.
#pragma once

#include "onestep/methods/method.h"
#include "onestep/train/flat_parameters.h"

namespace onestep {

class Ema {
 public:
  // `shadow` must have the modules and architecture of `live`; it is set to `live`.
  Ema(ModuleSet shadow, const ModuleSet& live, double decay);
  // `live_parameters` holds the parameters of `live`, in the order of live.named_parameters().
  void update(const ModuleSet& live, const FlatParameters& live_parameters);
  ModuleSet& modules() { return shadow_; }
  const ModuleSet& modules() const { return shadow_; }
  double decay() const { return decay_; }

 private:
  ModuleSet shadow_;
  FlatParameters shadow_parameters_;
  double decay_;
};

// The share of the initial weights left in an EMA of `decay` after `updates` updates, decay^updates
// (the shadow starts as a copy of them): 62% at step 473 for decay 0.999, 5% at step 3,000.
double ema_initial_share(double decay, int64_t updates);
// ", still N% the initial weights" where that share is above 10% (early evaluations and samples
// of EMA weights look undertrained for that reason), else "".
std::string ema_initial_share_note(double decay, int64_t updates);

// Copies parameters and buffers of `from` into `to` (same architecture).
void copy_weights(const torch::nn::Module& from, torch::nn::Module& to);

}  // namespace onestep
