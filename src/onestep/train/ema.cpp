// EMA of module weights (see ema.h).
#include "onestep/train/ema.h"

#include <algorithm>
#include <cmath>

namespace onestep {

EmaSchedule EmaSchedule::from_config(const Config& config) {
  return {config.get_float("train.ema_decay"), config.get_bool("train.ema_warmup")};
}

double EmaSchedule::at(int64_t n) const {
  return warmup ? std::min(decay, (1.0 + static_cast<double>(n)) / (10.0 + static_cast<double>(n))) : decay;
}

double EmaSchedule::initial_share(int64_t updates) const {
  double share = 1.0;
  int64_t n = 0;
  for (; n < updates && at(n) < decay; ++n) share *= at(n);  // the warm-up: about 9,000 updates at 0.999
  return share * std::pow(decay, static_cast<double>(updates - n));
}

std::string EmaSchedule::initial_share_note(int64_t updates) const {
  const double share = initial_share(updates);
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

Ema::Ema(ModuleSet shadow, const ModuleSet& live, EmaSchedule schedule)
    : shadow_(std::move(shadow)), schedule_(schedule) {
  for (size_t m = 0; m < live.items().size(); ++m) {
    auto& module = *shadow_.items()[m].second;
    copy_weights(*live.items()[m].second, module);
    for (auto& p : module.parameters()) p.set_requires_grad(false);
    module.eval();
  }
  shadow_parameters_ = FlatParameters(shadow_.named_parameters(), /*with_grads=*/false);
}

void Ema::update(const ModuleSet& live, const FlatParameters& live_parameters, int64_t step) {
  prepare(step);
  apply(live, live_parameters);
}

void Ema::prepare(int64_t step) {
  weight_ = 1.0 - schedule_.at(step);
  if (shadow_parameters_.numel() == 0 || shadow_parameters_.data().device().is_cpu()) return;
  torch::NoGradGuard no_grad;
  if (!weight_tensor_.defined()) weight_tensor_ = torch::zeros({}, shadow_parameters_.data().options());
  weight_tensor_.fill_(weight_);
}

void Ema::apply(const ModuleSet& live, const FlatParameters& live_parameters) {
  torch::NoGradGuard no_grad;
  if (live_parameters.numel() != shadow_parameters_.numel())
    throw std::logic_error("Ema::update: the live parameters do not match the shadow modules");
  if (shadow_parameters_.numel() > 0) {
    auto& shadow = shadow_parameters_.data();
    if (shadow.device().is_cpu()) {
      shadow.lerp_(live_parameters.data(), weight_);
    } else {
      shadow.lerp_(live_parameters.data(), weight_tensor_);
    }
  }
  for (size_t m = 0; m < live.items().size(); ++m) {
    const auto live_buffers = live.items()[m].second->buffers();
    auto shadow_buffers = shadow_.items()[m].second->buffers();
    for (size_t i = 0; i < shadow_buffers.size(); ++i) shadow_buffers[i].copy_(live_buffers[i]);
  }
}

}  // namespace onestep
