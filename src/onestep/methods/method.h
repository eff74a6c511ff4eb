// Method interface and registry. A method owns the mathematics of spec/methods.md for one
// family: its training loss on a batch, its sampler, and the network shape it needs. It knows
// nothing of where data comes from, of optimizers, EMA or checkpoints (the trainer's job).
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "onestep/data/dataset.h"
#include "onestep/nets/network.h"

namespace onestep {

class Config;

// The scalar to minimise and named parts to log (detached scalars).
struct LossOutput {
  torch::Tensor loss;
  std::map<std::string, torch::Tensor> parts;
};

// What the loss may use besides the batch: the trained network, an optional target network
// (a fast EMA of the weights, for methods that ask for one) and the run's generator, through
// which every random draw goes (CPU generator; tensors are moved to the batch's device).
struct LossContext {
  NetworkImpl& net;
  NetworkImpl* target = nullptr;
  torch::Generator& gen;
};

class Method {
 public:
  virtual ~Method() = default;
  virtual std::string name() const = 0;
  // The network this method trains for data of `sample_shape` with `num_classes` classes.
  virtual NetSpec net_spec(const std::vector<int64_t>& sample_shape, int64_t num_classes) const {
    return {sample_shape, sample_shape, num_classes};
  }
  // Decay of the target network's EMA; 0 = the method uses no target network.
  virtual double target_ema_decay() const { return 0.0; }
  virtual LossOutput loss(const LossContext& context, const Batch& batch) = 0;
  // Maps noise (B x shape) to samples with `nfe` network evaluations of the sampler;
  // labels: B int64 classes, or undefined for unconditional sampling.
  virtual torch::Tensor sample(NetworkImpl& net, const torch::Tensor& noise, const torch::Tensor& labels,
                               int64_t nfe) = 0;
};

// Builds the method named by `method.name`. Throws UserError for an unknown name.
std::unique_ptr<Method> make_method(const Config& config);
std::vector<std::string> method_names();

// Standard normal noise of `shape` drawn with `gen` (CPU) and moved to `device`.
torch::Tensor draw_noise(torch::IntArrayRef shape, torch::Generator& gen, const torch::Device& device);

// Replaces each label by the null label `num_classes` with probability `p` (CFG training).
// Returns undefined for undefined labels.
torch::Tensor drop_labels(const torch::Tensor& labels, int64_t num_classes, double p, torch::Generator& gen);

// The sample grid 1 = t_0 > t_1 > ... > t_k = 0 (uniform), as a std::vector.
std::vector<double> uniform_time_grid(int64_t steps);

// `value` (B) reshaped to broadcast against a tensor of rank `rank` (B x 1 x ...).
torch::Tensor per_sample(const torch::Tensor& value, int64_t rank);

}  // namespace onestep
