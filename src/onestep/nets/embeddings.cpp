// Sinusoidal time embeddings and class embeddings with a null label (see embeddings.h).
#include "onestep/nets/embeddings.h"

#include <cmath>

namespace onestep {

torch::Tensor sinusoidal_features(const torch::Tensor& t, const torch::Tensor& frequencies, double time_scale) {
  const auto angles = (t * time_scale).unsqueeze(1) * frequencies.unsqueeze(0);
  return torch::cat({torch::cos(angles), torch::sin(angles)}, 1);
}

TimeEmbeddingImpl::TimeEmbeddingImpl(int64_t dim, double max_period, double time_scale)
    : dim_(dim), time_scale_(time_scale) {
  const int64_t half = dim / 2;
  frequencies_ = register_buffer(
      "frequencies", torch::exp(-std::log(max_period) * torch::arange(half, torch::kFloat) / static_cast<double>(half)));
  fc1_ = register_module("fc1", torch::nn::Linear(2 * half, dim));
  fc2_ = register_module("fc2", torch::nn::Linear(dim, dim));
}

torch::Tensor TimeEmbeddingImpl::forward(const torch::Tensor& t) {
  return fc2_(torch::silu(fc1_(sinusoidal_features(t, frequencies_, time_scale_))));
}

ClassEmbeddingImpl::ClassEmbeddingImpl(int64_t num_classes, int64_t dim) : num_classes_(num_classes) {
  table_ = register_module("table", torch::nn::Embedding(num_classes + 1, dim));
}

torch::Tensor ClassEmbeddingImpl::forward(const torch::Tensor& c, int64_t batch, const torch::Device& device) {
  if (!c.defined()) return table_(torch::full({batch}, num_classes_, torch::TensorOptions().dtype(torch::kLong).device(device)));
  return table_(c);
}

}  // namespace onestep
