// Terminal Velocity Matching training step and sampler (spec §3; see tvm.h), and its registration.
#include "onestep/methods/tvm.h"

#include "onestep/core/config.h"
#include "onestep/core/error.h"

namespace onestep {
namespace {

[[maybe_unused]] const bool registered = MethodRegistry::instance().add(
    {"method", "tvm", "", "Terminal Velocity Matching: a flow map trained at its terminal time, 1..k NFE",
     TvmOptions::schema().keys()},
    [](const Config& config) { return std::make_unique<Tvm>(TvmOptions::schema().read(config)); });

// B x 1 guidance input 1/w, or undefined for an unconditional network.
torch::Tensor guidance_input(const NetworkImpl& net, const torch::Tensor& w) {
  return net.spec().num_extra > 0 ? (1.0 / w).unsqueeze(1) : torch::Tensor();
}

}  // namespace

const OptionSchema<TvmOptions>& TvmOptions::schema() {
  static const auto schema =
      OptionSchema<TvmOptions>("method")
          .add("gap_mu", &TvmOptions::gap_mu, -10, 10, "tvm: mean of the normal behind the gap t - s = sigmoid(N(mu, sigma))")
          .add("gap_sigma", &TvmOptions::gap_sigma, 1e-3, 10, "tvm: std of that normal")
          .include(&TvmOptions::time_sampler, TimeSampler::schema())
          .add("target_ema", &TvmOptions::target_ema, 0, 0.999999, "tvm: decay of the fast EMA used as the target network")
          .include(&TvmOptions::label_dropout, LabelDropout::schema())
          .include(&TvmOptions::coupling, Coupling::schema())
          .add("cfg_min", &TvmOptions::cfg_min, 1, 100, "tvm: lower end of the guidance scales w drawn in training")
          .add("cfg_max", &TvmOptions::cfg_max, 1, 100, "tvm: upper end of the guidance scales w drawn in training")
          .add("cfg_scale", &TvmOptions::cfg_scale, 0, 100, "tvm: guidance scale w at sampling (1: off)")
          .add("jvp", &TvmOptions::jvp, {"forward", "double-backward"},
               "JVP implementation: forward-mode AD, or double backward for ops without a forward formula");
  return schema;
}

Tvm::Tvm(TvmOptions options) : options_(std::move(options)), jvp_mode_(jvp_mode_from_name(options_.jvp)) {
  if (options_.cfg_min > options_.cfg_max)
    throw UserError("config: method.cfg_min = " + format_number(options_.cfg_min) + " exceeds method.cfg_max = " +
                    format_number(options_.cfg_max));
}

NetSpec Tvm::net_spec(const DataInfo& data) const {
  NetSpec spec = Method::net_spec(data);
  spec.num_extra = data.num_classes > 0 ? 1 : 0;  // the guidance scale, as 1/w
  return spec;
}

std::pair<torch::Tensor, torch::Tensor> Tvm::flow_map_and_terminal_velocity(NetworkImpl& net, const torch::Tensor& z_t,
                                                                            const torch::Tensor& t, const torch::Tensor& s,
                                                                            const torch::Tensor& c,
                                                                            const torch::Tensor& extra) const {
  // dF/ds: h = t - s moves by -1 per unit of s; z and t stay.
  NetInput tangent;
  tangent.h = torch::full_like(t, -1.0);
  const auto [f, df_ds] = network_jvp(net, {z_t, t, t - s, c, extra}, tangent, jvp_mode_, /*create_graph=*/true);
  const auto gap = per_sample(s - t, z_t.dim());
  return {z_t + gap * f, f + gap * df_ds};
}

torch::Tensor Tvm::terminal_term(NetworkImpl& net, NetworkImpl& target, const torch::Tensor& z_t,
                                 const torch::Tensor& t, const torch::Tensor& s, const torch::Tensor& c,
                                 const torch::Tensor& extra) const {
  const auto [psi, dpsi_ds] = flow_map_and_terminal_velocity(net, z_t, t, s, c, extra);
  torch::Tensor velocity_at_end;
  {
    torch::NoGradGuard no_grad;
    velocity_at_end = target.forward({psi.detach(), s, torch::zeros_like(s), c, extra});
  }
  const auto error = (dpsi_ds - velocity_at_end).pow(2).flatten(1).sum(1);
  return torch::where(s.ne(t), error, torch::zeros_like(error));
}

LossDraws Tvm::draw(const Batch& batch, torch::Generator& gen) const {
  const int64_t n = batch.x.size(0);
  const auto gap = torch::sigmoid(torch::randn({n}, gen) * options_.gap_sigma + options_.gap_mu);
  const auto s = options_.time_sampler.draw_below(1 - gap, gen);
  const auto t = torch::minimum(s + gap, torch::ones_like(s));
  const auto s_fm = options_.time_sampler.draw(n, gen);
  const auto e = options_.coupling.pair(batch.x, draw_noise(batch.x.sizes(), gen, torch::kCPU), batch.y);
  const auto drop = draw_label_drop(batch.y, options_.label_dropout.p, gen);
  torch::Tensor w;
  if (drop.defined()) w = options_.cfg_min + (options_.cfg_max - options_.cfg_min) * torch::rand({n}, gen);
  return {t, s, s_fm, e, drop, w};
}

LossOutput Tvm::loss_given(const LossContext& context, const Batch& batch, const LossDraws& draws) {
  NetworkImpl& net = context.modules["net"];
  NetworkImpl& target = context.target ? (*context.target)["net"] : net;
  const auto& x = batch.x;
  const int64_t n = x.size(0);
  const auto &t = draws[0], &s = draws[1], &s_fm = draws[2];
  const auto& e = draws[3];
  const auto c = drop_labels(batch.y, net.null_label(), draws[4]);
  auto w = torch::ones({n}, x.options());
  if (c.defined()) w = torch::where(c.eq(net.null_label()), torch::ones_like(draws[5]), draws[5]);
  const auto extra = guidance_input(net, w);

  const auto terminal = terminal_term(net, target, interpolate(x, e, t), t, s, c, extra);
  const auto z_fm = interpolate(x, e, s_fm);
  auto v_target = e - x;
  if (c.defined() && options_.cfg_max > 1.0) {  // guided FM target w v + (1 - w) u⁻(z, s', null)
    torch::NoGradGuard no_grad;
    const auto null = torch::full_like(c, net.null_label());
    const auto unconditional =
        target.forward({z_fm, s_fm, torch::zeros_like(s_fm), null, guidance_input(net, torch::ones_like(w))});
    const auto wb = per_sample(w, x.dim());
    v_target = wb * v_target + (1 - wb) * unconditional;
  }
  net.track_activations(true);
  const auto u = net.forward({z_fm, s_fm, torch::zeros_like(s_fm), c, extra});
  const auto peak_rms = net.peak_activation_rms();
  net.track_activations(false);
  const auto flow_matching = (u - v_target).pow(2).flatten(1).sum(1);
  const auto weight = 1.0 / w.pow(2);
  LossOutput out;
  out.loss = (weight * (terminal + flow_matching)).mean();
  out.parts["terminal"] = terminal.detach().mean();
  out.parts["fm"] = flow_matching.detach().mean();
  if (peak_rms.defined()) out.parts["activation_rms_max"] = peak_rms;
  return out;
}

torch::Tensor Tvm::sample(const ModuleSet& modules, const torch::Tensor& noise, const torch::Tensor& labels,
                          const SamplingPlan& plan) {
  torch::NoGradGuard no_grad;
  if (plan.steps < 1) throw UserError("tvm: nfe must be at least 1, got " + std::to_string(plan.steps));
  NetworkImpl& net = modules["net"];
  const int64_t n = noise.size(0);
  const double w = labels.defined() ? options_.cfg_scale : 1.0;
  const auto extra = guidance_input(net, filled(n, w, noise));
  const auto grid = uniform_time_grid(plan.steps);
  auto z = noise;
  for (int64_t i = 0; i < plan.steps; ++i) {
    const double t = grid[i], s = grid[i + 1];
    z = z + (s - t) * net.forward({z, filled(n, t, z), filled(n, t - s, z), labels, extra});
  }
  return z;
}

}  // namespace onestep
