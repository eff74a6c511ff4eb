// Adam/AdamW, learning-rate warm-up and gradient clipping (see optimizer.h).
#include "onestep/train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "onestep/core/error.h"

namespace onestep {

Adam::Adam(std::vector<std::pair<std::string, torch::Tensor>> named_parameters, AdamOptions options)
    : params_(std::move(named_parameters)), options_(options) {
  for (const auto& [name, p] : params_) {
    exp_avg_.push_back(torch::zeros_like(p));
    exp_avg_sq_.push_back(torch::zeros_like(p));
  }
}

void Adam::zero_grad() {
  for (auto& [name, p] : params_)
    if (p.grad().defined()) p.mutable_grad().zero_();
}

void Adam::step(double lr) {
  torch::NoGradGuard no_grad;
  ++step_count_;
  const double bias1 = 1.0 - std::pow(options_.beta1, static_cast<double>(step_count_));
  const double bias2 = 1.0 - std::pow(options_.beta2, static_cast<double>(step_count_));
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i].second;
    if (!p.grad().defined()) continue;
    auto grad = p.grad();
    if (options_.weight_decay != 0.0) {
      if (options_.decoupled) {
        p.mul_(1.0 - lr * options_.weight_decay);
      } else {
        grad = grad + options_.weight_decay * p;
      }
    }
    exp_avg_[i].mul_(options_.beta1).add_(grad, 1.0 - options_.beta1);
    exp_avg_sq_[i].mul_(options_.beta2).addcmul_(grad, grad, 1.0 - options_.beta2);
    const auto denom = (exp_avg_sq_[i] / bias2).sqrt_().add_(options_.eps);
    p.addcdiv_(exp_avg_[i], denom, -lr / bias1);
  }
}

std::map<std::string, torch::Tensor> Adam::state() const {
  std::map<std::string, torch::Tensor> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out[params_[i].first + ".exp_avg"] = exp_avg_[i];
    out[params_[i].first + ".exp_avg_sq"] = exp_avg_sq_[i];
  }
  out["step"] = torch::tensor({step_count_}, torch::kLong);
  return out;
}

void Adam::load_state(const std::map<std::string, torch::Tensor>& state, const std::string& origin) {
  torch::NoGradGuard no_grad;
  const auto fetch = [&](const std::string& name, const torch::Tensor& like) {
    const auto it = state.find(name);
    if (it == state.end()) throw UserError(origin + ": missing optimizer tensor '" + name + "'");
    if (it->second.sizes() != like.sizes())
      throw UserError(origin + ": optimizer tensor '" + name + "' has shape " + c10::str(it->second.sizes()) +
                      ", expected " + c10::str(like.sizes()));
    return it->second;
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    exp_avg_[i].copy_(fetch(params_[i].first + ".exp_avg", exp_avg_[i]));
    exp_avg_sq_[i].copy_(fetch(params_[i].first + ".exp_avg_sq", exp_avg_sq_[i]));
  }
  step_count_ = fetch("step", torch::zeros({1})).item<int64_t>();
}

double LearningRateSchedule::at(int64_t step) const {
  if (warmup > 0 && step < warmup) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (!cosine || total_steps <= warmup) return lr;
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(total_steps - warmup));
  return 0.5 * lr * (1.0 + std::cos(M_PI * progress));
}

double clip_gradients(const std::vector<torch::Tensor>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> norms;
  for (const auto& p : params)
    if (p.grad().defined()) norms.push_back(p.grad().pow(2).sum());
  if (norms.empty()) return 0.0;
  const double norm = std::sqrt(torch::stack(norms).sum().item<double>());
  if (max_norm > 0 && norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);
    for (const auto& p : params)
      if (p.grad().defined()) p.grad().mul_(scale);
  }
  return norm;
}

}  // namespace onestep
