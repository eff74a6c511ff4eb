// A plain causal (decoder-only, GPT-style) transformer over tokens, the backbone of
// autoregressive and full-history Transition Matching (spec §4): points are cut into one
// token per coordinate, images into patch_size x patch_size patches (row-major; each token's
// values ordered (row in patch, column in patch, channel), as dit lays them out). Each token
// is embedded linearly, a fixed 1-D sin-cos position embedding and the conditioning vector
// (the sum of the t, h, class, extra-condition and context embeddings) are added, then `depth`
// pre-norm blocks x + attention(LN(x)) under a causal mask, x + MLP(LN(x)), a final LN and a
// linear map to each token's outputs: the output of token k depends on tokens 0..k only.
// Output: points B x (N * f) (token k's f values at k*f..), images B x C_out x H x W (as dit).
// Attention is matmul + softmax, so forward-mode AD works through the whole network.
#pragma once

#include "onestep/nets/embeddings.h"
#include "onestep/nets/network.h"

namespace onestep {

struct CausalTransformerOptions {
  int64_t patch_size = 2;
  int64_t width = 128;
  int64_t depth = 4;
  int64_t heads = 4;
  double mlp_ratio = 4;
  TimeEmbeddingOptions time;
  static const OptionSchema<CausalTransformerOptions>& schema();
};

class CausalTransformerImpl : public NetworkImpl {
 public:
  CausalTransformerImpl(const NetSpec& spec, const CausalTransformerOptions& options);
  torch::Tensor forward(const NetInput& input) override;
  std::vector<torch::Tensor> output_parameters() override { return {output_->weight, output_->bias}; }
  // Tokens of z (B x N x values per token), in the order the network reads them.
  torch::Tensor tokens(const torch::Tensor& z) const;

 private:
  CausalTransformerOptions options_;
  bool images_;
  ConditionEmbeddings conditions_;
  torch::nn::Linear input_{nullptr};
  torch::Tensor position_;  // buffer, 1 x tokens x width
  torch::nn::ModuleList blocks_;
  torch::nn::Linear output_{nullptr};
};

}  // namespace onestep
