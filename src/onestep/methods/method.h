// Method interface and registry. A method owns the mathematics of spec/methods.md for one
// family: the trainable modules it needs (one network, or a backbone and a head, ...) and any
// frozen ones, the noise it samples from, what a training step draws from the dataset, its
// loss, and its sampler with a sampling plan. It knows nothing of optimizers, EMA,
// checkpoints or devices (the trainer's job). Each method registers itself with its keys.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "onestep/core/registry.h"
#include "onestep/data/dataset.h"
#include "onestep/nets/network.h"

namespace onestep {

class Config;

// What a method knows of its data.
struct DataInfo {
  std::vector<int64_t> sample_shape;
  int64_t num_classes = 0;
  double data_std = 1.0;  // standard deviation of the training data (for OutputInit::DataScale)
};

// A method's trainable modules by name, in the order the method declares them.
class ModuleSet {
 public:
  void add(const std::string& name, Network module);
  NetworkImpl& operator[](const std::string& name) const;  // std::out_of_range for an unknown name
  const std::vector<std::pair<std::string, Network>>& items() const { return modules_; }
  // Parameters named "<module>.<parameter>".
  std::vector<std::pair<std::string, torch::Tensor>> named_parameters() const;
  std::vector<torch::Tensor> parameters() const;
  void to(const torch::Device& device);
  void train(bool on);

 private:
  std::vector<std::pair<std::string, Network>> modules_;
};

// A frozen module (e.g. a feature encoder): built by `build`, its weights loaded from `path`
// after checking the file's SHA-256 against `sha256`; never trained or checkpointed.
struct FrozenModuleSpec {
  std::string name;
  std::string path;
  std::string sha256;
  std::function<std::shared_ptr<torch::nn::Module>()> build;
};
using FrozenModules = std::map<std::string, std::shared_ptr<torch::nn::Module>>;

// The scalar to minimise and named parts to log (detached scalars).
struct LossOutput {
  torch::Tensor loss;
  std::map<std::string, torch::Tensor> parts;
};

// The random draws of one share's loss (Method::draw), in the method's order.
using LossDraws = std::vector<torch::Tensor>;

// `draws` moved to `device` (undefined ones stay undefined).
LossDraws draws_on(const LossDraws& draws, const torch::Device& device);

// How a training step may be split into shares (processes, micro-batches) whose gradients are
// averaged, so that the split step trains as one step over all the shares' draws.
enum class StepSplit {
  // The loss is a mean of terms that each use one share only: any split.
  Shares,
  // The loss uses statistics of the whole step, which the method gathers across processes
  // (ProcessShare::gather): processes split the step, micro-batches cannot (a later micro-batch's
  // samples do not exist yet when an earlier one's loss is computed).
  Processes,
  // Statistics of the whole step that cannot be gathered (state kept per share): no split.
  Whole,
};

// This process's place in a step split over processes (StepSplit::Processes).
struct ProcessShare {
  int rank = 0;
  int size = 1;
  // Every process's `tensor` (the same shape on each, on the training device), concatenated
  // along dimension 0 in rank order; without gradient.
  std::function<torch::Tensor(const torch::Tensor&)> gather;
};

// What the loss may use besides the batch: the trained modules, their target EMA (methods that
// ask for one), the frozen modules and the run's generator, through which every random draw
// goes (CPU generator; tensors are moved to the batch's device).
struct LossContext {
  const ModuleSet& modules;
  const ModuleSet* target = nullptr;
  const FrozenModules* frozen = nullptr;
  torch::Generator& gen;
};

// How to sample: `steps` backbone steps (for methods whose NFE is the step count: the NFE) and,
// for methods with a head, `inner_steps` head steps per backbone step (0: the method's default).
struct SamplingPlan {
  int64_t steps = 1;
  int64_t inner_steps = 0;
};

// Network evaluations of one sample: the backbone's, and the head's (0 for one-network methods).
struct NfeCount {
  int64_t backbone = 0;
  int64_t head = 0;
};

class Method {
 public:
  virtual ~Method() = default;
  virtual std::string name() const = 0;

  // The trainable modules for this data, freshly initialised from the global torch seed. The
  // default: one network "net" of net_spec(data), built from the model.* keys.
  virtual ModuleSet build_modules(const Config& config, const DataInfo& data) const;
  // The network of one-network methods: z of the sample shape in and out, the data's classes.
  virtual NetSpec net_spec(const DataInfo& data) const;
  // The shape of one noise sample that sampling starts from.
  virtual std::vector<int64_t> noise_shape(const DataInfo& data) const { return data.sample_shape; }
  // What a training step draws from the dataset (default: batch_size samples).
  virtual Batch training_batch(Dataset& dataset, int64_t batch_size, torch::Generator& gen) const {
    return dataset.train_batch(batch_size, gen);
  }
  // Decay of the target EMA of every module; 0 = the method uses no target.
  virtual double target_ema_decay() const { return 0.0; }
  // The frozen modules (e.g. a feature encoder) the loss uses on this data, by name.
  virtual std::vector<FrozenModuleSpec> frozen_modules(const DataInfo& data) const {
    (void)data;
    return {};
  }
  // The network (model.name) the method needs, e.g. a causal backbone; empty: any network.
  virtual std::string required_network() const { return ""; }
  // How a step on this data may be split into shares (processes, micro-batches) whose gradients
  // are averaged; the trainer refuses the splits a method does not allow.
  virtual StepSplit step_split(const DataInfo& data) const {
    (void)data;
    return StepSplit::Shares;
  }
  // Called once before training when a StepSplit::Processes method's step is split over
  // processes: this process's rank, the process count and the gather the loss uses. Throws
  // UserError when the method's per-step sizes do not divide among the processes.
  virtual void set_process_share(ProcessShare share) { (void)share; }

  // The loss of one share of a step. Methods either override it, or split it in two halves,
  // which train.cuda_graph needs (it captures a step's device work once and replays it): draw()
  // makes every random draw of the loss on the host with `gen` (CPU tensors; undefined where
  // nothing is drawn), and loss_given() computes the loss from the batch and those draws moved
  // to the batch's device, with device work only (no host transfer, no shape that depends on
  // values); the default loss() is then loss_given(draw()). capture_refusal() says why this
  // method, with its options, cannot be captured ("" where it can).
  virtual LossOutput loss(const LossContext& context, const Batch& batch);
  virtual std::string capture_refusal() const { return "its loss does not split into host draws and device work"; }
  virtual LossDraws draw(const Batch& batch, torch::Generator& gen) const;
  virtual LossOutput loss_given(const LossContext& context, const Batch& batch, const LossDraws& draws);
  // Maps noise (B x noise_shape) to samples following `plan`; labels: B int64 classes, or
  // undefined for unconditional sampling. Throws UserError for a plan the method cannot run.
  virtual torch::Tensor sample(const ModuleSet& modules, const torch::Tensor& noise, const torch::Tensor& labels,
                               const SamplingPlan& plan) = 0;
  // The network evaluations per sample of `plan`.
  virtual NfeCount count_nfe(const SamplingPlan& plan) const { return {plan.steps, 0}; }
};

using MethodFactory = std::function<std::unique_ptr<Method>(const Config&)>;
using MethodRegistry = Registry<MethodFactory>;

// Builds the method named by `method.name`. Throws UserError for an unknown name.
std::unique_ptr<Method> make_method(const Config& config);

}  // namespace onestep
