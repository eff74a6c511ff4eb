// Conditioning embeddings shared by the networks (spec §0): sinusoidal features of a time
// (t or h) fed raw in [0, 1] and followed by a two-layer MLP, a class embedding with one
// extra row for the null label, and a two-layer MLP embedding of a vector of features (extra
// scalar conditions such as a guidance scale, or a context vector); and ConditionEmbeddings,
// the sum of those a network's inputs have, as the U-Net and the transformers use it.
//
// Frequencies: angle_k = time_scale * t * max_period^(-k/half), k = 0..half-1 (the diffusion
// form). time_scale = 1 embeds raw t; diffusion code often uses 1000, which multiplies
// d(embedding)/dt, and so the du/dt that MeanFlow and TVM train through, by 1000.
#pragma once

#include <torch/torch.h>

#include "onestep/core/options.h"
#include "onestep/nets/network.h"

namespace onestep {

// The time embedding's keys, shared by every network (model.time_max_period, model.time_scale).
struct TimeEmbeddingOptions {
  double max_period = 10000;
  double scale = 1;
  static const OptionSchema<TimeEmbeddingOptions>& schema();
};

class TimeEmbeddingImpl : public torch::nn::Module {
 public:
  TimeEmbeddingImpl(int64_t dim, const TimeEmbeddingOptions& options);
  torch::Tensor forward(const torch::Tensor& t);  // B -> B x dim

 private:
  int64_t dim_;
  double time_scale_;
  torch::Tensor frequencies_;  // buffer, half = dim / 2 entries
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(TimeEmbedding);

// Raw sinusoidal features [cos(angle), sin(angle)] (B x 2*frequencies.size(0)).
torch::Tensor sinusoidal_features(const torch::Tensor& t, const torch::Tensor& frequencies, double time_scale);

class ClassEmbeddingImpl : public torch::nn::Module {
 public:
  ClassEmbeddingImpl(int64_t num_classes, int64_t dim);
  // c: B int64 in 0..num_classes (num_classes = null); undefined c -> null label for all.
  torch::Tensor forward(const torch::Tensor& c, int64_t batch, const torch::Device& device);

 private:
  int64_t num_classes_;
  torch::nn::Embedding table_{nullptr};
};
TORCH_MODULE(ClassEmbedding);

// Linear -> SiLU -> Linear of a B x in vector into B x dim.
class VectorEmbeddingImpl : public torch::nn::Module {
 public:
  VectorEmbeddingImpl(int64_t in, int64_t dim);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(VectorEmbedding);

// The t and h embeddings, and the class, extra-condition and context embeddings where `spec`
// has them, all `width` wide, registered on `owner` as t_embedding, h_embedding,
// class_embedding, extra_embedding and context_embedding (the checkpoint names), in that order.
struct ConditionEmbeddings {
  ConditionEmbeddings() = default;
  ConditionEmbeddings(torch::nn::Module& owner, const NetSpec& spec, int64_t width, const TimeEmbeddingOptions& time);
  // The sum of the embeddings of the input's t, h, class, extra conditions and context: B x width.
  torch::Tensor sum(const NetInput& input);

  TimeEmbedding t{nullptr}, h{nullptr};
  ClassEmbedding label{nullptr};
  VectorEmbedding extra{nullptr}, context{nullptr};
};

}  // namespace onestep
