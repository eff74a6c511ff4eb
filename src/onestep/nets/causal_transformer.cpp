// Causal transformer over tokens (see causal_transformer.h) and its registration.
#include "onestep/nets/causal_transformer.h"

#include <cmath>
#include <stdexcept>

#include "onestep/core/error.h"
#include "onestep/nets/layers.h"

namespace onestep {
namespace {

// Pre-norm block: x + attention(LN(x)) under the causal mask, then x + MLP(LN(x)).
class CausalBlockImpl : public torch::nn::Module {
 public:
  explicit CausalBlockImpl(const CausalTransformerOptions& options) : heads_(options.heads) {
    const int64_t width = options.width;
    const auto hidden = static_cast<int64_t>(std::lround(width * options.mlp_ratio));
    qkv_ = register_module("qkv", torch::nn::Linear(width, 3 * width));
    proj_ = register_module("proj", torch::nn::Linear(width, width));
    fc1_ = register_module("fc1", torch::nn::Linear(width, hidden));
    fc2_ = register_module("fc2", torch::nn::Linear(hidden, width));
  }

  // x: B x N x width. With `keys` and `values` (B x heads x L x d, or undefined for L = 0), the
  // tokens of x come after L cached ones and attend to them too; their own keys and values are
  // appended. `mask` is N x (L + N), additive.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask, torch::Tensor* keys = nullptr,
                        torch::Tensor* values = nullptr) {
    const int64_t b = x.size(0), n = x.size(1), width = x.size(2);
    // B x N x 3 x heads x d -> three B x heads x N x d (unbind: see dit.cpp).
    const auto qkv = qkv_(layer_norm(x)).reshape({b, n, 3, heads_, width / heads_}).permute({2, 0, 3, 1, 4}).unbind(0);
    auto k = qkv[1], v = qkv[2];
    if (keys != nullptr) {
      if (keys->defined()) {
        k = torch::cat({*keys, k}, 2);
        v = torch::cat({*values, v}, 2);
      }
      *keys = k;
      *values = v;
    }
    const auto out = x + proj_(attention(qkv[0], k, v, mask).transpose(1, 2).reshape({b, n, width}));
    return out + fc2_(gelu_tanh(fc1_(layer_norm(out))));
  }

 private:
  int64_t heads_;
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr}, fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(CausalBlock);

// 1-D sin-cos embedding of n positions into `dim` features: 1 x n x dim.
torch::Tensor sincos_positions(int64_t n, int64_t dim) {
  const auto positions = torch::arange(n, torch::kDouble);
  const auto omega = torch::pow(10000.0, -torch::arange(dim / 2, torch::kDouble) / static_cast<double>(dim / 2));
  const auto angles = positions.unsqueeze(1) * omega.unsqueeze(0);
  return torch::cat({torch::sin(angles), torch::cos(angles)}, 1).unsqueeze(0).to(torch::kFloat);
}

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (const int64_t d : shape) n *= d;
  return n;
}

[[maybe_unused]] const bool registered = NetworkRegistry::instance().add(
    {"model", "causal", "",
     "plain causal transformer over tokens (coordinates of points, patches of images): the ARTM/FHTM backbone",
     CausalTransformerOptions::schema().keys()},
    [](const Config& config, const NetSpec& spec) -> Network {
      const auto options = CausalTransformerOptions::schema().read(config);
      if (options.width % options.heads != 0 || options.width % 2 != 0)
        throw UserError("config: model.width = " + std::to_string(options.width) +
                        " must be even and a multiple of model.heads = " + std::to_string(options.heads));
      if (spec.in_shape.size() == 3) {
        if (spec.out_shape.size() != 3 || spec.out_shape[1] != spec.in_shape[1] || spec.out_shape[2] != spec.in_shape[2])
          throw UserError("causal: image output must have the input's height and width");
        if (spec.in_shape[1] % options.patch_size != 0 || spec.in_shape[2] % options.patch_size != 0)
          throw UserError("config: model.patch_size = " + std::to_string(options.patch_size) +
                          " must divide the image size " + std::to_string(spec.in_shape[1]) + "x" +
                          std::to_string(spec.in_shape[2]));
      } else if (numel_of(spec.out_shape) % numel_of(spec.in_shape) != 0) {
        throw UserError("causal: the output of points must have a whole number of values per coordinate");
      }
      return std::make_shared<CausalTransformerImpl>(spec, options);
    });

}  // namespace

const OptionSchema<CausalTransformerOptions>& CausalTransformerOptions::schema() {
  static const auto schema =
      OptionSchema<CausalTransformerOptions>("model")
          .add("patch_size", &CausalTransformerOptions::patch_size, 1, 64, "dit, causal: patch size")
          .add("width", &CausalTransformerOptions::width, 2, 1 << 16, "causal: token width")
          .add("depth", &CausalTransformerOptions::depth, 1, 64, "causal: transformer blocks")
          .add("heads", &CausalTransformerOptions::heads, 1, 256, "causal: attention heads")
          .add("mlp_ratio", &CausalTransformerOptions::mlp_ratio, 0.25, 64, "causal: MLP width over token width")
          .include(&CausalTransformerOptions::time, TimeEmbeddingOptions::schema());
  return schema;
}

CausalTransformerImpl::CausalTransformerImpl(const NetSpec& spec, const CausalTransformerOptions& options)
    : NetworkImpl(spec), options_(options), images_(spec.in_shape.size() == 3) {
  const int64_t width = options.width, p = options.patch_size;
  const int64_t tokens = images_ ? spec.in_shape[1] * spec.in_shape[2] / (p * p) : numel_of(spec.in_shape);
  const int64_t token_in = images_ ? p * p * spec.in_shape[0] : 1;
  const int64_t token_out = images_ ? p * p * spec.out_shape[0] : numel_of(spec.out_shape) / tokens;
  conditions_ = ConditionEmbeddings(*this, spec, width, options.time);
  input_ = register_module("input", torch::nn::Linear(token_in, width));
  position_ = register_buffer("position", sincos_positions(tokens, width));
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.depth; ++i) blocks_->push_back(CausalBlock(options));
  output_ = register_module("output", torch::nn::Linear(width, token_out));
}

torch::Tensor CausalTransformerImpl::tokens(const torch::Tensor& z) const {
  const int64_t b = z.size(0), p = options_.patch_size;
  if (!images_) return z.reshape({b, -1, 1});
  const int64_t c = z.size(1), rows = z.size(2) / p, cols = z.size(3) / p;
  return z.reshape({b, c, rows, p, cols, p}).permute({0, 2, 4, 3, 5, 1}).reshape({b, rows * cols, p * p * c});
}

torch::Tensor CausalTransformerImpl::forward(const NetInput& input) {
  const auto& z = input.z;
  const int64_t b = z.size(0);
  auto x = input_(tokens(z)) + position_ + conditions_.sum(input).unsqueeze(1);
  const auto mask = causal_mask(x.size(1), x.options());
  for (const auto& block : *blocks_) {
    x = block->as<CausalBlockImpl>()->forward(x, mask);
    note_activation(x);
  }
  x = output_(layer_norm(x));  // B x N x token_out
  std::vector<int64_t> out_shape = {b};
  out_shape.insert(out_shape.end(), spec().out_shape.begin(), spec().out_shape.end());
  if (!images_) return x.reshape(out_shape);
  const int64_t p = options_.patch_size, rows = z.size(2) / p, cols = z.size(3) / p;
  return x.reshape({b, rows, cols, p, p, spec().out_shape[0]}).permute({0, 5, 1, 3, 2, 4}).reshape(out_shape);
}

torch::Tensor CausalTransformerImpl::decode(const NetInput& input, KeyValueCache& cache) {
  const int64_t begin = cache.length(), count = input.z.size(1);
  if (begin + count > position_.size(1))
    throw std::logic_error("causal: decoding past the network's " + std::to_string(position_.size(1)) + " tokens");
  auto x = input_(input.z) + position_.slice(1, begin, begin + count) + conditions_.sum(input).unsqueeze(1);
  // New token i sits at position begin + i and sees every position up to its own.
  const auto mask = torch::full({count, begin + count}, -1e9, x.options()).triu(begin + 1);
  cache.keys.resize(blocks_->size());
  cache.values.resize(blocks_->size());
  for (size_t i = 0; i < blocks_->size(); ++i)
    x = blocks_->ptr(i)->as<CausalBlockImpl>()->forward(x, mask, &cache.keys[i], &cache.values[i]);
  return output_(layer_norm(x));
}

}  // namespace onestep
