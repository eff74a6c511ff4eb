// The training state and its step (see training_state.h).
#include "onestep/train/training_state.h"

#include <cmath>
#include <cstdio>
#include <functional>

#include "onestep/core/compat.h"
#include "onestep/core/error.h"
#include "onestep/core/runtime.h"
#include "onestep/train/checkpoint.h"
#include "onestep/train/cuda_graph.h"

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

// One share's loss as a double on the device, and the step's numbers from the shares': [sum of
// the losses, count of the non-finite ones, each part's sum in name order].
class ShareNumbers {
 public:
  void add(const LossOutput& out, const torch::Device& device) {
    losses_.push_back(scalar(out.loss, device));
    for (const auto& [name, value] : out.parts) parts_[name].push_back(scalar(value, device));
  }
  torch::Tensor numbers() const {
    const auto all = torch::cat(losses_);
    std::vector<torch::Tensor> totals = {all.sum().reshape({1}),
                                         all.isfinite().logical_not().sum().to(torch::kDouble).reshape({1})};
    for (const auto& [name, values] : parts_) totals.push_back(torch::cat(values).sum().reshape({1}));
    return torch::cat(totals);
  }
  std::vector<std::string> part_names() const {
    std::vector<std::string> names;
    for (const auto& entry : parts_) names.push_back(entry.first);
    return names;
  }

 private:
  static torch::Tensor scalar(const torch::Tensor& value, const torch::Device& device) {
    return value.detach().to(device, torch::kDouble).reshape({1});
  }
  std::vector<torch::Tensor> losses_;
  std::map<std::string, std::vector<torch::Tensor>> parts_;
};

// A copy of `tensor` on `device` that later steps' inputs are copied into (undefined stays so).
torch::Tensor static_copy(const torch::Tensor& tensor, const torch::Device& device) {
  if (!tensor.defined()) return tensor;
  return torch::empty(tensor.sizes(), tensor.options().device(device)).copy_(tensor);
}

void copy_into(const torch::Tensor& target, const torch::Tensor& source) {
  if (!target.defined()) return;
  if (target.sizes() != source.sizes())
    throw std::logic_error("train.cuda_graph: a step input changed its shape from " + c10::str(target.sizes()) +
                           " to " + c10::str(source.sizes()));
  target.copy_(source);
}

}  // namespace

// The captured work of train.cuda_graph: its inputs (each share's batch and loss draws on the
// device, made at the first step and copied into at each later one; the gradient norm the update
// clips by), the gradient's output (the shares' numbers) and the two graphs (captured at the
// second step).
struct TrainingState::Graphs {
  std::vector<Batch> batches;
  std::vector<LossDraws> draws;
  torch::Tensor grad_norm, numbers;
  CapturedWork gradient, update;
  bool captured = false;
};

TrainingState::~TrainingState() = default;

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
  cuda_graph_ = config_.get_bool("train.cuda_graph");
  if (cuda_graph_) {
    const std::string refusal = method_->capture_refusal();
    if (!refusal.empty())
      throw UserError("train.cuda_graph = true: method.name = '" + method_->name() +
                      "' cannot be captured as a CUDA graph (" + refusal + "); set train.cuda_graph = false");
    if (!device_.is_cuda() && !cuda_graphs_emulated())
      throw UserError("train.cuda_graph = true needs train.device = cuda, found '" + device_.str() + "'");
  }
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
  if (cuda_graph_) return graph_step(step, stop_requested);
  optimizer_->zero_grad();
  // Each micro-batch adds its share of the gradient of the mean loss over the step's batch. The
  // step's numbers (loss, non-finite count, logged parts, stop flag, gradient norm) stay on the
  // device until one transfer at the end: on CUDA one process waits for the GPU once per step.
  // A non-finite micro-batch still runs backward; its step is skipped below.
  ShareNumbers shares;
  for (int64_t k = 0; k < accumulate_; ++k) {
    Batch batch = method_->training_batch(*dataset_, share_size_, streams_[k]);
    batch.x = batch.x.to(device_);
    if (batch.y.defined()) batch.y = batch.y.to(device_);
    const LossOutput out = [&] {
      const compat::AutocastScope autocast(device_.type(), bf16_);
      return method_->loss({modules_, target_ema_ ? &target_ema_->modules() : nullptr, &frozen_, streams_[k]}, batch);
    }();
    (out.loss / static_cast<double>(accumulate_)).backward();
    shares.add(out, device_);
  }
  part_names_ = shares.part_names();
  return finish_step(step, shares.numbers(), stop_requested, [this](const torch::Tensor& norm) { apply_update(norm); });
}

StepOutcome TrainingState::finish_step(int64_t step, const torch::Tensor& share_numbers, bool stop_requested,
                                       const std::function<void(const torch::Tensor&)>& update) {
  auto numbers = torch::cat({share_numbers, torch::full({1}, stop_requested ? 1.0 : 0.0, share_numbers.options())});
  if (group_) {
    // Every process learns the step's losses, whether any share was non-finite, and whether any
    // process was asked to stop.
    group_->all_reduce_sum({numbers});
    average_gradients(*group_, modules_.parameters());
  }
  const auto grad_norm = gradient_norm(optimizer_->parameters()).to(device_, torch::kDouble).reshape({1});
  const auto host = torch::cat({numbers, grad_norm}).cpu();
  const StepOutcome outcome = outcome_of(host, host.data_ptr<double>()[host.size(0) - 2] > 0);
  if (!outcome.finite) return outcome;
  prepare_update(step);
  update(grad_norm);
  return outcome;
}

StepOutcome TrainingState::graph_step(int64_t step, bool stop_requested) {
  std::vector<Batch> batches;
  std::vector<LossDraws> draws;
  for (int64_t k = 0; k < accumulate_; ++k) {
    batches.push_back(method_->training_batch(*dataset_, share_size_, streams_[k]));
    draws.push_back(method_->draw(batches.back(), streams_[k]));
  }
  c10::OptionalDeviceGuard on_device;  // captures and replays on this process's GPU
  if (device_.is_cuda()) on_device.reset_device(device_);
  if (!graphs_) {
    auto graphs = std::make_unique<Graphs>();
    for (int64_t k = 0; k < accumulate_; ++k) {
      graphs->batches.push_back({static_copy(batches[k].x, device_), static_copy(batches[k].y, device_)});
      LossDraws inputs;
      for (const auto& draw : draws[k]) inputs.push_back(static_copy(draw, device_));
      graphs->draws.push_back(inputs);
    }
    graphs->grad_norm = torch::zeros({1}, torch::TensorOptions(device_).dtype(torch::kDouble));
    graphs_ = std::move(graphs);
    // The process's first step: the same work on the same inputs, the graphs' halves run on a
    // side stream before any capture (the warm-up); the next step captures them.
    torch::Tensor numbers;
    run_before_capture([&] { numbers = gradient_given(graphs_->batches, graphs_->draws); });
    return finish_step(step, numbers, stop_requested, [&](const torch::Tensor& norm) {
      graphs_->grad_norm.copy_(norm);
      run_before_capture([&] { apply_update(graphs_->grad_norm); });
    });
  }
  for (int64_t k = 0; k < accumulate_; ++k) {
    copy_into(graphs_->batches[k].x, batches[k].x);
    copy_into(graphs_->batches[k].y, batches[k].y);
    for (size_t i = 0; i < draws[k].size(); ++i) copy_into(graphs_->draws[k][i], draws[k][i]);
  }
  Graphs* g = graphs_.get();
  if (!g->captured) {  // the captured work outlives this call (emulated captures run it later)
    g->gradient.capture([this, g] { g->numbers = gradient_given(g->batches, g->draws); });
    g->update.capture([this, g] { apply_update(g->grad_norm); });
    g->captured = true;
  }
  g->gradient.replay();
  return finish_step(step, g->numbers, stop_requested, [g](const torch::Tensor& norm) {
    g->grad_norm.copy_(norm);
    g->update.replay();
  });
}

torch::Tensor TrainingState::gradient_given(const std::vector<Batch>& batches, const std::vector<LossDraws>& draws) {
  optimizer_->zero_grad();
  ShareNumbers shares;
  for (int64_t k = 0; k < accumulate_; ++k) {
    const LossOutput out = [&] {
      const compat::AutocastScope autocast(device_.type(), bf16_);
      return method_->loss_given({modules_, target_ema_ ? &target_ema_->modules() : nullptr, &frozen_, streams_[k]},
                                 batches[k], draws[k]);
    }();
    (out.loss / static_cast<double>(accumulate_)).backward();
    shares.add(out, device_);
  }
  part_names_ = shares.part_names();
  return shares.numbers();
}

void TrainingState::prepare_update(int64_t step) {
  optimizer_->prepare(schedule_.at(step));
  ema_->prepare(step);
  if (target_ema_) target_ema_->prepare(step);
}

void TrainingState::apply_update(const torch::Tensor& grad_norm) {
  clip_gradients(optimizer_->parameters(), grad_norm, grad_clip_);
  optimizer_->apply();
  ema_->apply(modules_, optimizer_->parameters());
  if (target_ema_) target_ema_->apply(modules_, optimizer_->parameters());
}

StepOutcome TrainingState::outcome_of(const torch::Tensor& numbers, bool stop) const {
  const auto* values = numbers.data_ptr<double>();
  const double grad_norm = values[numbers.size(0) - 1];
  StepOutcome outcome;
  const double shares = static_cast<double>(world_size_ * accumulate_);
  const bool nonfinite = values[1] > 0;
  outcome.stop = stop;
  outcome.loss = nonfinite ? NAN : values[0] / shares;
  outcome.grad_norm = nonfinite ? NAN : grad_norm;
  outcome.finite = !nonfinite && std::isfinite(outcome.grad_norm);
  if (!outcome.finite) return outcome;
  for (size_t i = 0; i < part_names_.size(); ++i) outcome.parts[part_names_[i]] = values[2 + i] / shares;
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
