// A plain causal (decoder-only, GPT-style) transformer over tokens, the backbone of
// autoregressive and full-history Transition Matching (spec §4): points are cut into one
// token per coordinate, images into patch_size x patch_size patches (row-major; each token's
// values ordered (row in patch, column in patch, channel), as dit lays them out). Each token
// is embedded linearly, a fixed 1-D sin-cos position embedding and the conditioning vector
// (the sum of the t, h, class, extra-condition and context embeddings) are added, then `depth`
// pre-norm blocks x + attention(LN(x)) under a causal mask, x + MLP(LN(x)), a final LN and a
// linear map to each token's outputs: the output of token k depends on tokens 0..k only.
// Output: points B x (N * f) (token k's f values at k*f..), images B x C_out x H x W (as dit).
// Attention is matmul + softmax, so forward-mode AD works through the whole network. Sampling
// decodes token by token with a key-value cache (decode).
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

// The keys and values of the tokens decoded so far, per block (B x heads x length x d).
struct KeyValueCache {
  std::vector<torch::Tensor> keys, values;
  int64_t length() const { return keys.empty() || !keys.front().defined() ? 0 : keys.front().size(2); }
};

class CausalTransformerImpl : public NetworkImpl {
 public:
  CausalTransformerImpl(const NetSpec& spec, const CausalTransformerOptions& options);
  torch::Tensor forward(const NetInput& input) override;
  std::vector<torch::Tensor> output_parameters() override { return {output_->weight, output_->bias}; }
  // Tokens of z (B x N x values per token), in the order the network reads them.
  torch::Tensor tokens(const torch::Tensor& z) const;
  // Decoding with a key-value cache: input.z holds the next tokens (B x M x values per token,
  // as tokens() lays them out) at positions cache.length() .. + M, which the call appends to
  // `cache`; t, h and the class are the conditions of the whole sequence. Returns their
  // outputs, B x M x outputs per token: what forward() gives at those positions, at the cost of
  // M tokens instead of the whole sequence.
  torch::Tensor decode(const NetInput& input, KeyValueCache& cache);

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
