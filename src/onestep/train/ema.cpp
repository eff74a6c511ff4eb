// EMA of module weights (see ema.h).
#include "onestep/train/ema.h"

#include <cmath>

namespace onestep {

double ema_initial_share(double decay, int64_t updates) { return std::pow(decay, static_cast<double>(updates)); }

std::string ema_initial_share_note(double decay, int64_t updates) {
  const double share = ema_initial_share(decay, updates);
  if (share <= 0.1) return "";
  return ", still " + std::to_string(std::lround(100 * share)) + "% the initial weights";
}

void copy_weights(const torch::nn::Module& from, torch::nn::Module& to) {
  torch::NoGradGuard no_grad;
  const auto src_params = from.parameters();
  auto dst_params = to.parameters();
  for (size_t i = 0; i < dst_params.size(); ++i) dst_params[i].copy_(src_params[i]);
  const auto src_buffers = from.buffers();
  auto dst_buffers = to.buffers();
  for (size_t i = 0; i < dst_buffers.size(); ++i) dst_buffers[i].copy_(src_buffers[i]);
}

Ema::Ema(ModuleSet shadow, const ModuleSet& live, double decay) : shadow_(std::move(shadow)), decay_(decay) {
  for (size_t m = 0; m < live.items().size(); ++m) {
    auto& module = *shadow_.items()[m].second;
    copy_weights(*live.items()[m].second, module);
    for (auto& p : module.parameters()) p.set_requires_grad(false);
    module.eval();
  }
  shadow_parameters_ = FlatParameters(shadow_.named_parameters(), /*with_grads=*/false);
}

void Ema::update(const ModuleSet& live, const FlatParameters& live_parameters) {
  torch::NoGradGuard no_grad;
  if (live_parameters.numel() != shadow_parameters_.numel())
    throw std::logic_error("Ema::update: the live parameters do not match the shadow modules");
  if (shadow_parameters_.numel() > 0) shadow_parameters_.data().lerp_(live_parameters.data(), 1.0 - decay_);
  for (size_t m = 0; m < live.items().size(); ++m) {
    const auto live_buffers = live.items()[m].second->buffers();
    auto shadow_buffers = shadow_.items()[m].second->buffers();
    for (size_t i = 0; i < shadow_buffers.size(); ++i) shadow_buffers[i].copy_(live_buffers[i]);
  }
}

}  // namespace onestep
