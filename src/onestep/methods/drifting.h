// Drifting Models (spec §5): a one-pass generator x = f(e, c) (t = h = 0), trained so that its
// outputs follow the drifting field V, attraction to data minus repulsion from the generated
// batch: loss ||x - sg(x + V)||^2, whose gradient with respect to x is -2 V / N. V is computed on
// each class's group of a step (positives of the class, the group's generated samples, optional
// real samples of random classes as weighted extra negatives for CFG), in float32 and without
// gradient. Sampling is exactly one network evaluation; guidance alpha is a network input.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "onestep/core/options.h"
#include "onestep/eval/feature_encoder.h"
#include "onestep/methods/method.h"

namespace onestep {

struct DriftingOptions {
  int64_t noise_dim = 32;             // noise dimension for point data (images: the sample shape)
  std::string temperatures = "0.02,0.05,0.2";
  int64_t n_pos = 256;                // real samples per class and step
  int64_t n_neg = 256;                // generated samples per class and step
  int64_t queue_size = 0;             // per-class queue of recent real samples (0: off)
  int64_t n_unc = 0;                  // CFG: real samples of random classes as extra negatives
  double cfg_min = 1.0, cfg_max = 1.0;  // CFG: training alpha ~ U[cfg_min, cfg_max]
  double cfg_scale = 1.0;             // CFG: alpha at sampling
  double attraction_scale = 1.0;      // ablation: V = a * attraction - r * repulsion (1, 1: the field)
  double repulsion_scale = 1.0;
  std::string output_init = "data-scale";  // or "default" (the framework's initialisation)
  std::string feature_space = "auto";  // raw | encoder | auto (encoder for images, raw for points)
  std::string encoder;                 // weights of `onestep encoder train` ("": the shipped one)
  std::string encoder_sha256;          // their expected SHA-256 ("": the shipped file's)
  std::string group_batching = "auto";  // on | off | auto (on for CUDA): all class groups' fields in one call
  static const OptionSchema<DriftingOptions>& schema();
};

// The drifting field and its raw size, as computed on one group (spec §5 "As computed on a
// batch").
struct DriftingField {
  torch::Tensor v;                  // x's shape: sum over temperatures of V_tau / rms(V_tau)
  torch::Tensor raw_squared_norms;  // temperatures x B (B = 1 for 2-D x; float64, on x's device):
                                    // per set, the mean over x of ||V_tau||^2 before
                                    // normalisation, in the scaled coordinates
};

// The drifting field on generated samples x (N x C, or N x ... flattened) from positives (P x
// C) and negatives (M x C), all without gradient and in float32; or, with 3-D inputs, on B
// feature sets at once (x: B x N x C, positives B x P x C, negatives B x M x C), each set's
// field computed independently (its own distance scale and normalisation):
//  - distances to every target (negatives then positives); all coordinates scaled so that the
//    mean distance is sqrt(C), i.e. distances divided by their (weighted) mean; with
//    `mask_self`, negatives[i] is x[i] for i < N and that distance is masked;
//  - per temperature tau, logits -d/tau; A = sqrt(row softmax * column softmax) (row: over
//    targets, column: over x); W+ = A+ * sum A-, W- = A- * sum A+ (row sums);
//    V = sum W+ y+ - sum W- y- - (sum W+ - sum W-) x; each V_tau divided by its root-mean-
//    square (over all entries) and summed over tau.
// `negative_weights` (M, B x M for a weight per set, or undefined: all 1) weighs each negative
// as that many copies of it (the row softmax counts it w times, A scales by w); a weight of 0
// removes it. Swapping positives and negatives (unit weights, no mask) negates V. For the anti-symmetry ablation
// `attraction_scale` multiplies the attraction term (sum W+ y+ - sum W+ x) and
// `repulsion_scale` the repulsion term (sum W- y- - sum W- x).
DriftingField drifting_field(const torch::Tensor& x, const torch::Tensor& positives, const torch::Tensor& negatives,
                             const std::vector<double>& temperatures, const torch::Tensor& negative_weights = {},
                             bool mask_self = false, double attraction_scale = 1.0,
                             double repulsion_scale = 1.0);

// The feature sets the field is computed on for a batch of samples, each N x F x D (F features
// of D dimensions per sample, each feature its own field): the raw samples flattened (F = 1);
// with an encoder, also for each of its feature maps (C x h x w) every location (F = h w,
// D = C), the global mean and std over locations (F = 1), and the mean and std of each 2x2 and
// 4x4 patch (F = h w / 4, h w / 16; patches that fit). Differentiable in `x`.
std::vector<std::pair<std::string, torch::Tensor>> drifting_feature_sets(const torch::Tensor& x,
                                                                         FeatureEncoderImpl* encoder);

// "0.02,0.05,0.2" -> {0.02, 0.05, 0.2}; throws UserError naming `key` for an empty list or a
// value that is not a positive finite number.
std::vector<double> parse_temperatures(const std::string& text, const std::string& key);

class Drifting : public Method {
 public:
  explicit Drifting(DriftingOptions options);

  std::string name() const override { return "drifting"; }
  // in_shape = noise_shape, out_shape = the sample shape, DataScale (or Default) output, alpha as an extra
  // input for class-conditional data.
  NetSpec net_spec(const DataInfo& data) const override;
  // Point data: {method.noise_dim}; images: the sample shape.
  std::vector<int64_t> noise_shape(const DataInfo& data) const override;
  // Unlabelled data: n_pos samples (one group; train.batch_size is ignored), n_pos / processes
  // in a step split over processes. Labelled data:
  // min(train.batch_size, classes) classes drawn without replacement, n_pos samples each, in
  // groups, then n_unc real samples of random classes per group labelled with the null label
  // (the CFG negatives). With queue_size > 0 each class keeps its queue_size most recent real
  // samples and the positives of a class are its whole queue (the queue is not checkpointed:
  // a resumed run starts with empty queues, so resume is exact only with queue_size = 0).
  Batch training_batch(Dataset& dataset, int64_t batch_size, torch::Generator& gen) const override;
  // n_neg generated samples per group, V per group and feature set (drifting_feature_sets), loss
  // sum over sets of mean_i mean_f ||phi_f(x_i) - sg(phi_f(x_i) + V_if)||^2 (raw samples alone:
  // mean_i ||x_i - sg(x_i + V_i)||^2); parts raw_v2_tau<tau>: the raw ||V_tau||^2 before
  // normalisation (mean over the step's groups and feature sets).
  // Unlabelled data split over processes: each process generates n_neg / processes samples,
  // the positives and generated samples of all processes are gathered, every process computes
  // the whole step's field (the same on each) and takes the loss on its own rows.
  LossOutput loss(const LossContext& context, const Batch& batch) override;
  // The field V of a sample is computed from every positive and generated sample of its group,
  // and nothing else. Class-labelled data: each share of a step (process, micro-batch) draws
  // its own min(share, classes) groups, so the step splits (train.batch_size then counts the
  // groups of all shares). Unlabelled data (one group, the whole step): processes split it by
  // gathering its samples, micro-batches cannot. Queues (state that a step's shares would each
  // keep) cannot be split.
  StepSplit step_split(const DataInfo& data) const override;
  // Needs n_pos and n_neg to be multiples of the process count.
  void set_process_share(ProcessShare share) override;
  // The feature encoder "encoder" where the field works in its feature space (feature_space
  // encoder, or auto on images): method.encoder, by default the shipped Fashion-MNIST encoder
  // for 1 x 28 x 28 images, checked against method.encoder_sha256.
  std::vector<FrozenModuleSpec> frozen_modules(const DataInfo& data) const override;
  // x = f(e, c), alpha = cfg_scale: one network evaluation whatever plan.steps asks for.
  torch::Tensor sample(const ModuleSet& modules, const torch::Tensor& noise, const torch::Tensor& labels,
                       const SamplingPlan& plan) override;
  // Always {1, 0}: the generator is a single pass; a plan of more steps runs the same pass.
  NfeCount count_nfe(const SamplingPlan&) const override { return {1, 0}; }

  const std::vector<double>& temperatures() const { return temperatures_; }
  // Whether the field works on encoder features for this data.
  bool uses_encoder(const DataInfo& data) const;

 private:
  DriftingOptions options_;
  std::vector<double> temperatures_;
  ProcessShare share_;  // one process unless set_process_share was called
  // Per class (unlabelled data: class 0) the queue_size most recent real samples, oldest first.
  mutable std::map<int64_t, torch::Tensor> queues_;
};

}  // namespace onestep
