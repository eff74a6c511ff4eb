// Flow Matching (spec §1), the multi-step baseline: regress v_theta(z_t, t) = net(z_t, t, 0, c)
// onto the conditional velocity v_t = e - x along z_t = (1 - t) x + t e; sample with Euler or
// Heun on a uniform grid from t = 1 to 0, with optional classifier-free guidance.
#pragma once

#include "onestep/methods/linear_path.h"
#include "onestep/methods/method.h"

namespace onestep {

struct FlowMatchingOptions {
  TimeSampler time_sampler;
  LabelDropout label_dropout;
  Coupling coupling;
  std::string sampler = "euler";  // or "heun"
  double cfg_scale = 1.0;
  static const OptionSchema<FlowMatchingOptions>& schema();
};

class FlowMatching : public Method {
 public:
  explicit FlowMatching(FlowMatchingOptions options) : options_(std::move(options)) {}

  std::string name() const override { return "fm"; }
  // Draws: the times t, the noise e (paired with the data by method.coupling) and the
  // label-dropout mask.
  std::string capture_refusal() const override { return ""; }
  LossDraws draw(const Batch& batch, torch::Generator& gen) const override;
  LossOutput loss_given(const LossContext& context, const Batch& batch, const LossDraws& draws) override;
  // The loss at given path points and (already dropped) labels c; exposed for tests.
  LossOutput loss_at(NetworkImpl& net, const PathPoint& point, const torch::Tensor& c) const;
  // Euler: plan.steps evaluations, one per step. Heun: plan.steps evaluations in
  // (steps + 1) / 2 steps, the last one Euler, so plan.steps must be odd. With CFG each
  // evaluation runs the conditional and unconditional pass in one batch.
  torch::Tensor sample(const ModuleSet& modules, const torch::Tensor& noise, const torch::Tensor& labels,
                       const SamplingPlan& plan) override;

 private:
  // Guided velocity v = v(z,t,null) + w (v(z,t,c) - v(z,t,null)); plain v when unguided.
  torch::Tensor velocity(NetworkImpl& net, const torch::Tensor& z, double t, const torch::Tensor& labels);

  FlowMatchingOptions options_;
};

}  // namespace onestep
