// The Transition Matching flow head (see flow_head.h).
#include "onestep/nets/flow_head.h"

#include "onestep/nets/layers.h"

namespace onestep {
namespace {

void zero_init(torch::nn::Linear& linear) {
  torch::NoGradGuard no_grad;
  linear->weight.zero_();
  linear->bias.zero_();
}

// x * (1 + scale) + shift.
torch::Tensor modulate(const torch::Tensor& x, const torch::Tensor& shift, const torch::Tensor& scale) {
  return x * (1 + scale) + shift;
}

// x + gate * W2 silu(W1 modulate(LN(x))), with (shift, scale, gate) from the conditioning.
class HeadBlockImpl : public torch::nn::Module {
 public:
  explicit HeadBlockImpl(int64_t width) {
    fc1_ = register_module("fc1", torch::nn::Linear(width, width));
    fc2_ = register_module("fc2", torch::nn::Linear(width, width));
    modulation_ = register_module("modulation", torch::nn::Linear(width, 3 * width));
    zero_init(modulation_);
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cond) {
    const auto m = modulation_(cond).chunk(3, 1);
    return x + m[2] * fc2_(torch::silu(fc1_(modulate(layer_norm(x), m[0], m[1]))));
  }

 private:
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr}, modulation_{nullptr};
};
TORCH_MODULE(HeadBlock);

}  // namespace

const OptionSchema<FlowHeadOptions>& FlowHeadOptions::schema() {
  static const auto schema =
      OptionSchema<FlowHeadOptions>("method")
          .add("head_width", &FlowHeadOptions::width, 2, 1 << 14, "dtm, artm, fhtm: width of the flow head")
          .add("head_depth", &FlowHeadOptions::depth, 1, 64, "dtm, artm, fhtm: adaLN blocks of the flow head");
  return schema;
}

FlowHeadImpl::FlowHeadImpl(const NetSpec& spec, const FlowHeadOptions& options) : NetworkImpl(spec) {
  TORCH_CHECK(spec.in_shape.size() == 1 && spec.in_shape == spec.out_shape && spec.context_dim > 0,
              "flow head: needs one token size in and out and a context");
  const int64_t width = options.width;
  s_embedding_ = register_module("s_embedding", TimeEmbedding(width, TimeEmbeddingOptions{}));
  context_embedding_ = register_module("context_embedding", VectorEmbedding(spec.context_dim, width));
  input_ = register_module("input", torch::nn::Linear(spec.in_shape[0], width));
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.depth; ++i) blocks_->push_back(HeadBlock(width));
  final_modulation_ = register_module("final_modulation", torch::nn::Linear(width, 2 * width));
  zero_init(final_modulation_);
  output_ = register_module("output", torch::nn::Linear(width, spec.out_shape[0]));
}

torch::Tensor FlowHeadImpl::forward(const NetInput& input) {
  const auto cond = torch::silu(s_embedding_(input.t) + context_embedding_(input.context));
  auto x = input_(input.z);
  for (const auto& block : *blocks_) {
    x = block->as<HeadBlockImpl>()->forward(x, cond);
    note_activation(x);
  }
  const auto m = final_modulation_(cond).chunk(2, 1);
  return output_(modulate(layer_norm(x), m[0], m[1]));
}

}  // namespace onestep
