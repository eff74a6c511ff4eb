// EMA of module weights (see ema.h).
#include "onestep/train/ema.h"

namespace onestep {

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
}

void Ema::update(const ModuleSet& live) {
  torch::NoGradGuard no_grad;
  for (size_t m = 0; m < live.items().size(); ++m) {
    const auto& from = *live.items()[m].second;
    auto& to = *shadow_.items()[m].second;
    const auto live_params = from.parameters();
    auto shadow_params = to.parameters();
    for (size_t i = 0; i < shadow_params.size(); ++i) shadow_params[i].lerp_(live_params[i], 1.0 - decay_);
    const auto live_buffers = from.buffers();
    auto shadow_buffers = to.buffers();
    for (size_t i = 0; i < shadow_buffers.size(); ++i) shadow_buffers[i].copy_(live_buffers[i]);
  }
}

}  // namespace onestep
