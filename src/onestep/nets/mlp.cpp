// MLP network (see mlp.h).
#include "onestep/nets/mlp.h"

#include <numeric>

namespace onestep {
namespace {
int64_t numel_of(const std::vector<int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<int64_t>());
}
}  // namespace

MlpImpl::MlpImpl(const NetSpec& spec, const MlpOptions& options) : NetworkImpl(spec) {
  t_embedding_ = register_module("t_embedding", TimeEmbedding(options.emb_dim, options.time_max_period, options.time_scale));
  h_embedding_ = register_module("h_embedding", TimeEmbedding(options.emb_dim, options.time_max_period, options.time_scale));
  int64_t in_features = numel_of(spec.in_shape) + 2 * options.emb_dim;
  if (spec.num_classes > 0) {
    class_embedding_ = register_module("class_embedding", ClassEmbedding(spec.num_classes, options.emb_dim));
    in_features += options.emb_dim;
  }
  hidden_ = register_module("hidden", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.depth; ++i) {
    hidden_->push_back(torch::nn::Linear(i == 0 ? in_features : options.width, options.width));
  }
  output_ = register_module("output", torch::nn::Linear(options.width, numel_of(spec.out_shape)));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& z, const torch::Tensor& t, const torch::Tensor& h,
                               const torch::Tensor& c) {
  const int64_t batch = z.size(0);
  std::vector<torch::Tensor> parts = {z.reshape({batch, -1}), t_embedding_(t), h_embedding_(h)};
  if (class_embedding_) parts.push_back(class_embedding_(c, batch, z.device()));
  auto a = torch::cat(parts, 1);
  for (const auto& layer : *hidden_) a = torch::silu(layer->as<torch::nn::Linear>()->forward(a));
  std::vector<int64_t> out_shape = {batch};
  out_shape.insert(out_shape.end(), spec().out_shape.begin(), spec().out_shape.end());
  return output_(a).reshape(out_shape);
}

}  // namespace onestep
