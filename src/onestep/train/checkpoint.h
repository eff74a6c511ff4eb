// Checkpoints (contract in README): one safetensors file with tensors under
// model.<module>.*, ema.<module>.*, target_ema.<module>.* (methods with a target network) and
// optimizer.*, and __metadata__ holding format_version, the resolved config as TOML, the step,
// the data's sample_shape and num_classes, and the states (hex) of the data/noise/time streams
// needed for an exact resume: `rng_state` for stream 0, `rng_state_<k>` for stream k > 0 (runs
// split over processes or micro-batches have one stream per share). Written atomically; every load checks the version, names and shapes. Version 1
// files (one network, tensors under model.*, U-Net attention named in pixels) are migrated
// on reading. Also the loading of frozen modules, checked by hash.
#pragma once

#include <torch/torch.h>

#include <string>

#include "onestep/core/config.h"
#include "onestep/core/safetensors.h"
#include "onestep/methods/method.h"

namespace onestep {

constexpr int kCheckpointFormatVersion = 2;
constexpr const char* kCheckpointFileName = "checkpoint.safetensors";

class Adam;

struct CheckpointContents {
  const Config& config;
  int64_t step;
  const std::vector<int64_t>& sample_shape;  // one data sample, so sampling needs no data files
  int64_t num_classes;
  const ModuleSet& model;
  const ModuleSet& ema;
  const ModuleSet* target_ema;  // may be null
  const Adam& optimizer;
  const std::vector<torch::Tensor>& rng_states;  // one generator state per data stream
};

void save_checkpoint(const std::string& path, const CheckpointContents& contents);

struct Checkpoint {
  std::string path;
  Config config;
  int64_t step = 0;
  std::vector<int64_t> sample_shape;
  int64_t num_classes = 0;
  SafetensorsFile file;
};

// `path` is a checkpoint file or a run folder holding checkpoint.safetensors.
Checkpoint read_checkpoint(const std::string& path);

// Loads tensors "<prefix>.<module>.<name>" into the modules' parameters and buffers; throws
// UserError for a missing tensor or a shape mismatch.
void load_modules(ModuleSet& modules, const Checkpoint& checkpoint, const std::string& prefix);
// Restores the optimizer; returns the generator states of the data streams, in stream order.
std::vector<torch::Tensor> load_training_state(Adam& optimizer, const Checkpoint& checkpoint);

// Builds a frozen module and loads its weights from spec.path (safetensors, tensor names as
// the module's parameters and buffers) after checking the file's SHA-256; its parameters do
// not require gradients. Throws UserError for a missing file, a hash mismatch or a missing or
// misshapen tensor.
std::shared_ptr<torch::nn::Module> load_frozen_module(const FrozenModuleSpec& spec);

}  // namespace onestep
