// MLP network for low-dimensional data (spec §0): the flattened input z concatenated with the
// t, h (and, for conditional data, class; with extra conditions, their) embeddings and the raw
// context vector, then `depth` hidden SiLU layers of `width` units and a linear output layer.
#pragma once

#include "onestep/nets/embeddings.h"
#include "onestep/nets/network.h"

namespace onestep {

struct MlpOptions {
  int64_t width = 256;
  int64_t depth = 4;
  int64_t emb_dim = 64;
  TimeEmbeddingOptions time;
  static const OptionSchema<MlpOptions>& schema();
};

class MlpImpl : public NetworkImpl {
 public:
  MlpImpl(const NetSpec& spec, const MlpOptions& options);
  torch::Tensor forward(const NetInput& input) override;
  std::vector<torch::Tensor> output_parameters() override { return {output_->weight, output_->bias}; }

 private:
  TimeEmbedding t_embedding_{nullptr}, h_embedding_{nullptr};
  ClassEmbedding class_embedding_{nullptr};
  VectorEmbedding extra_embedding_{nullptr};
  torch::nn::ModuleList hidden_;
  torch::nn::Linear output_{nullptr};
};

}  // namespace onestep
