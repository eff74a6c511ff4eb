// MLP network (see mlp.h) and its registration.
#include "onestep/nets/mlp.h"

#include <numeric>

namespace onestep {
namespace {

int64_t numel_of(const std::vector<int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<int64_t>());
}

[[maybe_unused]] const bool registered = NetworkRegistry::instance().add(
    {"model", "mlp", "", "multi-layer perceptron for points (and any data, flattened)", MlpOptions::schema().keys()},
    [](const Config& config, const NetSpec& spec) -> Network {
      return std::make_shared<MlpImpl>(spec, MlpOptions::schema().read(config));
    });

}  // namespace

const OptionSchema<MlpOptions>& MlpOptions::schema() {
  static const auto schema = OptionSchema<MlpOptions>("model")
                                 .add("width", &MlpOptions::width, 1, 1 << 16, "hidden width")
                                 .add("depth", &MlpOptions::depth, 1, 64, "hidden layers")
                                 .add("emb_dim", &MlpOptions::emb_dim, 2, 1 << 14,
                                      "width of each of the t, h, class and extra-condition embeddings")
                                 .include(&MlpOptions::time, TimeEmbeddingOptions::schema());
  return schema;
}

MlpImpl::MlpImpl(const NetSpec& spec, const MlpOptions& options) : NetworkImpl(spec) {
  t_embedding_ = register_module("t_embedding", TimeEmbedding(options.emb_dim, options.time));
  h_embedding_ = register_module("h_embedding", TimeEmbedding(options.emb_dim, options.time));
  int64_t in_features = numel_of(spec.in_shape) + 2 * options.emb_dim + spec.context_dim;
  if (spec.num_classes > 0) {
    class_embedding_ = register_module("class_embedding", ClassEmbedding(spec.num_classes, options.emb_dim));
    in_features += options.emb_dim;
  }
  if (spec.num_extra > 0) {
    extra_embedding_ = register_module("extra_embedding", VectorEmbedding(spec.num_extra, options.emb_dim));
    in_features += options.emb_dim;
  }
  hidden_ = register_module("hidden", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.depth; ++i) {
    hidden_->push_back(torch::nn::Linear(i == 0 ? in_features : options.width, options.width));
  }
  output_ = register_module("output", torch::nn::Linear(options.width, numel_of(spec.out_shape)));
}

torch::Tensor MlpImpl::forward(const NetInput& input) {
  const auto& z = input.z;
  const int64_t batch = z.size(0);
  std::vector<torch::Tensor> parts = {z.reshape({batch, -1}), t_embedding_(input.t), h_embedding_(input.h)};
  if (class_embedding_) parts.push_back(class_embedding_(input.c, batch, z.device()));
  if (extra_embedding_) parts.push_back(extra_embedding_(input.extra));
  if (spec().context_dim > 0) parts.push_back(input.context.reshape({batch, -1}));
  auto a = torch::cat(parts, 1);
  for (const auto& layer : *hidden_) {
    a = torch::silu(layer->as<torch::nn::Linear>()->forward(a));
    note_activation(a);
  }
  std::vector<int64_t> out_shape = {batch};
  out_shape.insert(out_shape.end(), spec().out_shape.begin(), spec().out_shape.end());
  return output_(a).reshape(out_shape);
}

}  // namespace onestep
