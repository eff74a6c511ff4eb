// Adam/AdamW, learning-rate warm-up and gradient clipping (see optimizer.h).
#include "onestep/train/optimizer.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "onestep/core/error.h"

namespace onestep {

namespace {

// Adam's update as one pass over float32 CPU buffers (the same arithmetic as the generic path,
// in float): reads each element of p, g, m and v once.
void adam_update_cpu_float(const torch::Tensor& param, const torch::Tensor& grad, const torch::Tensor& exp_avg,
                           const torch::Tensor& exp_avg_sq, const AdamOptions& options, double lr, double bias1,
                           double bias2) {
  float* p = param.data_ptr<float>();
  const float* g = grad.data_ptr<float>();
  float* m = exp_avg.data_ptr<float>();
  float* v = exp_avg_sq.data_ptr<float>();
  const float beta1 = static_cast<float>(options.beta1), beta2 = static_cast<float>(options.beta2);
  const float one_minus_beta1 = static_cast<float>(1.0 - options.beta1);
  const float one_minus_beta2 = static_cast<float>(1.0 - options.beta2);
  const float coupled_decay = options.decoupled ? 0.0f : static_cast<float>(options.weight_decay);
  const float decoupled_keep = options.decoupled ? static_cast<float>(1.0 - lr * options.weight_decay) : 1.0f;
  const float inv_bias2 = static_cast<float>(1.0 / bias2), eps = static_cast<float>(options.eps);
  const float step_size = static_cast<float>(lr / bias1);
  at::parallel_for(0, param.numel(), 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float gi = g[i] + coupled_decay * p[i];
      const float pi = p[i] * decoupled_keep;
      m[i] = beta1 * m[i] + one_minus_beta1 * gi;
      v[i] = beta2 * v[i] + one_minus_beta2 * gi * gi;
      p[i] = pi - step_size * m[i] / (std::sqrt(v[i] * inv_bias2) + eps);
    }
  });
}

}  // namespace

Adam::Adam(std::vector<std::pair<std::string, torch::Tensor>> named_parameters, AdamOptions options)
    : params_(std::move(named_parameters)), options_(options) {
  if (params_.numel() == 0) return;
  exp_avg_ = torch::zeros_like(params_.data());
  exp_avg_sq_ = torch::zeros_like(params_.data());
  step_size_ = torch::zeros({}, params_.data().options());
  bias2_tensor_ = torch::ones({}, params_.data().options());
  keep_ = torch::ones({}, params_.data().options());
}

void Adam::zero_grad() {
  if (params_.numel() > 0) params_.grad().zero_();
}

void Adam::step(double lr) {
  prepare(lr);
  apply();
}

void Adam::prepare(double lr) {
  if (params_.numel() == 0) return;
  ++step_count_;
  lr_ = lr;
  bias1_ = 1.0 - std::pow(options_.beta1, static_cast<double>(step_count_));
  bias2_ = 1.0 - std::pow(options_.beta2, static_cast<double>(step_count_));
  if (params_.data().device().is_cpu() && params_.data().scalar_type() == torch::kFloat) return;
  torch::NoGradGuard no_grad;
  step_size_.fill_(lr / bias1_);
  bias2_tensor_.fill_(bias2_);
  keep_.fill_(1.0 - lr * options_.weight_decay);
}

void Adam::apply() {
  if (params_.numel() == 0) return;
  torch::NoGradGuard no_grad;
  const auto& p = params_.data();
  auto grad = params_.grad();
  if (p.device().is_cpu() && p.scalar_type() == torch::kFloat) {
    adam_update_cpu_float(p, grad, exp_avg_, exp_avg_sq_, options_, lr_, bias1_, bias2_);
    return;
  }
  if (options_.weight_decay != 0.0) {
    if (options_.decoupled) {
      p.mul_(keep_);
    } else {
      grad = grad + options_.weight_decay * p;
    }
  }
  exp_avg_.mul_(options_.beta1).add_(grad, 1.0 - options_.beta1);
  exp_avg_sq_.mul_(options_.beta2).addcmul_(grad, grad, 1.0 - options_.beta2);
  const auto denom = (exp_avg_sq_ / bias2_tensor_).sqrt_().add_(options_.eps);
  p.sub_(exp_avg_.div(denom).mul_(step_size_));
}

std::map<std::string, torch::Tensor> Adam::state() const {
  std::map<std::string, torch::Tensor> out;
  const auto averages = params_.slices(exp_avg_), squares = params_.slices(exp_avg_sq_);
  for (size_t i = 0; i < averages.size(); ++i) {
    out[params_.named()[i].first + ".exp_avg"] = averages[i];
    out[params_.named()[i].first + ".exp_avg_sq"] = squares[i];
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
  const auto averages = params_.slices(exp_avg_), squares = params_.slices(exp_avg_sq_);
  for (size_t i = 0; i < averages.size(); ++i) {
    averages[i].copy_(fetch(params_.named()[i].first + ".exp_avg", averages[i]));
    squares[i].copy_(fetch(params_.named()[i].first + ".exp_avg_sq", squares[i]));
  }
  step_count_ = fetch("step", torch::zeros({1})).item<int64_t>();
}

Adam adamw(const torch::nn::Module& module, double lr, double weight_decay) {
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : module.named_parameters()) named.emplace_back(item.key(), item.value());
  AdamOptions options;
  options.lr = lr;
  options.weight_decay = weight_decay;
  options.decoupled = true;
  return Adam(std::move(named), options);
}

double LearningRateSchedule::at(int64_t step) const {
  if (warmup > 0 && step < warmup) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (!cosine || total_steps <= warmup) return lr;
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(total_steps - warmup));
  return 0.5 * lr * (1.0 + std::cos(M_PI * progress));
}

torch::Tensor gradient_norm(FlatParameters& params) {
  if (params.numel() == 0) return torch::zeros({});
  torch::NoGradGuard no_grad;
  return params.grad().norm();
}

void clip_gradients(FlatParameters& params, const torch::Tensor& norm, double max_norm) {
  if (params.numel() == 0 || max_norm <= 0) return;
  torch::NoGradGuard no_grad;
  const auto n = norm.to(torch::kDouble).reshape({});  // 0-dim: the gradients keep their dtype
  const auto limit = torch::full_like(n, max_norm);
  params.grad().mul_(torch::where(n > limit, limit / (n + 1e-6), torch::ones_like(n)));
}

}  // namespace onestep
