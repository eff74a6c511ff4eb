// MLP network for low-dimensional data (spec §0): the flattened input z concatenated with the
// t, h (and, for conditional data, class) embeddings, then `depth` hidden SiLU layers of
// `width` units and a linear output layer.
//
// Options (all off by default, which gives the plain MLP above):
//  - fourier_features = F > 0: z is followed by [cos(2 pi z B), sin(2 pi z B)] with a fixed
//    D x F matrix B of N(0, fourier_scale^2) frequencies (drawn from a private generator with a
//    fixed seed, so it does not depend on the training seed; also stored in the checkpoint);
//  - residual: a linear layer to `width`, then `depth` pre-LayerNorm residual blocks
//    a + W2 silu(W1 LN(a)), a final LayerNorm and the linear output layer.
#pragma once

#include "onestep/nets/embeddings.h"
#include "onestep/nets/network.h"

namespace onestep {

struct MlpOptions {
  int64_t width = 256;
  int64_t depth = 4;
  int64_t emb_dim = 64;
  double time_max_period = 10000;
  double time_scale = 1;
  int64_t fourier_features = 0;
  double fourier_scale = 1;
  bool residual = false;
};

class MlpImpl : public NetworkImpl {
 public:
  MlpImpl(const NetSpec& spec, const MlpOptions& options);
  torch::Tensor forward(const torch::Tensor& z, const torch::Tensor& t, const torch::Tensor& h,
                        const torch::Tensor& c) override;

 private:
  TimeEmbedding t_embedding_{nullptr}, h_embedding_{nullptr};
  ClassEmbedding class_embedding_{nullptr};
  torch::Tensor fourier_frequencies_;  // D x F buffer; undefined when fourier_features = 0
  torch::nn::Linear input_{nullptr};   // residual only
  torch::nn::ModuleList hidden_;       // plain: Linear layers; residual: blocks
  torch::nn::LayerNorm final_norm_{nullptr};  // residual only
  torch::nn::Linear output_{nullptr};
};

}  // namespace onestep
