// MeanFlow (spec §2): a network u_theta(z, r, t) = net(z, t, h = t - r, c) of the average
// velocity over [r, t], trained through the MeanFlow identity u = v - (t - r) du/dt, with
// du/dt = v . d_z u + d_t u from one Jacobian-vector product; adaptive loss weighting; CFG
// folded into training; sampler z_r = z_t - (t - r) u_theta(z_t, r, t) on any k-step grid.
#pragma once

#include "onestep/methods/jvp.h"
#include "onestep/methods/linear_path.h"
#include "onestep/methods/method.h"

namespace onestep {

struct MeanFlowOptions {
  TimeSampler time_sampler;    // each of the two draws of (t, r)
  double ratio = 0.25;         // share of the batch with r != t
  // How the r != t pairs are drawn: "pairs" (two draws of time_sampler, sorted; the paper) or
  // "uniform-gap" (h = t - r ~ U(0, 1), then r from time_sampler truncated to [0, 1 - h]).
  std::string gap_sampler = "pairs";
  double adaptive_p = 1.0;     // w = 1 / (L + c)^p
  double adaptive_c = 1e-3;
  LabelDropout label_dropout;
  Coupling coupling;
  double cfg_omega = 1.0;      // CFG folded into training (omega = 1, kappa = 0: off)
  double cfg_kappa = 0.0;
  double cfg_t_lo = 0.0;
  double cfg_t_hi = 1.0;
  std::string jvp = "forward";  // or "double-backward"
  // JVP tangent on (z, r, t): "v,0,1" is correct, the others exist for the ablation.
  std::string tangent = "v,0,1";
  // The velocity in the JVP's z-tangent: "conditional" (e - x, or its guided fold; the paper) or
  // "model" (the network's own u(z_t, t, t), without gradient: the same expectation, less variance).
  std::string tangent_velocity = "conditional";
  static const OptionSchema<MeanFlowOptions>& schema();
};

// (t, r) pairs by `gap_sampler`, then r = t for a share 1 - ratio.
struct TimePair {
  torch::Tensor t, r;
};

class MeanFlow : public Method {
 public:
  // Throws UserError when cfg_t_lo > cfg_t_hi.
  explicit MeanFlow(MeanFlowOptions options);

  std::string name() const override { return "meanflow"; }
  TimePair sample_time_pair(int64_t n, torch::Generator& gen) const;
  // Draws: the times t and r, the noise e (paired with the data by method.coupling) and the
  // label-dropout mask.
  std::string capture_refusal() const override { return ""; }
  LossDraws draw(const Batch& batch, torch::Generator& gen) const override;
  LossOutput loss_given(const LossContext& context, const Batch& batch, const LossDraws& draws) override;
  // The loss at given path points, start times r, labels (for folded guidance) and dropped
  // labels c; exposed for tests.
  LossOutput loss_at(NetworkImpl& net, const PathPoint& point, const torch::Tensor& r, const torch::Tensor& labels,
                     const torch::Tensor& c) const;
  // plan.steps jumps z_r = z_t - (t - r) u_theta(z_t, r, t) on the uniform grid.
  torch::Tensor sample(const ModuleSet& modules, const torch::Tensor& noise, const torch::Tensor& labels,
                       const SamplingPlan& plan) override;

  // u_theta(z, r, t) and du/dt along the tangent (v, tangent_r, tangent_t) on (z, r, t),
  // from one JVP. Exposed for tests.
  std::pair<torch::Tensor, torch::Tensor> average_velocity_and_time_derivative(
      NetworkImpl& net, const torch::Tensor& z, const torch::Tensor& r, const torch::Tensor& t,
      const torch::Tensor& c, const torch::Tensor& v) const;

  // CFG folded into training: omega v_t + kappa v_cond + (1 - omega - kappa) v_uncond where
  // t is in [t_lo, t_hi] and the label was not dropped; v_t elsewhere.
  torch::Tensor fold_guidance(const torch::Tensor& v_t, const torch::Tensor& v_cond, const torch::Tensor& v_uncond,
                              const torch::Tensor& t, const torch::Tensor& dropped) const;

  // The regression target sg(v - clip(t - r, 0, 1) du/dt).
  static torch::Tensor target(const torch::Tensor& v, const torch::Tensor& du_dt, const torch::Tensor& r,
                              const torch::Tensor& t);

 private:
  // The velocity used as target and JVP tangent: fold_guidance with v(z,t,c) and v(z,t,null)
  // from the network without gradient, or v_t when guidance is off.
  torch::Tensor guided_velocity(NetworkImpl& net, const torch::Tensor& z_t, const torch::Tensor& t,
                                const torch::Tensor& v_t, const torch::Tensor& labels,
                                const torch::Tensor& dropped) const;

  MeanFlowOptions options_;
  JvpMode jvp_mode_;
  double tangent_r_, tangent_t_;  // the JVP's tangent on r and t
};

}  // namespace onestep
