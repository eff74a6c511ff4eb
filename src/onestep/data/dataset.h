// Dataset interface and registry: every data source (toy 2-D streams, point-cloud CSV files,
// images) yields seeded training batches and a fixed held-out set that training never sees.
// All randomness comes from the generator the caller passes, so a run is repeatable and
// resumable from the generator's state alone.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

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
  // Up to `n` held-out samples, the same every call (independent of any training stream).
  virtual Batch heldout(int64_t n) = 0;
  // Human-readable description for logs and `onestep info`.
  virtual std::string describe() const = 0;
};

// Builds the dataset named by `data.name` (see README for the list). Throws UserError for an
// unknown name or bad data file, naming the file and line.
std::unique_ptr<Dataset> make_dataset(const Config& config);

// The registered names, for help texts and error messages.
std::vector<std::string> dataset_names();

}  // namespace onestep
