// Exponential moving average of a network's weights, held in a shadow network of the same
// architecture: shadow = decay * shadow + (1 - decay) * live after each step. Evaluation and
// sampling use the EMA; TVM uses a second, fast one as its target network.
#pragma once

#include "onestep/nets/network.h"

namespace onestep {

class Ema {
 public:
  // `shadow` must have the architecture of the network it follows; it is set to `live`.
  Ema(Network shadow, const NetworkImpl& live, double decay);
  void update(const NetworkImpl& live);
  NetworkImpl& net() { return *shadow_; }
  const NetworkImpl& net() const { return *shadow_; }
  double decay() const { return decay_; }

 private:
  Network shadow_;
  double decay_;
};

// Copies parameters and buffers of `from` into `to` (same architecture).
void copy_weights(const NetworkImpl& from, NetworkImpl& to);

}  // namespace onestep
