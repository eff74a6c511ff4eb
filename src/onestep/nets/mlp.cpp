// MLP network (see mlp.h).
#include "onestep/nets/mlp.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <numeric>

namespace onestep {
namespace {
int64_t numel_of(const std::vector<int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<int64_t>());
}

constexpr uint64_t kFourierSeed = 0x5EED5EED;

// Pre-LayerNorm residual block: a + fc2(silu(fc1(LN(a)))).
class ResidualBlockImpl : public torch::nn::Module {
 public:
  explicit ResidualBlockImpl(int64_t width) {
    norm_ = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({width})));
    fc1_ = register_module("fc1", torch::nn::Linear(width, width));
    fc2_ = register_module("fc2", torch::nn::Linear(width, width));
  }
  torch::Tensor forward(const torch::Tensor& a) { return a + fc2_(torch::silu(fc1_(norm_(a)))); }

 private:
  torch::nn::LayerNorm norm_{nullptr};
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(ResidualBlock);
}  // namespace

MlpImpl::MlpImpl(const NetSpec& spec, const MlpOptions& options) : NetworkImpl(spec) {
  t_embedding_ = register_module("t_embedding", TimeEmbedding(options.emb_dim, options.time_max_period, options.time_scale));
  h_embedding_ = register_module("h_embedding", TimeEmbedding(options.emb_dim, options.time_max_period, options.time_scale));
  const int64_t in_dim = numel_of(spec.in_shape);
  int64_t in_features = in_dim + 2 * options.emb_dim;
  if (options.fourier_features > 0) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(kFourierSeed);
    fourier_frequencies_ = register_buffer(
        "fourier_frequencies", torch::randn({in_dim, options.fourier_features}, gen, torch::kFloat) * options.fourier_scale);
    in_features += 2 * options.fourier_features;
  }
  if (spec.num_classes > 0) {
    class_embedding_ = register_module("class_embedding", ClassEmbedding(spec.num_classes, options.emb_dim));
    in_features += options.emb_dim;
  }
  hidden_ = register_module("hidden", torch::nn::ModuleList());
  if (options.residual) {
    input_ = register_module("input", torch::nn::Linear(in_features, options.width));
    for (int64_t i = 0; i < options.depth; ++i) hidden_->push_back(ResidualBlock(options.width));
    final_norm_ = register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({options.width})));
  } else {
    for (int64_t i = 0; i < options.depth; ++i) {
      hidden_->push_back(torch::nn::Linear(i == 0 ? in_features : options.width, options.width));
    }
  }
  output_ = register_module("output", torch::nn::Linear(options.width, numel_of(spec.out_shape)));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& z, const torch::Tensor& t, const torch::Tensor& h,
                               const torch::Tensor& c) {
  const int64_t batch = z.size(0);
  const auto flat = z.reshape({batch, -1});
  std::vector<torch::Tensor> parts = {flat, t_embedding_(t), h_embedding_(h)};
  if (fourier_frequencies_.defined()) {
    const auto angles = flat.matmul(fourier_frequencies_.to(flat.dtype())) * (2 * M_PI);
    parts.push_back(torch::cos(angles));
    parts.push_back(torch::sin(angles));
  }
  if (class_embedding_) parts.push_back(class_embedding_(c, batch, z.device()));
  auto a = torch::cat(parts, 1);
  if (input_) {
    a = input_(a);
    for (const auto& block : *hidden_) a = block->as<ResidualBlockImpl>()->forward(a);
    a = final_norm_(a);
  } else {
    for (const auto& layer : *hidden_) a = torch::silu(layer->as<torch::nn::Linear>()->forward(a));
  }
  std::vector<int64_t> out_shape = {batch};
  out_shape.insert(out_shape.end(), spec().out_shape.begin(), spec().out_shape.end());
  return output_(a).reshape(out_shape);
}

}  // namespace onestep
