// Flow Matching loss and Euler/Heun samplers (spec §1; see flow_matching.h), and its registration.
#include "onestep/methods/flow_matching.h"

#include "onestep/core/config.h"
#include "onestep/core/error.h"

namespace onestep {
namespace {

[[maybe_unused]] const bool registered = MethodRegistry::instance().add(
    {"method", "fm", "", "Flow Matching, the multi-step baseline (Euler or Heun, CFG at sampling)",
     FlowMatchingOptions::schema().keys()},
    [](const Config& config) { return std::make_unique<FlowMatching>(FlowMatchingOptions::schema().read(config)); });

}  // namespace

const OptionSchema<FlowMatchingOptions>& FlowMatchingOptions::schema() {
  static const auto schema =
      OptionSchema<FlowMatchingOptions>("method")
          .include(&FlowMatchingOptions::time_sampler, TimeSampler::schema())
          .include(&FlowMatchingOptions::label_dropout, LabelDropout::schema())
          .include(&FlowMatchingOptions::coupling, Coupling::schema())
          .add("sampler", &FlowMatchingOptions::sampler, {"euler", "heun"},
               "fm: ODE sampler (heun: 2 NFE per step, Euler last step)")
          .add("cfg_scale", &FlowMatchingOptions::cfg_scale, 0, 100,
               "fm: classifier-free guidance scale at sampling (1: off)");
  return schema;
}

LossDraws FlowMatching::draw(const Batch& batch, torch::Generator& gen) const {
  const auto t = options_.time_sampler.draw(batch.x.size(0), gen);
  const auto e = options_.coupling.pair(batch.x, draw_noise(batch.x.sizes(), gen, torch::kCPU), batch.y);
  return {t, e, draw_label_drop(batch.y, options_.label_dropout.p, gen)};
}

LossOutput FlowMatching::loss_given(const LossContext& context, const Batch& batch, const LossDraws& draws) {
  NetworkImpl& net = context.modules["net"];
  const auto point = path_point(batch.x, draws[0], draws[1]);
  return loss_at(net, point, drop_labels(batch.y, net.null_label(), draws[2]));
}

LossOutput FlowMatching::loss_at(NetworkImpl& net, const PathPoint& point, const torch::Tensor& c) const {
  const auto v_pred = net.forward({point.z_t, point.t, torch::zeros_like(point.t), c});
  LossOutput out;
  out.loss = (v_pred - point.v_t).pow(2).flatten(1).sum(1).mean();
  return out;
}

torch::Tensor FlowMatching::velocity(NetworkImpl& net, const torch::Tensor& z, double t, const torch::Tensor& labels) {
  const int64_t n = z.size(0);
  const NetInput input{z, filled(n, t, z), filled(n, 0, z), labels};
  if (!labels.defined() || options_.cfg_scale == 1.0) return net.forward(input);
  const auto [conditional, unconditional] = conditional_and_unconditional(net, input);
  return unconditional + options_.cfg_scale * (conditional - unconditional);
}

torch::Tensor FlowMatching::sample(const ModuleSet& modules, const torch::Tensor& noise, const torch::Tensor& labels,
                                   const SamplingPlan& plan) {
  torch::NoGradGuard no_grad;
  const int64_t nfe = plan.steps;
  if (nfe < 1) throw UserError("fm: nfe must be at least 1, got " + std::to_string(nfe));
  const bool heun = options_.sampler == "heun";
  if (heun && nfe % 2 == 0)
    throw UserError("fm: the heun sampler needs an odd nfe (2 per step, 1 for the last step), got " +
                    std::to_string(nfe));
  NetworkImpl& net = modules["net"];
  const int64_t steps = heun ? (nfe + 1) / 2 : nfe;
  const auto grid = uniform_time_grid(steps);
  auto z = noise;
  for (int64_t i = 0; i < steps; ++i) {
    const double t = grid[i], t_next = grid[i + 1];
    const auto v = velocity(net, z, t, labels);
    auto z_next = z - (t - t_next) * v;
    if (heun && i + 1 < steps) {
      const auto v_next = velocity(net, z_next, t_next, labels);
      z_next = z - (t - t_next) * 0.5 * (v + v_next);
    }
    z = z_next;
  }
  return z;
}

}  // namespace onestep
