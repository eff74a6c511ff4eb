// Time samplers of spec §0: `uniform` t ~ U(0,1) and `logit-normal(mu, sigma)`:
// t = sigmoid(n), n ~ N(mu, sigma).
#pragma once

#include <torch/torch.h>

#include <string>

namespace onestep {

class Config;

struct TimeSampler {
  std::string kind = "logit-normal";  // or "uniform"
  double mu = -0.4;
  double sigma = 1.0;

  static TimeSampler from_config(const Config& config);
  // n draws (CPU, float32) with `gen`.
  torch::Tensor draw(int64_t n, torch::Generator& gen) const;
};

}  // namespace onestep
