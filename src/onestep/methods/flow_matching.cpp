// Flow Matching loss and Euler/Heun samplers (spec §1; see flow_matching.h).
#include "onestep/methods/flow_matching.h"

#include "onestep/core/config.h"
#include "onestep/core/error.h"

namespace onestep {

FlowMatchingOptions FlowMatching::options_from_config(const Config& config) {
  FlowMatchingOptions options;
  options.time_sampler = TimeSampler::from_config(config);
  options.label_dropout = config.get_float("method.label_dropout");
  options.sampler = config.get_string("method.sampler");
  options.cfg_scale = config.get_float("method.cfg_scale");
  return options;
}

LossOutput FlowMatching::loss(const LossContext& context, const Batch& batch) {
  const auto& x = batch.x;
  const auto device = x.device();
  const int64_t n = x.size(0);
  const auto t = options_.time_sampler.draw(n, context.gen).to(device);
  const auto e = draw_noise(x.sizes(), context.gen, device);
  const auto tb = per_sample(t, x.dim());
  const auto z_t = (1 - tb) * x + tb * e;
  const auto v_t = e - x;
  const auto c = drop_labels(batch.y, context.net.null_label(), options_.label_dropout, context.gen);
  const auto v_pred = context.net.forward(z_t, t, torch::zeros_like(t), c);
  const auto per_sample_error = (v_pred - v_t).pow(2).flatten(1).sum(1);
  LossOutput out;
  out.loss = per_sample_error.mean();
  return out;
}

torch::Tensor FlowMatching::velocity(NetworkImpl& net, const torch::Tensor& z, double t, const torch::Tensor& labels) {
  const int64_t n = z.size(0);
  const auto opts = torch::TensorOptions().dtype(z.dtype()).device(z.device());
  if (!labels.defined() || options_.cfg_scale == 1.0) {
    return net.forward(z, torch::full({n}, t, opts), torch::zeros({n}, opts), labels);
  }
  const auto null = torch::full_like(labels, net.null_label());
  const auto both = net.forward(torch::cat({z, z}), torch::full({2 * n}, t, opts), torch::zeros({2 * n}, opts),
                                torch::cat({labels, null}));
  const auto conditional = both.slice(0, 0, n);
  const auto unconditional = both.slice(0, n, 2 * n);
  return unconditional + options_.cfg_scale * (conditional - unconditional);
}

torch::Tensor FlowMatching::sample(NetworkImpl& net, const torch::Tensor& noise, const torch::Tensor& labels,
                                   int64_t nfe) {
  torch::NoGradGuard no_grad;
  if (nfe < 1) throw UserError("fm: nfe must be at least 1, got " + std::to_string(nfe));
  const bool heun = options_.sampler == "heun";
  if (heun && nfe % 2 == 0)
    throw UserError("fm: the heun sampler needs an odd nfe (2 per step, 1 for the last step), got " +
                    std::to_string(nfe));
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
