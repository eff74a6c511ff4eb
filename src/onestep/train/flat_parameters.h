// Flat parameter storage: the trainable parameters of a model and their gradients live as views
// of one contiguous buffer each, so that the optimizer, gradient clipping, the EMA and a
// gradient all-reduce run as a few whole-buffer operations instead of one small kernel per
// tensor (issue 12: the per-step overhead).
#pragma once

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace onestep {

class FlatParameters {
 public:
  FlatParameters() = default;
  // Copies the parameters (all of one dtype and device) into one buffer and rebinds each
  // parameter's data to its slice; with `with_grads`, each gradient too (zero-filled).
  explicit FlatParameters(std::vector<std::pair<std::string, torch::Tensor>> named, bool with_grads = true);

  const torch::Tensor& data() const { return data_; }
  // The gradient buffer. Gradients that autograd replaced instead of accumulating in place (a
  // backward that builds a graph, or a gradient assigned by hand) are copied back into it first.
  const torch::Tensor& grad();
  const std::vector<std::pair<std::string, torch::Tensor>>& named() const { return named_; }
  int64_t numel() const { return data_.defined() ? data_.numel() : 0; }
  // The per-parameter slices of `buffer`, a tensor laid out like data().
  std::vector<torch::Tensor> slices(const torch::Tensor& buffer) const;

 private:
  std::vector<std::pair<std::string, torch::Tensor>> named_;
  std::vector<int64_t> offsets_;
  torch::Tensor data_, grad_;
  std::vector<torch::Tensor> grad_slices_;
};

}  // namespace onestep
