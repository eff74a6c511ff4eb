// U-Net for images (spec §0: net(z, t, h, c) -> B x out_shape), in the style of DDPM/ADM:
// an input conv, then per level `num_res_blocks` residual blocks (GroupNorm, SiLU, conv; the
// conditioning t_emb + h_emb (+ class_emb) goes through SiLU + Linear and scales and shifts
// the normalised feature maps, ADM's use_scale_shift_norm) with self-attention at the levels listed in `attention_levels` (level 0 has
// the input's size, each further level half of it; "lowest" names the last), and a stride-2
// conv between levels; a middle block (res, attention,
// res); a mirrored decoder with skip connections and nearest upsampling + conv; GroupNorm,
// SiLU and an output conv. The last conv of each residual branch, of each attention block and
// the output conv start at zero. Extra scalar conditions and a context vector are embedded
// and added to the conditioning. Odd sizes (28 -> 14 -> 7 -> 4) are handled by upsampling to
// the size of the matching skip connection.
#pragma once

#include "onestep/nets/embeddings.h"
#include "onestep/nets/network.h"

#include <string>
#include <vector>

namespace onestep {

struct UnetOptions {
  int64_t channels = 64;
  std::vector<int64_t> channel_mult = {1, 2, 2};
  int64_t num_res_blocks = 2;
  std::string attention_levels;  // comma-separated level indices and/or "lowest"
  int64_t emb_dim = 64;
  int64_t heads = 4;
  bool scale_shift = true;
  TimeEmbeddingOptions time;
  static const OptionSchema<UnetOptions>& schema();
};

// The level indices that `attention_levels` names for a U-Net of `levels` levels; throws
// UserError for an item that is neither an index below `levels` nor "lowest".
std::vector<int64_t> parse_attention_levels(const std::string& text, int64_t levels);

class UnetImpl : public NetworkImpl {
 public:
  UnetImpl(const NetSpec& spec, const UnetOptions& options);
  torch::Tensor forward(const NetInput& input) override;
  std::vector<torch::Tensor> output_parameters() override { return {output_->weight, output_->bias}; }

 private:
  ConditionEmbeddings conditions_;
  torch::nn::Conv2d input_{nullptr};
  // Encoder: residual stages and downsampling convs; each output is kept as a skip connection.
  torch::nn::ModuleList down_;
  torch::nn::ModuleList middle_;
  // Decoder: residual stages (fed the concatenated skip) and upsamplers.
  torch::nn::ModuleList up_;
  torch::nn::GroupNorm output_norm_{nullptr};
  torch::nn::Conv2d output_{nullptr};
};

}  // namespace onestep
