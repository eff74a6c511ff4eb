// Dataset interface and registry: every data source (toy 2-D streams, point-cloud CSV files,
// images) yields seeded training batches (n samples, or n per class) and a fixed held-out set
// that training never sees. All randomness comes from the generator the caller passes, so a
// run is repeatable and resumable from the generator's state alone. Each data source registers
// itself with its keys (core/registry.h).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "onestep/core/options.h"
#include "onestep/core/registry.h"

namespace onestep {

class Config;

// One batch: data `x` (N x shape...) in float32 and, for class-conditional data, int64 labels
// `y` (N) in 0..num_classes-1; `y` is undefined for unconditional data.
struct Batch {
  torch::Tensor x;
  torch::Tensor y;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  // Shape of one sample, e.g. {2} for 2-D points, {1, 28, 28} for Fashion-MNIST.
  virtual std::vector<int64_t> sample_shape() const = 0;
  // Number of classes; 0 for unconditional data.
  virtual int64_t num_classes() const { return 0; }
  // `n` training samples drawn with `gen` (an endless stream).
  virtual Batch train_batch(int64_t n, torch::Generator& gen) = 0;
  // `per_class` training samples of each class of `classes`, grouped in that order (labels
  // set), drawn with `gen`. The default draws training batches and keeps what each class needs.
  virtual Batch class_batch(const std::vector<int64_t>& classes, int64_t per_class, torch::Generator& gen);
  // Up to `n` held-out samples, the same every call (independent of any training stream).
  virtual Batch heldout(int64_t n) = 0;
  // Human-readable description for logs and `onestep info`.
  virtual std::string describe() const = 0;
};

// The held-out split of file-backed data (points:, folder:): data.test_fraction, data.split_seed.
struct HeldOutSplitOptions {
  double test_fraction = 0.1;
  int64_t split_seed = 0;
  static const OptionSchema<HeldOutSplitOptions>& schema();
};

// Builds a dataset from the config; `name` is the value of data.name (prefixed names carry a
// path after the prefix).
using DatasetFactory = std::function<std::unique_ptr<Dataset>(const Config& config, const std::string& name)>;
using DatasetRegistry = Registry<DatasetFactory>;

// Builds the dataset named by `data.name`. Throws UserError for an unknown name or bad data
// file, naming the file and line.
std::unique_ptr<Dataset> make_dataset(const Config& config);

}  // namespace onestep
