// Diffusion Transformer for images (spec §0: net(z, t, h, c) -> B x out_shape), after DiT
// (Peebles & Xie): a stride-`patch_size` conv patchifies z into tokens, fixed 2-D sin-cos
// position embeddings are added, and `depth` adaLN-zero blocks follow, conditioned on the sum
// of the t, h (and class, with the null label) embeddings; a final adaLN layer and a linear map
// give patch_size^2 * C_out values per token, which are unpatchified.
//
// Options: `norm` = "layernorm" (affine-free LayerNorm) or "rmsnorm" (affine-free RMSNorm)
// for the token norms; `qk_norm` applies affine-free RMSNorm to queries and keys per head;
// `mod_norm` RMS-normalises each shift/scale/gate modulation vector over the feature
// dimension (after TVM's Lipschitz-minded DiT), so the modulation is bounded whatever the
// conditioning. The modulation layers start at zero (adaLN-zero: every block is the identity
// and the output is zero at initialisation; RMSNorm keeps a zero modulation at zero).
// Attention is matmul + softmax, so forward-mode AD works through the whole network. Extra
// scalar conditions and a context vector are embedded and added to the conditioning.
#pragma once

#include "onestep/nets/embeddings.h"
#include "onestep/nets/network.h"

#include <string>

namespace onestep {

struct DitOptions {
  int64_t patch_size = 2;
  int64_t width = 256;
  int64_t depth = 4;
  int64_t heads = 4;
  double mlp_ratio = 4;
  std::string norm = "layernorm";
  bool qk_norm = false;
  bool mod_norm = false;
  TimeEmbeddingOptions time;
  static const OptionSchema<DitOptions>& schema();
};

class DitImpl : public NetworkImpl {
 public:
  DitImpl(const NetSpec& spec, const DitOptions& options);
  torch::Tensor forward(const NetInput& input) override;
  std::vector<torch::Tensor> output_parameters() override { return {final_linear_->weight, final_linear_->bias}; }

 private:
  DitOptions options_;
  ConditionEmbeddings conditions_;
  torch::nn::Conv2d patchify_{nullptr};
  torch::Tensor position_;  // buffer, 1 x tokens x width
  torch::nn::ModuleList blocks_;
  torch::nn::Linear final_modulation_{nullptr}, final_linear_{nullptr};
};

}  // namespace onestep
