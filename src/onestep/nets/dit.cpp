// Diffusion Transformer (see dit.h) and its registration.
#include "onestep/nets/dit.h"

#include "onestep/core/error.h"
#include "onestep/nets/layers.h"

#include <cmath>

namespace onestep {
namespace {

// Token normalisation without learnable parameters (LayerNorm or RMSNorm, eps 1e-6).
torch::Tensor normalize(const torch::Tensor& x, bool rms) {
  return rms ? rms_norm(x) : layer_norm(x);
}

// x * (1 + scale) + shift, with per-sample scale and shift (B x width) broadcast over tokens.
torch::Tensor modulate(const torch::Tensor& x, const torch::Tensor& shift, const torch::Tensor& scale) {
  return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1);
}

void xavier_init(torch::nn::Linear& linear) {
  torch::NoGradGuard no_grad;
  torch::nn::init::xavier_uniform_(linear->weight);
  linear->bias.zero_();
}

void zero_init(torch::nn::Linear& linear) {
  torch::NoGradGuard no_grad;
  linear->weight.zero_();
  linear->bias.zero_();
}

// Splits the modulation Linear's output into `parts` vectors, RMS-normalised with mod_norm.
std::vector<torch::Tensor> modulation(torch::nn::Linear& linear, const torch::Tensor& cond, int64_t parts,
                                      bool mod_norm) {
  auto chunks = linear->forward(torch::silu(cond)).chunk(parts, 1);
  if (mod_norm)
    for (auto& chunk : chunks) chunk = rms_norm(chunk);
  return chunks;
}

// 1-D sin-cos embedding of positions (N) into `dim` features: [sin(pos w_k), cos(pos w_k)].
torch::Tensor sincos_1d(const torch::Tensor& positions, int64_t dim) {
  const auto omega = torch::pow(10000.0, -torch::arange(dim / 2, torch::kDouble) / static_cast<double>(dim / 2));
  const auto angles = positions.unsqueeze(1) * omega.unsqueeze(0);
  return torch::cat({torch::sin(angles), torch::cos(angles)}, 1);
}

// 2-D sin-cos position embedding of a rows x cols grid (row-major): half the features encode
// the row, half the column. Returns 1 x rows*cols x dim.
torch::Tensor sincos_2d(int64_t rows, int64_t cols, int64_t dim) {
  const auto row = torch::arange(rows, torch::kDouble).repeat_interleave(cols);
  const auto col = torch::arange(cols, torch::kDouble).repeat({rows});
  return torch::cat({sincos_1d(row, dim / 2), sincos_1d(col, dim / 2)}, 1).unsqueeze(0).to(torch::kFloat);
}

class DitBlockImpl : public torch::nn::Module {
 public:
  explicit DitBlockImpl(const DitOptions& options) : options_(options) {
    const int64_t width = options.width;
    const auto hidden = static_cast<int64_t>(std::lround(width * options.mlp_ratio));
    qkv_ = register_module("qkv", torch::nn::Linear(width, 3 * width));
    proj_ = register_module("proj", torch::nn::Linear(width, width));
    fc1_ = register_module("fc1", torch::nn::Linear(width, hidden));
    fc2_ = register_module("fc2", torch::nn::Linear(hidden, width));
    for (auto* linear : {&qkv_, &proj_, &fc1_, &fc2_}) xavier_init(*linear);
    modulation_ = register_module("modulation", torch::nn::Linear(width, 6 * width));
    zero_init(modulation_);
  }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cond) {
    const bool rms = options_.norm == "rmsnorm";
    const auto m = modulation(modulation_, cond, 6, options_.mod_norm);
    const auto out = x + m[2].unsqueeze(1) * self_attention(modulate(normalize(x, rms), m[0], m[1]));
    const auto mlp = fc2_(gelu_tanh(fc1_(modulate(normalize(out, rms), m[3], m[4]))));
    return out + m[5].unsqueeze(1) * mlp;
  }

 private:
  torch::Tensor self_attention(const torch::Tensor& x) {
    const int64_t b = x.size(0), n = x.size(1), width = x.size(2), heads = options_.heads;
    // B x N x 3 x heads x d -> three B x heads x N x d (unbind: its backward is one stack, where
    // three selects would each fill a zero tensor of the whole qkv and add them up).
    auto qkv = qkv_(x).reshape({b, n, 3, heads, width / heads}).permute({2, 0, 3, 1, 4}).unbind(0);
    if (options_.qk_norm) {
      qkv[0] = rms_norm(qkv[0]);
      qkv[1] = rms_norm(qkv[1]);
    }
    return proj_(attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape({b, n, width}));
  }

  DitOptions options_;
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr}, fc1_{nullptr}, fc2_{nullptr}, modulation_{nullptr};
};
TORCH_MODULE(DitBlock);

[[maybe_unused]] const bool registered = NetworkRegistry::instance().add(
    {"model", "dit", "", "Diffusion Transformer for images (adaLN-zero, optional Lipschitz-minded norms)",
     DitOptions::schema().keys()},
    [](const Config& config, const NetSpec& spec) -> Network {
      require_image_shape(spec, "dit");
      const auto options = DitOptions::schema().read(config);
      if (options.width % options.heads != 0 || options.width % 4 != 0)
        throw UserError("config: model.width = " + std::to_string(options.width) +
                        " must be a multiple of 4 and of model.heads = " + std::to_string(options.heads));
      if (spec.in_shape[1] % options.patch_size != 0 || spec.in_shape[2] % options.patch_size != 0)
        throw UserError("config: model.patch_size = " + std::to_string(options.patch_size) +
                        " must divide the image size " + std::to_string(spec.in_shape[1]) + "x" +
                        std::to_string(spec.in_shape[2]));
      return std::make_shared<DitImpl>(spec, options);
    });

}  // namespace

const OptionSchema<DitOptions>& DitOptions::schema() {
  static const auto schema =
      OptionSchema<DitOptions>("model")
          .add("patch_size", &DitOptions::patch_size, 1, 64, "dit: patch size")
          .add("width", &DitOptions::width, 1, 1 << 16, "dit: token width")
          .add("depth", &DitOptions::depth, 1, 64, "dit: transformer blocks")
          .add("heads", &DitOptions::heads, 1, 256, "dit: attention heads")
          .add("mlp_ratio", &DitOptions::mlp_ratio, 0.25, 64, "dit: MLP width over token width")
          .add("norm", &DitOptions::norm, {"layernorm", "rmsnorm"}, "dit: token normalisation (rmsnorm: affine-free)")
          .add("qk_norm", &DitOptions::qk_norm, "dit: RMS-normalise queries and keys per head")
          .add("mod_norm", &DitOptions::mod_norm, "dit: RMS-normalise the adaLN modulation (TVM's Lipschitz-minded DiT)")
          .include(&DitOptions::time, TimeEmbeddingOptions::schema());
  return schema;
}

DitImpl::DitImpl(const NetSpec& spec, const DitOptions& options) : NetworkImpl(spec), options_(options) {
  TORCH_CHECK(spec.in_shape.size() == 3 && spec.out_shape.size() == 3, "dit: needs C x H x W input and output");
  TORCH_CHECK(spec.in_shape[1] == spec.out_shape[1] && spec.in_shape[2] == spec.out_shape[2],
              "dit: output must have the input's height and width");
  const int64_t p = options.patch_size, width = options.width;
  TORCH_CHECK(spec.in_shape[1] % p == 0 && spec.in_shape[2] % p == 0, "dit: image size ", spec.in_shape[1], "x",
              spec.in_shape[2], " is not divisible by patch size ", p);
  TORCH_CHECK(width % 4 == 0, "dit: width must be a multiple of 4 (2-D sin-cos position embedding)");
  TORCH_CHECK(width % options.heads == 0, "dit: width ", width, " is not divisible into ", options.heads, " heads");
  TORCH_CHECK(options.norm == "layernorm" || options.norm == "rmsnorm", "dit: unknown norm '", options.norm,
              "' (layernorm | rmsnorm)");
  conditions_ = ConditionEmbeddings(*this, spec, width, options.time);
  patchify_ = register_module(
      "patchify", torch::nn::Conv2d(torch::nn::Conv2dOptions(spec.in_shape[0], width, p).stride(p)));
  {
    torch::NoGradGuard no_grad;
    torch::nn::init::xavier_uniform_(patchify_->weight.view({width, -1}));
    patchify_->bias.zero_();
  }
  position_ = register_buffer("position", sincos_2d(spec.in_shape[1] / p, spec.in_shape[2] / p, width));
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.depth; ++i) blocks_->push_back(DitBlock(options));
  final_modulation_ = register_module("final_modulation", torch::nn::Linear(width, 2 * width));
  final_linear_ = register_module("final_linear", torch::nn::Linear(width, p * p * spec.out_shape[0]));
  zero_init(final_modulation_);
  zero_init(final_linear_);
}

torch::Tensor DitImpl::forward(const NetInput& input) {
  const auto& z = input.z;
  const int64_t b = z.size(0), p = options_.patch_size;
  const int64_t rows = z.size(2) / p, cols = z.size(3) / p, out_channels = spec().out_shape[0];
  const auto cond = conditions_.sum(input);
  auto x = patchify_(z).flatten(2).transpose(1, 2) + position_;  // B x N x width
  for (const auto& block : *blocks_) {
    x = block->as<DitBlockImpl>()->forward(x, cond);
    note_activation(x);
  }
  const auto m = modulation(final_modulation_, cond, 2, options_.mod_norm);
  x = final_linear_(modulate(normalize(x, options_.norm == "rmsnorm"), m[0], m[1]));  // B x N x p*p*C
  // Unpatchify: B x rows x cols x p x p x C -> B x C x rows*p x cols*p.
  return x.reshape({b, rows, cols, p, p, out_channels})
      .permute({0, 5, 1, 3, 2, 4})
      .reshape({b, out_channels, rows * p, cols * p});
}

}  // namespace onestep
