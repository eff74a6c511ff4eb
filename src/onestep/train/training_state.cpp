// The training state and its step (see training_state.h).
#include "onestep/train/training_state.h"

#include <cmath>

#include "onestep/core/compat.h"
#include "onestep/core/runtime.h"
#include "onestep/train/checkpoint.h"

namespace onestep {
namespace {

// The standard deviation of 1024 training samples drawn with a generator of their own (the
// training stream stays untouched), for methods that scale their output layer to the data.
double data_std(Dataset& dataset, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed + 1);
  return dataset.train_batch(1024, gen).x.std().item<double>();
}

}  // namespace

TrainingState::TrainingState(const Config& config)
    : config_(config),
      device_(resolve_device(config_.get_string("train.device"))),
      gen_(at::detail::createCPUGenerator(static_cast<uint64_t>(config_.get_int("train.seed")))),
      batch_size_(config_.get_int("train.batch_size")),
      grad_clip_(config_.get_float("train.grad_clip")) {
  config_.validate();
  bf16_ = config_.get_string("train.precision") == "bf16";
  compat::allow_tf32(config_.get_bool("train.tf32"));
  const auto seed = static_cast<uint64_t>(config_.get_int("train.seed"));
  torch::manual_seed(seed);  // module initialisation
  dataset_ = make_dataset(config_);
  method_ = make_method(config_);
  data_info_ = {dataset_->sample_shape(), dataset_->num_classes(), data_std(*dataset_, seed)};
  modules_ = method_->build_modules(config_, data_info_);
  modules_.to(device_);
  const auto shadow_modules = [&] {  // on the device before the EMA lays them out flat
    ModuleSet shadow = method_->build_modules(config_, data_info_);
    shadow.to(device_);
    return shadow;
  };
  ema_ = std::make_unique<Ema>(shadow_modules(), modules_, config_.get_float("train.ema_decay"));
  if (method_->target_ema_decay() > 0)
    target_ema_ = std::make_unique<Ema>(shadow_modules(), modules_, method_->target_ema_decay());
  for (const auto& spec : method_->frozen_modules()) {
    frozen_[spec.name] = load_frozen_module(spec);
    frozen_[spec.name]->to(device_);
  }
  AdamOptions adam;
  adam.lr = config_.get_float("train.lr");
  adam.beta1 = config_.get_float("train.beta1");
  adam.beta2 = config_.get_float("train.beta2");
  adam.weight_decay = config_.get_float("train.weight_decay");
  adam.decoupled = config_.get_string("train.optimizer") == "adamw";
  optimizer_ = std::make_unique<Adam>(modules_.named_parameters(), adam);
  schedule_ = {adam.lr, config_.get_int("train.warmup"), config_.get_string("train.lr_schedule") == "cosine",
               config_.get_int("train.steps")};
}

StepOutcome TrainingState::step(int64_t step) {
  Batch batch = method_->training_batch(*dataset_, batch_size_, gen_);
  batch.x = batch.x.to(device_);
  if (batch.y.defined()) batch.y = batch.y.to(device_);
  LossOutput out = [&] {
    const compat::AutocastScope autocast(device_.type(), bf16_);
    return method_->loss({modules_, target_ema_ ? &target_ema_->modules() : nullptr, &frozen_, gen_}, batch);
  }();
  StepOutcome outcome;
  outcome.loss = out.loss.item<double>();
  outcome.grad_norm = NAN;
  if (std::isfinite(outcome.loss)) {
    optimizer_->zero_grad();
    out.loss.backward();
    outcome.grad_norm = clip_gradients(optimizer_->parameters(), grad_clip_);
  }
  outcome.finite = std::isfinite(outcome.loss) && std::isfinite(outcome.grad_norm);
  if (!outcome.finite) return outcome;
  optimizer_->step(schedule_.at(step));
  ema_->update(modules_, optimizer_->parameters());
  if (target_ema_) target_ema_->update(modules_, optimizer_->parameters());
  outcome.parts = std::move(out.parts);
  return outcome;
}

}  // namespace onestep
