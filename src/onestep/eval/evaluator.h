// The image evaluator: a small CNN classifier for 1 x 28 x 28 images in [-1, 1] (Fashion-
// MNIST), trained by `onestep evaluator train` (train/evaluator_training.h), stored as safetensors and identified by the
// SHA-256 of its file. Image metrics use its penultimate-layer features and its logits.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

namespace onestep {

// conv32-conv32-pool-conv64-conv64-pool (3x3 convolutions, BatchNorm, ReLU), a 256-d fully
// connected penultimate layer with ReLU, dropout, and 10 logits. About 0.87 M parameters.
class EvaluatorNetImpl : public torch::nn::Module {
 public:
  static constexpr int64_t kFeatureDim = 256;
  static constexpr int64_t kClasses = 10;

  EvaluatorNetImpl();
  // N x 1 x 28 x 28 -> N x kFeatureDim penultimate activations (after the ReLU).
  torch::Tensor features(const torch::Tensor& x);
  // N x 1 x 28 x 28 -> N x kClasses logits.
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::Sequential body_{nullptr};
  torch::nn::Linear penultimate_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
  torch::nn::Linear head_{nullptr};
};
TORCH_MODULE(EvaluatorNet);

// Writes all parameters and buffers of `net` atomically as safetensors, with metadata
// format_version "1", kind "onestep-evaluator", dataset "fashion-mnist", and the given test
// accuracy, reproducing command and seed.
void save_evaluator(EvaluatorNet& net, const std::string& path, double test_accuracy,
                    const std::string& command, uint64_t seed);

// A trained evaluator loaded from its safetensors file, always in eval mode.
class Evaluator {
 public:
  // Throws UserError naming `path` when the file is missing or corrupt, is not an
  // onestep-evaluator of format version 1, or its tensors do not match EvaluatorNet.
  static Evaluator load(const std::string& path);

  // Lower-case hex SHA-256 of the file's bytes.
  const std::string& sha256() const { return sha256_; }
  const std::string& path() const { return path_; }
  // The dataset the evaluator was trained on (metadata "dataset"), e.g. "fashion-mnist".
  const std::string& dataset() const { return dataset_; }

  // N x 1 x 28 x 28 images in [-1, 1] -> N x 256 float32 features / N x 10 logits, computed
  // in batches without gradients. Throws UserError for images of another shape.
  torch::Tensor features(const torch::Tensor& images);
  torch::Tensor logits(const torch::Tensor& images);

 private:
  Evaluator(EvaluatorNet net, std::string path, std::string sha256, std::string dataset);

  EvaluatorNet net_;
  std::string path_;
  std::string sha256_;
  std::string dataset_;
};

}  // namespace onestep
