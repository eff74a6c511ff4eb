// MeanFlow training step and sampler (spec §2; see meanflow.h), and its registration.
#include "onestep/methods/meanflow.h"

#include "onestep/core/config.h"
#include "onestep/core/error.h"

namespace onestep {

namespace {

[[maybe_unused]] const bool registered = MethodRegistry::instance().add(
    {"method", "meanflow", "", "MeanFlow: average velocity through the MeanFlow identity, 1-NFE sampling",
     MeanFlowOptions::schema().keys()},
    [](const Config& config) { return std::make_unique<MeanFlow>(MeanFlowOptions::schema().read(config)); });

}  // namespace

const OptionSchema<MeanFlowOptions>& MeanFlowOptions::schema() {
  static const auto schema =
      OptionSchema<MeanFlowOptions>("method")
          .include(&MeanFlowOptions::time_sampler, TimeSampler::schema())
          .include(&MeanFlowOptions::label_dropout, LabelDropout::schema())
          .include(&MeanFlowOptions::coupling, Coupling::schema())
          .add("ratio", &MeanFlowOptions::ratio, 0, 1, "meanflow: share of the batch with r != t")
          .add("gap_sampler", &MeanFlowOptions::gap_sampler, {"pairs", "uniform-gap"},
               "meanflow: r != t pairs from two sorted time draws, or gap t - r ~ U(0, 1) then r below 1 - gap")
          .add("adaptive_p", &MeanFlowOptions::adaptive_p, 0, 10, "meanflow: adaptive loss weight power p (0: plain L2)")
          .add("adaptive_c", &MeanFlowOptions::adaptive_c, 1e-12, 10, "meanflow: adaptive loss weight constant c")
          .add("cfg_omega", &MeanFlowOptions::cfg_omega, 0, 100, "meanflow: CFG scale omega folded into training (1: off)")
          .add("cfg_kappa", &MeanFlowOptions::cfg_kappa, 0, 0.999,
               "meanflow: CFG mixing kappa (effective scale omega/(1-kappa))")
          .add("cfg_t_lo", &MeanFlowOptions::cfg_t_lo, 0, 1, "meanflow: CFG applies for t in [cfg_t_lo, cfg_t_hi]")
          .add("cfg_t_hi", &MeanFlowOptions::cfg_t_hi, 0, 1, "meanflow: upper end of the CFG interval")
          .add("jvp", &MeanFlowOptions::jvp, {"forward", "double-backward"},
               "JVP implementation: forward-mode AD, or double backward for ops without a forward formula")
          .add("tangent", &MeanFlowOptions::tangent, {"v,0,1", "v,0,0", "v,1,0", "v,1,1"},
               "meanflow: JVP tangent on (z, r, t); only v,0,1 is correct (the others are for the ablation)")
          .add("tangent_velocity", &MeanFlowOptions::tangent_velocity, {"conditional", "model"},
               "meanflow: z-tangent of the JVP: the conditional velocity e - x, or the network's own u(z, t, t)");
  return schema;
}

MeanFlow::MeanFlow(MeanFlowOptions options)
    : options_(std::move(options)),
      jvp_mode_(jvp_mode_from_name(options_.jvp)),
      tangent_r_(options_.tangent[2] == '1' ? 1.0 : 0.0),
      tangent_t_(options_.tangent[4] == '1' ? 1.0 : 0.0) {
  if (options_.cfg_t_lo > options_.cfg_t_hi)
    throw UserError("config: method.cfg_t_lo = " + format_number(options_.cfg_t_lo) +
                    " exceeds method.cfg_t_hi = " + format_number(options_.cfg_t_hi));
}

TimePair MeanFlow::sample_time_pair(int64_t n, torch::Generator& gen) const {
  torch::Tensor t, r;
  if (options_.gap_sampler == "uniform-gap") {
    const auto gap = torch::rand({n}, gen);
    r = options_.time_sampler.draw_below(1 - gap, gen);
    t = torch::minimum(r + gap, torch::ones_like(r));
  } else {
    const auto a = options_.time_sampler.draw(n, gen);
    const auto b = options_.time_sampler.draw(n, gen);
    t = torch::maximum(a, b);
    r = torch::minimum(a, b);
  }
  const auto keep_gap = torch::rand({n}, gen) < options_.ratio;
  r = torch::where(keep_gap, r, t);
  return {t, r};
}

std::pair<torch::Tensor, torch::Tensor> MeanFlow::average_velocity_and_time_derivative(
    NetworkImpl& net, const torch::Tensor& z, const torch::Tensor& r, const torch::Tensor& t,
    const torch::Tensor& c, const torch::Tensor& v) const {
  // With the (t, h = t - r) parameterisation the tangent (a_r, a_t) on (r, t) becomes
  // a_t on t and a_t - a_r on h.
  const auto h = t - r;
  return network_jvp(net, {z, t, h, c}, {v, torch::full_like(t, tangent_t_), torch::full_like(h, tangent_t_ - tangent_r_)},
                     jvp_mode_, /*create_graph=*/false);
}

torch::Tensor MeanFlow::target(const torch::Tensor& v, const torch::Tensor& du_dt, const torch::Tensor& r,
                               const torch::Tensor& t) {
  return (v - per_sample((t - r).clamp(0, 1), v.dim()) * du_dt).detach();
}

torch::Tensor MeanFlow::guided_velocity(NetworkImpl& net, const torch::Tensor& z_t, const torch::Tensor& t,
                                        const torch::Tensor& v_t, const torch::Tensor& labels,
                                        const torch::Tensor& dropped) const {
  if (!labels.defined() || (options_.cfg_omega == 1.0 && options_.cfg_kappa == 0.0)) return v_t;
  torch::NoGradGuard no_grad;
  const auto [conditional, unconditional] = conditional_and_unconditional(net, {z_t, t, torch::zeros_like(t), labels});
  return fold_guidance(v_t, conditional, unconditional, t, dropped);
}

torch::Tensor MeanFlow::fold_guidance(const torch::Tensor& v_t, const torch::Tensor& v_cond,
                                      const torch::Tensor& v_uncond, const torch::Tensor& t,
                                      const torch::Tensor& dropped) const {
  const double w = options_.cfg_omega, k = options_.cfg_kappa;
  const auto guided = w * v_t + k * v_cond + (1.0 - w - k) * v_uncond;
  const auto apply = (t >= options_.cfg_t_lo).logical_and(t <= options_.cfg_t_hi).logical_and(dropped.logical_not());
  return torch::where(per_sample(apply, v_t.dim()), guided, v_t);
}

LossDraws MeanFlow::draw(const Batch& batch, torch::Generator& gen) const {
  const auto [t, r] = sample_time_pair(batch.x.size(0), gen);
  const auto e = options_.coupling.pair(batch.x, draw_noise(batch.x.sizes(), gen, torch::kCPU), batch.y);
  return {t, r, e, draw_label_drop(batch.y, options_.label_dropout.p, gen)};
}

LossOutput MeanFlow::loss_given(const LossContext& context, const Batch& batch, const LossDraws& draws) {
  NetworkImpl& net = context.modules["net"];
  const auto point = path_point(batch.x, draws[0], draws[2]);
  return loss_at(net, point, draws[1], batch.y, drop_labels(batch.y, net.null_label(), draws[3]));
}

LossOutput MeanFlow::loss_at(NetworkImpl& net, const PathPoint& point, const torch::Tensor& r,
                             const torch::Tensor& labels, const torch::Tensor& c) const {
  const auto& t = point.t;
  const auto v = c.defined() ? guided_velocity(net, point.z_t, t, point.v_t, labels, c.eq(net.null_label()))
                             : point.v_t;
  torch::Tensor tangent = v;
  if (options_.tangent_velocity == "model") {
    torch::NoGradGuard no_grad;
    tangent = net.forward({point.z_t, t, torch::zeros_like(t), c}).to(v.scalar_type());
  }
  const auto [u, du_dt] = average_velocity_and_time_derivative(net, point.z_t, r, t, c, tangent);
  const auto u_target = target(v, du_dt, r, t);
  const auto error = (u - u_target).pow(2).flatten(1).sum(1);
  const auto weight = options_.adaptive_p == 0.0
                          ? torch::ones_like(error)
                          : (error.detach() + options_.adaptive_c).pow(-options_.adaptive_p);
  LossOutput out;
  out.loss = (weight * error).mean();
  out.parts["mse"] = error.detach().mean();
  // Plain flow-matching error of the instantaneous velocity (r = t samples), for monitoring.
  const auto instantaneous = r.eq(t);
  const auto fm_error = (u.detach() - point.v_t).pow(2).flatten(1).sum(1);
  out.parts["velocity_error"] = (fm_error * instantaneous).sum() / instantaneous.sum().clamp_min(1);
  return out;
}

torch::Tensor MeanFlow::sample(const ModuleSet& modules, const torch::Tensor& noise, const torch::Tensor& labels,
                               const SamplingPlan& plan) {
  torch::NoGradGuard no_grad;
  const int64_t nfe = plan.steps;
  if (nfe < 1) throw UserError("meanflow: nfe must be at least 1, got " + std::to_string(nfe));
  NetworkImpl& net = modules["net"];
  const auto grid = uniform_time_grid(nfe);
  const int64_t n = noise.size(0);
  auto z = noise;
  for (int64_t i = 0; i < nfe; ++i) {
    const double t = grid[i], r = grid[i + 1];
    const auto u = net.forward({z, filled(n, t, z), filled(n, t - r, z), labels});
    z = z - (t - r) * u;
  }
  return z;
}

}  // namespace onestep
