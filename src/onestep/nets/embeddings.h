// Conditioning embeddings shared by the networks (spec §0): sinusoidal features of a time
// (t or h) fed raw in [0, 1] and followed by a two-layer MLP, and a class embedding with one
// extra row for the null label.
//
// Frequencies: angle_k = time_scale * t * max_period^(-k/half), k = 0..half-1 (the diffusion
// form). time_scale = 1 embeds raw t; diffusion code often uses 1000, which multiplies
// d(embedding)/dt, and so the du/dt that MeanFlow and TVM train through, by 1000.
#pragma once

#include <torch/torch.h>

namespace onestep {

class TimeEmbeddingImpl : public torch::nn::Module {
 public:
  TimeEmbeddingImpl(int64_t dim, double max_period, double time_scale);
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

}  // namespace onestep
