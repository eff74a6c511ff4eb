// MeanFlow training step and sampler (spec §2; see meanflow.h).
#include "onestep/methods/meanflow.h"

#include "onestep/core/config.h"
#include "onestep/core/error.h"

namespace onestep {

MeanFlowOptions MeanFlow::options_from_config(const Config& config) {
  MeanFlowOptions options;
  options.time_sampler = TimeSampler::from_config(config);
  options.ratio = config.get_float("method.ratio");
  options.adaptive_p = config.get_float("method.adaptive_p");
  options.adaptive_c = config.get_float("method.adaptive_c");
  options.label_dropout = config.get_float("method.label_dropout");
  options.cfg_omega = config.get_float("method.cfg_omega");
  options.cfg_kappa = config.get_float("method.cfg_kappa");
  options.cfg_t_lo = config.get_float("method.cfg_t_lo");
  options.cfg_t_hi = config.get_float("method.cfg_t_hi");
  if (options.cfg_t_lo > options.cfg_t_hi)
    throw UserError("config: method.cfg_t_lo = " + std::to_string(options.cfg_t_lo) +
                    " exceeds method.cfg_t_hi = " + std::to_string(options.cfg_t_hi));
  options.jvp_mode = jvp_mode_from_name(config.get_string("method.jvp"));
  const std::string& tangent = config.get_string("method.tangent");  // "v,a_r,a_t"
  options.tangent_r = tangent[2] == '1' ? 1.0 : 0.0;
  options.tangent_t = tangent[4] == '1' ? 1.0 : 0.0;
  return options;
}

TimePair MeanFlow::sample_time_pair(int64_t n, torch::Generator& gen) const {
  const auto a = options_.time_sampler.draw(n, gen);
  const auto b = options_.time_sampler.draw(n, gen);
  auto t = torch::maximum(a, b);
  auto r = torch::minimum(a, b);
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
  const auto f = [&net, &c](const std::vector<torch::Tensor>& in) { return net.forward(in[0], in[1], in[2], c); };
  return jvp(f, {z, t, h}, {v, torch::full_like(t, options_.tangent_t), torch::full_like(h, options_.tangent_t - options_.tangent_r)},
             options_.jvp_mode, /*create_graph=*/false);
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
  const int64_t n = z_t.size(0);
  const auto null = torch::full_like(labels, net.null_label());
  const auto tt = torch::cat({t, t});
  const auto both = net.forward(torch::cat({z_t, z_t}), tt, torch::zeros_like(tt), torch::cat({labels, null}));
  return fold_guidance(v_t, both.slice(0, 0, n), both.slice(0, n, 2 * n), t, dropped);
}

torch::Tensor MeanFlow::fold_guidance(const torch::Tensor& v_t, const torch::Tensor& v_cond,
                                      const torch::Tensor& v_uncond, const torch::Tensor& t,
                                      const torch::Tensor& dropped) const {
  const double w = options_.cfg_omega, k = options_.cfg_kappa;
  const auto guided = w * v_t + k * v_cond + (1.0 - w - k) * v_uncond;
  const auto apply = (t >= options_.cfg_t_lo).logical_and(t <= options_.cfg_t_hi).logical_and(dropped.logical_not());
  return torch::where(per_sample(apply, v_t.dim()), guided, v_t);
}

LossOutput MeanFlow::loss(const LossContext& context, const Batch& batch) {
  const auto& x = batch.x;
  const auto device = x.device();
  const int64_t n = x.size(0);
  auto [t, r] = sample_time_pair(n, context.gen);
  t = t.to(device);
  r = r.to(device);
  const auto e = draw_noise(x.sizes(), context.gen, device);
  const auto tb = per_sample(t, x.dim());
  const auto z_t = (1 - tb) * x + tb * e;
  const auto v_t = e - x;
  const auto c = drop_labels(batch.y, context.net.null_label(), options_.label_dropout, context.gen);
  const auto v = c.defined() ? guided_velocity(context.net, z_t, t, v_t, batch.y, c.eq(context.net.null_label()))
                             : v_t;

  const auto [u, du_dt] = average_velocity_and_time_derivative(context.net, z_t, r, t, c, v);
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
  const auto fm_error = (u.detach() - v_t).pow(2).flatten(1).sum(1);
  out.parts["velocity_error"] = (fm_error * instantaneous).sum() / instantaneous.sum().clamp_min(1);
  return out;
}

torch::Tensor MeanFlow::sample(NetworkImpl& net, const torch::Tensor& noise, const torch::Tensor& labels,
                               int64_t nfe) {
  torch::NoGradGuard no_grad;
  if (nfe < 1) throw UserError("meanflow: nfe must be at least 1, got " + std::to_string(nfe));
  const auto grid = uniform_time_grid(nfe);
  const int64_t n = noise.size(0);
  const auto opts = torch::TensorOptions().dtype(noise.dtype()).device(noise.device());
  auto z = noise;
  for (int64_t i = 0; i < nfe; ++i) {
    const double t = grid[i], r = grid[i + 1];
    const auto u = net.forward(z, torch::full({n}, t, opts), torch::full({n}, t - r, opts), labels);
    z = z - (t - r) * u;
  }
  return z;
}

}  // namespace onestep
