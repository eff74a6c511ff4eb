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

// Copies parameters and buffers of `from` into `to` (same architecture).
void copy_weights(const torch::nn::Module& from, torch::nn::Module& to);

}  // namespace onestep
