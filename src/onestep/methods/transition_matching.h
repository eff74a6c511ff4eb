// Transition Matching (spec §4): a chain of T transitions from noise to data on the grid
// 1 = t_0 > ... > t_T = 0, each kernel a small generative model of its own: a backbone runs
// once per transition and a flow head g(Y_s, s, h) (nets/flow_head.h) turns its output h into
// a random sample of a latent Y, trained with flow matching on the inner time s
// (Y_s = (1 - s) Y_0 + s Y, Y_0 ~ N(0, I), target Y - Y_0) and sampled with K Euler steps from
// s = 0 to 1.
//
// This file holds what the variants share (tokens, the head's loss and sampler, the options of
// the head) and DTM, Difference Transition Matching:
//  - process: the linear path z_t = (1 - t) x + t e, one noise draw per pair; latent Y = e - x
//    (the whole displacement); update z_{t_{i+1}} = z_{t_i} - (t_i - t_{i+1}) Y;
//  - backbone h = f(z_t, t, c) (model.*): for points one vector of method.feature_dim per
//    sample; for images (dit) one vector per patch token, and the head samples each patch's Y
//    independently given its token's vector;
//  - training: t continuous from the time sampler (or on a grid of method.time_grid steps), one
//    backbone pass, then the head's loss at method.head_samples inner times s ~ U(0, 1) per
//    token; label dropout for CFG;
//  - sampling: per transition one backbone call and K head steps (plan.inner_steps, default
//    method.head_steps); CFG on the head velocity, g_u + w (g_c - g_u), with the conditional
//    and unconditional backbone (and head) passes as one batch of twice the size.
// E[Y | z_t] is the marginal velocity v(z_t, t), so the mean DTM step is the Flow Matching
// Euler step; the head adds the conditional spread.
//
// Sampling is random beyond the starting noise (a fresh Y_0 per transition): those draws come
// from a generator seeded by the bytes of the starting noise, so a sample is a deterministic
// function of the noise it starts from (eval and sample are repeatable).
#pragma once

#include <string>

#include "onestep/methods/linear_path.h"
#include "onestep/methods/method.h"
#include "onestep/nets/flow_head.h"

namespace onestep {

class Config;

// Splits samples into tokens: an image B x C x H x W into B x N x (p p C) patch tokens
// (N = H W / p^2, row-major patches, each token ordered (row in patch, column in patch,
// channel): the order in which dit and causal lay out a token's outputs), anything else
// (points, or patch = 0) into one token per sample, B x 1 x numel, or with `coordinates` one
// token per value, B x numel x 1.
struct Tokenizer {
  int64_t patch = 0;  // 0: one token per sample (or per value)
  bool coordinates = false;
  torch::Tensor to_tokens(const torch::Tensor& x) const;
  // The inverse, for samples of `sample_shape`.
  torch::Tensor from_tokens(const torch::Tensor& tokens, const std::vector<int64_t>& sample_shape) const;
  // Whether samples of this shape are cut into patch tokens (images with patch > 0).
  bool splits(const std::vector<int64_t>& sample_shape) const { return patch > 0 && sample_shape.size() == 3; }
};

// The options every Transition Matching variant shares.
struct HeadTrainingOptions {
  FlowHeadOptions head;
  int64_t feature_dim = 64;   // backbone features per token
  int64_t head_samples = 4;   // inner times s per token and backbone pass
  int64_t head_steps = 4;     // K, Euler steps of the head at sampling
  static const OptionSchema<HeadTrainingOptions>& schema();
};

// The head's flow-matching loss: for `head_samples` draws per token of Y_0 ~ N(0, I) and
// s ~ U(0, 1), || g(Y_s, s, h) - (Y - Y_0) ||^2 summed over a sample's tokens and values and
// averaged over samples and draws. y: B x N x d latents, context: B x N x F features.
torch::Tensor head_flow_matching_loss(NetworkImpl& head, const torch::Tensor& y, const torch::Tensor& context,
                                      int64_t head_samples, torch::Generator& gen);

// One head sample per row of context (R x F): Y_0 ~ N(0, I) of `token_size` values drawn with
// `gen`, then `steps` Euler steps from s = 0 to 1. With `unconditional_context` defined and
// `cfg_scale` != 1, the velocity is g(., h_u) + cfg_scale (g(., h_c) - g(., h_u)), both rows
// in one batch.
torch::Tensor sample_head(NetworkImpl& head, const torch::Tensor& context, const torch::Tensor& unconditional_context,
                          double cfg_scale, int64_t token_size, int64_t steps, torch::Generator& gen);

// A CPU generator seeded by the bytes of `noise` (FNV-1a), for the draws of a sampler beyond
// its starting noise.
torch::Generator generator_from_noise(const torch::Tensor& noise);

// The patch size a Transition Matching method tokenises images with: model.patch_size for
// dit and causal, 1 (one token per pixel) for unet, 0 (one token per sample) otherwise.
int64_t token_patch_size(const Config& config);

struct DtmOptions {
  TimeSampler time_sampler;
  LabelDropout label_dropout;
  HeadTrainingOptions head;
  int64_t time_grid = 0;   // 0: t continuous; T > 0: t drawn uniformly from {1/T, 2/T, ..., 1}
  double cfg_scale = 1.0;  // CFG on the head velocity at sampling (1: off)
  static const OptionSchema<DtmOptions>& schema();
};

class Dtm : public Method {
 public:
  Dtm(DtmOptions options, int64_t patch);

  std::string name() const override { return "dtm"; }
  // "backbone" (model.*: z of the sample shape in, features out) and "head".
  ModuleSet build_modules(const Config& config, const DataInfo& data) const override;
  LossOutput loss(const LossContext& context, const Batch& batch) override;
  // The loss at given times t (B) for data x with (already dropped) labels c; exposed for tests.
  LossOutput loss_at(const ModuleSet& modules, const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& c,
                     torch::Generator& gen) const;
  // plan.steps transitions on the uniform grid, plan.inner_steps (0: method.head_steps) head
  // steps each.
  torch::Tensor sample(const ModuleSet& modules, const torch::Tensor& noise, const torch::Tensor& labels,
                       const SamplingPlan& plan) override;
  NfeCount count_nfe(const SamplingPlan& plan) const override;
  // The backbone's features per token (B x N x F) at z, t for labels c.
  torch::Tensor features(NetworkImpl& backbone, const torch::Tensor& z, const torch::Tensor& t,
                         const torch::Tensor& c) const;
  const Tokenizer& tokenizer() const { return tokenizer_; }

 private:
  int64_t inner_steps(const SamplingPlan& plan) const;
  DtmOptions options_;
  Tokenizer tokenizer_;
};

}  // namespace onestep
