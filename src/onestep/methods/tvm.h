// Terminal Velocity Matching (spec §3). A flow map from time t to an earlier terminal time s,
// psi(z_t, t, s) = z_t + (s - t) F(z_t, t, s) with F = net(z, t, h = t - s, c), trained with
//  1. the terminal term || d/ds psi - sg(u⁻(psi, s)) ||² where s != t: d/ds psi =
//     F + (s - t) dF/ds, dF/ds a forward-mode JVP with tangent 0 on t and -1 on h, KEPT in the
//     graph (the parameter gradient flows through it), and u⁻(z, s) = F⁻(z, s, s) a fast EMA
//     of the weights (the target network) evaluated without gradient at the model's own end
//     point;
//  2. a flow-matching term || u(z_s', s') - v_s' ||² at an independent time s', u(z, s) = F(z, s, s);
// with the gap time sampler: g = sigmoid(N(gap_mu, gap_sigma)), s from the time sampler
// truncated to s <= 1 - g, t = s + g, s' from the time sampler. Class-conditional data: the
// guidance scale w (drawn in [cfg_min, cfg_max]) is a network input (as 1/w), the FM target
// becomes w v + (1 - w) u⁻(z, s', null), both terms are weighted 1/w², label dropout with w = 1
// for dropped samples. Sampler: z <- z + (s - t) F(z, t, s) on any k-step grid, with the
// guidance scale method.cfg_scale. Logs the terminal and FM terms and activation_rms_max, the
// largest block-output RMS of the network in the FM pass (the Lipschitz options keep it bounded).
#pragma once

#include "onestep/methods/jvp.h"
#include "onestep/methods/linear_path.h"
#include "onestep/methods/method.h"

namespace onestep {

struct TvmOptions {
  double gap_mu = -0.8;  // gap g = sigmoid(N(gap_mu, gap_sigma))
  double gap_sigma = 1.0;
  TimeSampler time_sampler;  // s (truncated to s <= 1 - g) and s'
  double target_ema = 0.99;
  LabelDropout label_dropout;
  Coupling coupling;
  double cfg_min = 1.0;  // w ~ U(cfg_min, cfg_max) in training (class-conditional data)
  double cfg_max = 1.0;
  double cfg_scale = 1.0;  // w at sampling
  std::string jvp = "forward";
  static const OptionSchema<TvmOptions>& schema();
};

class Tvm : public Method {
 public:
  // Throws UserError when cfg_min > cfg_max.
  explicit Tvm(TvmOptions options);

  std::string name() const override { return "tvm"; }
  NetSpec net_spec(const DataInfo& data) const override;
  double target_ema_decay() const override { return options_.target_ema; }
  // Draws: the times t, s and s' (the FM term's), the noise e (paired with the data by
  // method.coupling), the label-dropout mask and, for labelled data, the guidance scales w.
  std::string capture_refusal() const override { return ""; }
  LossDraws draw(const Batch& batch, torch::Generator& gen) const override;
  LossOutput loss_given(const LossContext& context, const Batch& batch, const LossDraws& draws) override;
  torch::Tensor sample(const ModuleSet& modules, const torch::Tensor& noise, const torch::Tensor& labels,
                       const SamplingPlan& plan) override;

  // The flow map psi(z_t, t, s) and its terminal velocity d/ds psi = F + (s - t) dF/ds at
  // labels c and guidance input `extra` (1/w; undefined for unconditional nets), the JVP kept
  // in the graph. Exposed for tests.
  std::pair<torch::Tensor, torch::Tensor> flow_map_and_terminal_velocity(NetworkImpl& net, const torch::Tensor& z_t,
                                                                         const torch::Tensor& t, const torch::Tensor& s,
                                                                         const torch::Tensor& c,
                                                                         const torch::Tensor& extra) const;
  // Per-sample terminal term || d/ds psi - sg(u_target(psi, s)) ||², zero where s = t.
  torch::Tensor terminal_term(NetworkImpl& net, NetworkImpl& target, const torch::Tensor& z_t, const torch::Tensor& t,
                              const torch::Tensor& s, const torch::Tensor& c, const torch::Tensor& extra) const;

 private:
  TvmOptions options_;
  JvpMode jvp_mode_;
};

}  // namespace onestep
