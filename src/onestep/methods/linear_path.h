// Spec §0, the convention every method shares, in one place: time samplers (uniform,
// logit-normal), noise, the linear path z_t = (1 - t) x + t e with its conditional velocity
// v_t = e - x, label dropout with the null label, the CFG double batch, the uniform sample
// grid 1 = t_0 > ... > t_k = 0, and per-sample broadcasting. Every random draw goes through
// the caller's CPU generator (tensors then move to the data's device), so runs are repeatable.
#pragma once

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "onestep/core/options.h"
#include "onestep/nets/network.h"

namespace onestep {

// `uniform`: t ~ U(0, 1); `logit-normal`: t = sigmoid(n), n ~ N(mu, sigma).
struct TimeSampler {
  std::string kind = "logit-normal";
  double mu = -0.4;
  double sigma = 1.0;
  // Keys method.time_sampler, method.time_mu, method.time_sigma.
  static const OptionSchema<TimeSampler>& schema();
  // n draws (CPU, float32) with `gen`.
  torch::Tensor draw(int64_t n, torch::Generator& gen) const;
  // One draw per entry of `upper` (CPU, in (0, 1]) from the distribution truncated to
  // [0, upper], by the inverse CDF (exact, no rejection).
  torch::Tensor draw_below(const torch::Tensor& upper, torch::Generator& gen) const;
};

// Standard normal noise of `shape` drawn with `gen` (CPU) and moved to `device`.
torch::Tensor draw_noise(torch::IntArrayRef shape, torch::Generator& gen, const torch::Device& device);

// How a batch's noise draws are paired with its data (key method.coupling). `independent`: as
// drawn (spec §0). `minibatch-ot`: the draws are permuted to the pairing with the least total
// squared distance |x_i - e_j|^2 (exact assignment), within each class of labelled data, so that
// paths cross less (minibatch optimal-transport flow matching: Tong et al. 2023, Pooladian et al.
// 2023). The batch's noise is still an i.i.d. N(0, I) sample, only paired differently, so sampling
// is unchanged; the pairing is solved per share of a split step (process, micro-batch).
struct Coupling {
  std::string kind = "independent";
  static const OptionSchema<Coupling>& schema();
  // The rows of e (B x ...) reordered to pair with x (B x ...); labels (B) or undefined. The
  // assignment is solved on the host; the result is on e's device (methods pair their host draws,
  // so that a step captured as a CUDA graph pairs too).
  torch::Tensor pair(const torch::Tensor& x, const torch::Tensor& e, const torch::Tensor& labels) const;
};

// One point on the path per sample: times t (B), noise e, z_t = (1 - t) x + t e, v_t = e - x.
struct PathPoint {
  torch::Tensor t, e, z_t, v_t;
};
// Draws e with `gen`, pairs it with x by `coupling` (classes: labels, or undefined) and forms z_t
// and v_t for data x at times t (B, on x's device).
PathPoint draw_path_point(const torch::Tensor& x, const torch::Tensor& t, torch::Generator& gen,
                          const Coupling& coupling = Coupling{}, const torch::Tensor& labels = {});
// The path point of data x at times t (B) with noise e already paired with it (on x's device).
PathPoint path_point(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& e);
// z_t = (1 - t) x + t e, with t per sample.
torch::Tensor interpolate(const torch::Tensor& x, const torch::Tensor& e, const torch::Tensor& t);

// Label dropout for CFG training (key method.label_dropout).
struct LabelDropout {
  double p = 0.1;
  static const OptionSchema<LabelDropout>& schema();
};

// Replaces each label by the null label `num_classes` with probability `p` (CFG training).
// Returns undefined for undefined labels.
torch::Tensor drop_labels(const torch::Tensor& labels, int64_t num_classes, double p, torch::Generator& gen);
// The same in two halves: the draw (CPU, true where a label is to be dropped; undefined for
// undefined labels) and its use (labels with `num_classes` where `drop` is true).
torch::Tensor draw_label_drop(const torch::Tensor& labels, double p, torch::Generator& gen);
torch::Tensor drop_labels(const torch::Tensor& labels, int64_t num_classes, const torch::Tensor& drop);

// The CFG double batch: one network call on the input twice, with the labels and with the null
// label; returns (conditional, unconditional) outputs.
std::pair<torch::Tensor, torch::Tensor> conditional_and_unconditional(NetworkImpl& net, const NetInput& input);

// The sample grid 1 = t_0 > t_1 > ... > t_k = 0 (uniform), as a std::vector.
std::vector<double> uniform_time_grid(int64_t steps);

// `value` (B) reshaped to broadcast against a tensor of rank `rank` (B x 1 x ...).
torch::Tensor per_sample(const torch::Tensor& value, int64_t rank);

// B copies of a scalar on the device and dtype of `like`.
torch::Tensor filled(int64_t n, double value, const torch::Tensor& like);

}  // namespace onestep
