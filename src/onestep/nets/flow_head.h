// The flow head of Transition Matching (spec §4): a small network g(Y_s, s, h) that turns a
// backbone's output h into a random sample of a latent Y by flow matching on an inner time
// s in [0, 1] (Y_s = (1 - s) Y_0 + s Y, Y_0 ~ N(0, I), velocity Y - Y_0). An MLP with
// adaLN-style injection: Y_s enters through a linear layer to `width`; the conditioning
// vector is the sum of a sinusoidal embedding of s and a two-layer embedding of h; each of
// `depth` blocks is x + gate * W2 silu(W1 (LN(x) (1 + scale) + shift)) with (shift, scale,
// gate) a linear map of silu(conditioning), started at zero (adaLN-zero, as in DiT); a final
// LN modulated the same way and a linear layer give the velocity. It works on rows: one point,
// or one patch token of an image with that token's backbone features.
//
// The head is a Network (input: z = Y_s, t = s, context = h; h and c unused) so that the
// trainer optimises, EMA-averages and checkpoints it like any module, but it is owned by the
// Transition Matching methods and not registered as a `model.name`; its keys are method.*.
#pragma once

#include "onestep/core/options.h"
#include "onestep/nets/embeddings.h"
#include "onestep/nets/network.h"

namespace onestep {

struct FlowHeadOptions {
  int64_t width = 64;
  int64_t depth = 2;
  // Keys method.head_width, method.head_depth.
  static const OptionSchema<FlowHeadOptions>& schema();
};

class FlowHeadImpl : public NetworkImpl {
 public:
  // spec: in_shape = out_shape = {token size}, context_dim = the backbone's features per token.
  FlowHeadImpl(const NetSpec& spec, const FlowHeadOptions& options);
  // input.z: R x token size (Y_s), input.t: R (s), input.context: R x context_dim.
  torch::Tensor forward(const NetInput& input) override;
  std::vector<torch::Tensor> output_parameters() override { return {output_->weight, output_->bias}; }

 private:
  TimeEmbedding s_embedding_{nullptr};
  VectorEmbedding context_embedding_{nullptr};
  torch::nn::Linear input_{nullptr};
  torch::nn::ModuleList blocks_;
  torch::nn::Linear final_modulation_{nullptr}, output_{nullptr};
};

}  // namespace onestep
