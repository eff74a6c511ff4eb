// Autoregressive and full-history Transition Matching (spec §4), on the independent linear
// process: every state has its own noise, z_{t_i} = (1 - t_i) x + t_i e_i (with shared noise
// the autoregressive kernel degenerates). A state is a sequence of tokens (the coordinates of a
// point, the patches of an image: nets/causal_transformer.h), the backbone is the causal
// transformer (model.name = causal), and the flow head of DTM (transition_matching.h) samples
// one token at a time given the backbone's output at the token before it (the output at
// position k conditions token k + 1).
//  - ARTM: the backbone reads [z_{t_i}, Y_{<j}] with t = t_i and h = t_i - t_{i+1}; the head
//    samples token j of Y = z_{t_{i+1}}. Trained on pairs t ~ time sampler, t_{i+1} = u t with
//    u ~ U(0, 1), so one model samples on any grid. `method.transition_noise = shared` trains
//    on one noise draw per pair instead (the paper's ablation; expected worse).
//  - FHTM: the backbone reads the whole history z_{t_0}, ..., z_{t_i} and the tokens of
//    z_{t_{i+1}} so far, with no time input (t = 0); the number of transitions T enters as
//    h = 1/T, so one model serves T = 1 .. method.transitions. Training is teacher-forced: all
//    T transitions of a step in one pass (T drawn per step) over the T + 1 states alone (the
//    causal backbone's outputs at a prefix do not depend on what follows it).
// Both sample on the grid method.schedule: `uniform`, or `halving` (remaining noise 1, 1/2,
// 1/4, ..., 0: the paper's grid). Each token counts as one backbone evaluation: T x N backbone
// and T x N x K head evaluations per sample for N tokens per state; with the backbone's
// key-value cache (CausalTransformerImpl::decode) a token's evaluation runs the network on that
// token alone, attending to the cached ones. CFG on the head velocity as in DTM.
#pragma once

#include <string>
#include <vector>

#include "onestep/methods/transition_matching.h"

namespace onestep {

// 1 = t_0 > ... > t_T = 0: `uniform`, or `halving` (t_i = 2^-i for i < T, t_T = 0).
std::vector<double> transition_grid(const std::string& schedule, int64_t steps);

// ARTM's training pair (z_t, z_{t_next}) of data x (B x ...), times t and t_next (B): each
// state with its own noise draw (`fresh`), or both from one draw (`shared`).
struct TransitionPair {
  torch::Tensor z, y;
};
TransitionPair artm_transition_pair(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& t_next,
                                    const std::string& noise, torch::Generator& gen);

// What ARTM and FHTM share: states as token sequences, the stacked sequence of several states
// that the causal backbone reads, its features per token, the head and CFG.
class TokenwiseTransition : public Method {
 public:
  TokenwiseTransition(HeadTrainingOptions head, LabelDropout label_dropout, std::string schedule, double cfg_scale,
                      int64_t patch, int64_t states);
  std::string required_network() const override { return "causal"; }
  // "backbone" (model.name = causal) over `states` stacked states, and "head".
  ModuleSet build_modules(const Config& config, const DataInfo& data) const override;
  NfeCount count_nfe(const SamplingPlan& plan) const override;
  // Tokens of one state (B x N x d) and back.
  torch::Tensor state_tokens(const torch::Tensor& x) const;
  // The backbone's features per token (B x M x F) for a sequence of M tokens (B x M x d) from
  // the first position on: whole states, at most `states` of them.
  torch::Tensor features(const ModuleSet& modules, const torch::Tensor& sequence, const torch::Tensor& t,
                         const torch::Tensor& h, const torch::Tensor& c) const;

 protected:
  int64_t inner_steps(const SamplingPlan& plan) const;
  // Fills the tokens [first, first + N) of `sequence` (B x states*N x d) one by one, each from
  // the head given the backbone's features at the token before it.
  void generate_state(const ModuleSet& modules, torch::Tensor& sequence, int64_t first, double t, double h,
                      const torch::Tensor& labels, int64_t head_steps, torch::Generator& gen) const;
  // The head's loss for the tokens [first, first + count) of `sequence` given the features.
  torch::Tensor head_loss(const ModuleSet& modules, const torch::Tensor& sequence, const torch::Tensor& features,
                          int64_t first, int64_t count, torch::Generator& gen) const;

  HeadTrainingOptions head_;
  LabelDropout label_dropout_;
  std::string schedule_;
  double cfg_scale_;
  Tokenizer tokenizer_;
  int64_t states_;
  mutable int64_t tokens_per_state_ = 0;  // set by build_modules (the data's shape)
};

struct ArtmOptions {
  TimeSampler time_sampler;
  LabelDropout label_dropout;
  HeadTrainingOptions head;
  std::string schedule = "uniform";
  double cfg_scale = 1.0;
  std::string transition_noise = "fresh";
  static const OptionSchema<ArtmOptions>& schema();
};

class Artm : public TokenwiseTransition {
 public:
  Artm(ArtmOptions options, int64_t patch);
  std::string name() const override { return "artm"; }
  LossOutput loss(const LossContext& context, const Batch& batch) override;
  torch::Tensor sample(const ModuleSet& modules, const torch::Tensor& noise, const torch::Tensor& labels,
                       const SamplingPlan& plan) override;

 private:
  TimeSampler time_sampler_;
  std::string transition_noise_;
};

struct FhtmOptions {
  LabelDropout label_dropout;
  HeadTrainingOptions head;
  std::string schedule = "halving";
  int64_t transitions = 4;  // the largest T
  double cfg_scale = 1.0;
  static const OptionSchema<FhtmOptions>& schema();
};

class Fhtm : public TokenwiseTransition {
 public:
  Fhtm(FhtmOptions options, int64_t patch);
  std::string name() const override { return "fhtm"; }
  LossOutput loss(const LossContext& context, const Batch& batch) override;
  // plan.steps = T in 1..method.transitions.
  torch::Tensor sample(const ModuleSet& modules, const torch::Tensor& noise, const torch::Tensor& labels,
                       const SamplingPlan& plan) override;

 private:
  int64_t transitions_;
};

}  // namespace onestep
