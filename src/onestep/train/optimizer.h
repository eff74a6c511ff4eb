// Adam and AdamW (Kingma & Ba 2015; Loshchilov & Hutter 2019) with bias correction, written
// out so that its whole state is plain named tensors (checkpointed as optimizer.*), identical
// on every LibTorch version, and run over flat buffers (flat_parameters.h): one fused pass on
// CPU float32, a few whole-buffer operations elsewhere; gradient clipping over the same buffer;
// and the learning-rate schedule (linear warm-up, then constant or cosine decay to zero).
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "onestep/train/flat_parameters.h"

namespace onestep {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool decoupled = false;  // AdamW
};

class Adam {
 public:
  // The parameters become views of one buffer (FlatParameters); their gradients too, so a
  // parameter that got no gradient in a step counts as a zero gradient (its moments decay).
  Adam(std::vector<std::pair<std::string, torch::Tensor>> named_parameters, AdamOptions options);
  // One update with learning rate `lr` from the parameters' .grad(): prepare(lr), then apply().
  void step(double lr);
  // The host half of a step: counts it and sets its rates (bias corrections, learning rate),
  // held in tensors on the parameters' device except for the fused CPU float32 pass.
  void prepare(double lr);
  // The device half: the update with the rates of the last prepare(), no host value read (a CUDA
  // graph captures it once and replays it after each prepare()).
  void apply();
  void zero_grad();
  int64_t step_count() const { return step_count_; }
  FlatParameters& parameters() { return params_; }

  // State as named tensors: "<param>.exp_avg", "<param>.exp_avg_sq" and "step".
  std::map<std::string, torch::Tensor> state() const;
  // Restores state(); throws UserError naming the missing or mismatched tensor.
  void load_state(const std::map<std::string, torch::Tensor>& state, const std::string& origin);

 private:
  FlatParameters params_;
  torch::Tensor exp_avg_, exp_avg_sq_;  // laid out like params_.data()
  AdamOptions options_;
  int64_t step_count_ = 0;
  double lr_ = 0, bias1_ = 1, bias2_ = 1;  // of the last prepare()
  // On the parameters' device: lr / bias1, bias2 and the decoupled decay's 1 - lr * weight_decay.
  torch::Tensor step_size_, bias2_tensor_, keep_;
};

// AdamW (decoupled weight decay) over every parameter of `module`, named as the module names
// them: the optimizer of the evaluator's and the feature encoder's training.
Adam adamw(const torch::nn::Module& module, double lr, double weight_decay);

struct LearningRateSchedule {
  double lr = 1e-3;
  int64_t warmup = 0;
  bool cosine = false;  // decay to 0 at total_steps after the warm-up
  int64_t total_steps = 1;
  // Learning rate at `step` (0-based): linear warm-up from lr/warmup to lr over `warmup` steps.
  double at(int64_t step) const;
};

// The global L2 norm of the gradients, as a tensor on their device (no host transfer).
torch::Tensor gradient_norm(FlatParameters& params);

// Scales the gradients, whose global L2 norm is `norm` (a tensor on their device, as
// gradient_norm returns it), so that it is at most max_norm (0: no clipping), without a host
// transfer: by max_norm / (norm + 1e-6) where norm exceeds max_norm.
void clip_gradients(FlatParameters& params, const torch::Tensor& norm, double max_norm);

}  // namespace onestep
