// Sinusoidal time embeddings, class embeddings with a null label and vector embeddings
// (see embeddings.h).
#include "onestep/nets/embeddings.h"

#include <cmath>

namespace onestep {

torch::Tensor sinusoidal_features(const torch::Tensor& t, const torch::Tensor& frequencies, double time_scale) {
  const auto angles = (t * time_scale).unsqueeze(1) * frequencies.unsqueeze(0);
  return torch::cat({torch::cos(angles), torch::sin(angles)}, 1);
}

const OptionSchema<TimeEmbeddingOptions>& TimeEmbeddingOptions::schema() {
  static const auto schema =
      OptionSchema<TimeEmbeddingOptions>("model")
          .add("time_max_period", &TimeEmbeddingOptions::max_period, 1, 1e9,
               "sinusoidal t and h embeddings use frequencies from 1 down to 1/time_max_period")
          .add("time_scale", &TimeEmbeddingOptions::scale, 1e-6, 1e6,
               "t and h are multiplied by this before embedding (1: raw t in [0,1]; 1000: diffusion convention)");
  return schema;
}

TimeEmbeddingImpl::TimeEmbeddingImpl(int64_t dim, const TimeEmbeddingOptions& options)
    : dim_(dim), time_scale_(options.scale) {
  const int64_t half = dim / 2;
  frequencies_ = register_buffer(
      "frequencies", torch::exp(-std::log(options.max_period) * torch::arange(half, torch::kFloat) / static_cast<double>(half)));
  fc1_ = register_module("fc1", torch::nn::Linear(2 * half, dim));
  fc2_ = register_module("fc2", torch::nn::Linear(dim, dim));
}

torch::Tensor TimeEmbeddingImpl::forward(const torch::Tensor& t) {
  return fc2_(torch::silu(fc1_(sinusoidal_features(t, frequencies_, time_scale_))));
}

ClassEmbeddingImpl::ClassEmbeddingImpl(int64_t num_classes, int64_t dim) : num_classes_(num_classes) {
  table_ = register_module("table", torch::nn::Embedding(num_classes + 1, dim));
}

torch::Tensor ClassEmbeddingImpl::forward(const torch::Tensor& c, int64_t batch, const torch::Device& device) {
  if (!c.defined()) return table_(torch::full({batch}, num_classes_, torch::TensorOptions().dtype(torch::kLong).device(device)));
  return table_(c);
}

VectorEmbeddingImpl::VectorEmbeddingImpl(int64_t in, int64_t dim) {
  fc1_ = register_module("fc1", torch::nn::Linear(in, dim));
  fc2_ = register_module("fc2", torch::nn::Linear(dim, dim));
}

torch::Tensor VectorEmbeddingImpl::forward(const torch::Tensor& x) { return fc2_(torch::silu(fc1_(x))); }

ConditionEmbeddings::ConditionEmbeddings(torch::nn::Module& owner, const NetSpec& spec, int64_t width,
                                         const TimeEmbeddingOptions& time) {
  t = owner.register_module("t_embedding", TimeEmbedding(width, time));
  h = owner.register_module("h_embedding", TimeEmbedding(width, time));
  if (spec.num_classes > 0) label = owner.register_module("class_embedding", ClassEmbedding(spec.num_classes, width));
  if (spec.num_extra > 0) extra = owner.register_module("extra_embedding", VectorEmbedding(spec.num_extra, width));
  if (spec.context_dim > 0) context = owner.register_module("context_embedding", VectorEmbedding(spec.context_dim, width));
}

torch::Tensor ConditionEmbeddings::sum(const NetInput& input) {
  const int64_t b = input.z.size(0);
  auto out = t->forward(input.t) + h->forward(input.h);
  if (label) out = out + label->forward(input.c, b, input.z.device());
  if (extra) out = out + extra->forward(input.extra);
  if (context) out = out + context->forward(input.context.reshape({b, -1}));
  return out;
}

}  // namespace onestep
