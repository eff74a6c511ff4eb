// The training state and its step (see training_state.h).
#include "onestep/train/training_state.h"

#include <cmath>
#include <cstdio>

#include "onestep/core/compat.h"
#include "onestep/core/error.h"
#include "onestep/core/runtime.h"
#include "onestep/train/checkpoint.h"

namespace onestep {
namespace {

// The standard deviation of 1024 training samples drawn with a generator of their own (the
// training streams stay untouched), for methods that scale their output layer to the data.
double data_std(Dataset& dataset, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed + 1);
  return dataset.train_batch(1024, gen).x.std().item<double>();
}

// The seed of data stream `share`: stream 0 uses train.seed itself, so that a run in one process
// draws exactly what it drew before runs could be split.
uint64_t stream_seed(uint64_t seed, int64_t share) { return seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(share); }

// Every parameter and buffer of `modules`, in a fixed order.
std::vector<torch::Tensor> module_tensors(const ModuleSet& modules) {
  std::vector<torch::Tensor> out;
  for (const auto& [name, module] : modules.items()) {
    for (const auto& p : module->parameters()) out.push_back(p);
    for (const auto& b : module->buffers()) out.push_back(b);
  }
  return out;
}

}  // namespace

TrainingState::TrainingState(const Config& config, ProcessGroup* group, int local_rank)
    : config_(config),
      device_(resolve_device(config_.get_string("train.device"))),
      group_(group),
      rank_(group ? group->rank() : 0),
      world_size_(group ? group->size() : 1),
      accumulate_(config_.get_int("train.accumulate")),
      grad_clip_(config_.get_float("train.grad_clip")) {
  config_.validate();
  bf16_ = config_.get_string("train.precision") == "bf16";
  compat::allow_tf32(config_.get_bool("train.tf32"));
  if (device_.is_cuda() && group_) device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank));
  const int64_t batch_size = config_.get_int("train.batch_size");
  const int64_t shares = world_size_ * accumulate_;
  if (batch_size % shares != 0)
    throw UserError("train.batch_size = " + std::to_string(batch_size) + ": must be a multiple of the " +
                    std::to_string(shares) + " shares of a step (" + std::to_string(world_size_) +
                    " processes x train.accumulate = " + std::to_string(accumulate_) + ")");
  share_size_ = batch_size / shares;
  const auto seed = static_cast<uint64_t>(config_.get_int("train.seed"));
  for (int64_t k = 0; k < accumulate_; ++k)
    streams_.push_back(at::detail::createCPUGenerator(stream_seed(seed, rank_ * accumulate_ + k)));
  torch::manual_seed(seed);  // module initialisation
  dataset_ = make_dataset(config_);
  method_ = make_method(config_);
  data_info_ = {dataset_->sample_shape(), dataset_->num_classes(), data_std(*dataset_, seed)};
  const StepSplit split = method_->step_split(data_info_);
  const bool refused = (split == StepSplit::Processes && accumulate_ > 1) || (split == StepSplit::Whole && shares > 1);
  if (refused)
    throw UserError("method.name = '" + method_->name() + "': on " + dataset_->describe() +
                    " its loss uses statistics of the whole batch, so a step cannot be split over " +
                    std::to_string(world_size_) + " processes x train.accumulate = " + std::to_string(accumulate_) +
                    (split == StepSplit::Processes ? "; it gathers them across processes: set train.accumulate = 1"
                                                   : "; train it in one process with train.accumulate = 1"));
  if (split == StepSplit::Processes && group_)
    method_->set_process_share({rank_, world_size_, [this](const torch::Tensor& tensor) {
                                  return torch::cat(group_->all_gather(tensor.detach()));
                                }});
  modules_ = method_->build_modules(config_, data_info_);
  modules_.to(device_);
  const auto shadow_modules = [&] {  // on the device before the EMA lays them out flat
    ModuleSet shadow = method_->build_modules(config_, data_info_);
    shadow.to(device_);
    return shadow;
  };
  ema_ = std::make_unique<Ema>(shadow_modules(), modules_, EmaSchedule::from_config(config_));
  if (method_->target_ema_decay() > 0)
    target_ema_ = std::make_unique<Ema>(shadow_modules(), modules_, EmaSchedule{method_->target_ema_decay()});
  for (const auto& spec : method_->frozen_modules(data_info_)) {
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

StepOutcome TrainingState::step(int64_t step, bool stop_requested) {
  optimizer_->zero_grad();
  // Each micro-batch adds its share of the gradient of the mean loss over the step's batch. The
  // step's numbers (loss, non-finite count, stop flag, logged parts, gradient norm) stay on the
  // device until one transfer at the end: on CUDA one process waits for the GPU once per step.
  // A non-finite micro-batch still runs backward; its step is skipped below.
  const auto scalar = [&](const torch::Tensor& value) { return value.detach().to(device_, torch::kDouble).reshape({1}); };
  std::vector<torch::Tensor> losses;
  std::map<std::string, std::vector<torch::Tensor>> parts;
  for (int64_t k = 0; k < accumulate_; ++k) {
    Batch batch = method_->training_batch(*dataset_, share_size_, streams_[k]);
    batch.x = batch.x.to(device_);
    if (batch.y.defined()) batch.y = batch.y.to(device_);
    const LossOutput out = [&] {
      const compat::AutocastScope autocast(device_.type(), bf16_);
      return method_->loss({modules_, target_ema_ ? &target_ema_->modules() : nullptr, &frozen_, streams_[k]}, batch);
    }();
    (out.loss / static_cast<double>(accumulate_)).backward();
    losses.push_back(scalar(out.loss));
    for (const auto& [name, value] : out.parts) parts[name].push_back(scalar(value));
  }
  const auto all_losses = torch::cat(losses);
  std::vector<torch::Tensor> totals = {all_losses.sum().reshape({1}),
                                       all_losses.isfinite().logical_not().sum().to(torch::kDouble).reshape({1}),
                                       torch::full({1}, stop_requested ? 1.0 : 0.0, all_losses.options())};
  for (const auto& [name, values] : parts) totals.push_back(torch::cat(values).sum().reshape({1}));
  auto summed = torch::cat(totals);
  if (group_) {
    // Every process learns the step's losses, whether any share was non-finite, and whether any
    // process was asked to stop.
    group_->all_reduce_sum({summed});
    average_gradients(*group_, modules_.parameters());
  }
  const auto host = torch::cat({summed, scalar(gradient_norm(optimizer_->parameters()))}).cpu();
  const auto* values = host.data_ptr<double>();
  StepOutcome outcome;
  const double shares = static_cast<double>(world_size_ * accumulate_);
  const bool nonfinite = values[1] > 0;
  outcome.stop = values[2] > 0;
  outcome.loss = nonfinite ? NAN : values[0] / shares;
  outcome.grad_norm = nonfinite ? NAN : values[host.size(0) - 1];
  outcome.finite = !nonfinite && std::isfinite(outcome.grad_norm);
  if (!outcome.finite) return outcome;
  clip_gradients(optimizer_->parameters(), outcome.grad_norm, grad_clip_);
  optimizer_->step(schedule_.at(step));
  ema_->update(modules_, optimizer_->parameters(), step);
  if (target_ema_) target_ema_->update(modules_, optimizer_->parameters(), step);
  int64_t i = 3;  // after the loss, the non-finite count and the stop flag, in `parts` order
  for (const auto& entry : parts) outcome.parts[entry.first] = values[i++] / shares;
  return outcome;
}

std::vector<torch::Tensor> TrainingState::stream_states() {
  std::vector<torch::Tensor> states;
  for (const auto& stream : streams_) states.push_back(stream.get_state());
  if (!group_) return states;
  const auto gathered = group_->all_gather(torch::stack(states).to(device_));
  states.clear();
  for (const auto& rank_states : gathered)
    for (const auto& state : rank_states.cpu().unbind(0)) states.push_back(state);
  return states;
}

bool TrainingState::restore_streams(const std::vector<torch::Tensor>& states, int64_t start_step) {
  if (static_cast<int64_t>(states.size()) == world_size_ * accumulate_) {
    for (int64_t k = 0; k < accumulate_; ++k) streams_[k].set_state(states[rank_ * accumulate_ + k]);
    return true;
  }
  const auto seed = static_cast<uint64_t>(config_.get_int("train.seed")) + static_cast<uint64_t>(start_step);
  for (int64_t k = 0; k < accumulate_; ++k)
    streams_[k] = at::detail::createCPUGenerator(stream_seed(seed, rank_ * accumulate_ + k));
  return false;
}

void TrainingState::broadcast_weights() {
  if (!group_) return;
  group_->broadcast(module_tensors(modules_));
  group_->broadcast(module_tensors(ema_->modules()));
  if (target_ema_) group_->broadcast(module_tensors(target_ema_->modules()));
}

}  // namespace onestep
