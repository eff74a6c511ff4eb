// Network construction through the registry, output-layer initialisation and shared checks
// (see network.h).
#include "onestep/nets/network.h"

#include <cmath>

#include "onestep/core/config.h"
#include "onestep/core/error.h"

namespace onestep {
namespace {

// The framework's default initialisation of a linear or conv layer (kaiming-uniform with
// a = sqrt(5), bias uniform in +-1/sqrt(fan_in)).
void default_init(torch::Tensor& weight, torch::Tensor& bias) {
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  const double fan_in = static_cast<double>(weight.numel() / weight.size(0));
  const double bound = 1.0 / std::sqrt(fan_in);
  if (bias.defined()) bias.uniform_(-bound, bound);
}

// Rescales the output layer so that the output's standard deviation on standard normal inputs
// (t = h = 0.5, null label, zero extra conditions and context) is `target`.
void scale_output_to(NetworkImpl& net, double target) {
  const NetSpec& spec = net.spec();
  const int64_t n = 256;
  std::vector<int64_t> shape = {n};
  shape.insert(shape.end(), spec.in_shape.begin(), spec.in_shape.end());
  auto gen = at::detail::createCPUGenerator(0);
  NetInput probe{torch::randn(shape, gen), torch::full({n}, 0.5), torch::full({n}, 0.5)};
  if (spec.num_extra > 0) probe.extra = torch::zeros({n, spec.num_extra});
  if (spec.context_dim > 0) probe.context = torch::zeros({n, spec.context_dim});
  const double std = net.forward(probe).std().item<double>();
  if (!(std > 0)) return;
  for (auto& p : net.output_parameters()) p.mul_(target / std);
}

}  // namespace

Network make_network(const Config& config, const NetSpec& spec, double data_std) {
  Network net = NetworkRegistry::instance().get("model", config.get_string("model.name"))(config, spec);
  torch::NoGradGuard no_grad;
  auto output = net->output_parameters();
  switch (spec.output_init) {
    case OutputInit::Network:
      break;
    case OutputInit::Zero:
      for (auto& p : output) p.zero_();
      break;
    case OutputInit::Default:
    case OutputInit::DataScale:
      default_init(output[0], output[1]);
      if (spec.output_init == OutputInit::DataScale) scale_output_to(*net, data_std);
      break;
  }
  return net;
}

int64_t count_parameters(const torch::nn::Module& net) {
  int64_t count = 0;
  for (const auto& p : net.parameters()) count += p.numel();
  return count;
}

void require_image_shape(const NetSpec& spec, const std::string& network) {
  if (spec.in_shape.size() != 3)
    throw UserError("config: model.name = '" + network + "' needs image data (C x H x W); this data is " +
                    std::to_string(spec.in_shape.size()) + "-D per sample (use mlp)");
}

}  // namespace onestep
