// EMA of network weights (see ema.h).
#include "onestep/train/ema.h"

namespace onestep {

void copy_weights(const NetworkImpl& from, NetworkImpl& to) {
  torch::NoGradGuard no_grad;
  const auto src_params = from.parameters();
  auto dst_params = to.parameters();
  for (size_t i = 0; i < dst_params.size(); ++i) dst_params[i].copy_(src_params[i]);
  const auto src_buffers = from.buffers();
  auto dst_buffers = to.buffers();
  for (size_t i = 0; i < dst_buffers.size(); ++i) dst_buffers[i].copy_(src_buffers[i]);
}

Ema::Ema(Network shadow, const NetworkImpl& live, double decay) : shadow_(std::move(shadow)), decay_(decay) {
  copy_weights(live, *shadow_);
  for (auto& p : shadow_->parameters()) p.set_requires_grad(false);
  shadow_->eval();
}

void Ema::update(const NetworkImpl& live) {
  torch::NoGradGuard no_grad;
  const auto live_params = live.parameters();
  auto shadow_params = shadow_->parameters();
  for (size_t i = 0; i < shadow_params.size(); ++i) shadow_params[i].lerp_(live_params[i], 1.0 - decay_);
  const auto live_buffers = live.buffers();
  auto shadow_buffers = shadow_->buffers();
  for (size_t i = 0; i < shadow_buffers.size(); ++i) shadow_buffers[i].copy_(live_buffers[i]);
}

}  // namespace onestep
