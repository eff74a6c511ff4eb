// Uniform and logit-normal time samplers (see time_sampler.h).
#include "onestep/methods/time_sampler.h"

#include "onestep/core/config.h"

namespace onestep {

TimeSampler TimeSampler::from_config(const Config& config) {
  return {config.get_string("method.time_sampler"), config.get_float("method.time_mu"),
          config.get_float("method.time_sigma")};
}

torch::Tensor TimeSampler::draw(int64_t n, torch::Generator& gen) const {
  if (kind == "uniform") return torch::rand({n}, gen);
  return torch::sigmoid(torch::randn({n}, gen) * sigma + mu);
}

}  // namespace onestep
