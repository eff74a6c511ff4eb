// Transition Matching's shared parts (tokens, the head's loss and sampler) and DTM (spec §4;
// see transition_matching.h), and DTM's registration.
#include "onestep/methods/transition_matching.h"

#include <ATen/CPUGeneratorImpl.h>

#include "onestep/core/config.h"
#include "onestep/core/error.h"

namespace onestep {
namespace {

[[maybe_unused]] const bool registered = MethodRegistry::instance().add(
    {"method", "dtm", "",
     "Difference Transition Matching: the backbone once per transition, a flow head samples the step Y = e - x",
     DtmOptions::schema().keys()},
    [](const Config& config) {
      return std::make_unique<Dtm>(DtmOptions::schema().read(config), token_patch_size(config));
    });

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (const int64_t d : shape) n *= d;
  return n;
}

}  // namespace

torch::Tensor Tokenizer::to_tokens(const torch::Tensor& x) const {
  const int64_t b = x.size(0);
  if (patch == 0 || x.dim() != 4) return coordinates ? x.reshape({b, -1, 1}) : x.reshape({b, 1, -1});
  const int64_t c = x.size(1), rows = x.size(2) / patch, cols = x.size(3) / patch;
  return x.reshape({b, c, rows, patch, cols, patch})
      .permute({0, 2, 4, 3, 5, 1})
      .reshape({b, rows * cols, patch * patch * c});
}

torch::Tensor Tokenizer::from_tokens(const torch::Tensor& tokens, const std::vector<int64_t>& sample_shape) const {
  std::vector<int64_t> shape = {tokens.size(0)};
  shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
  if (!splits(sample_shape)) return tokens.reshape(shape);
  const int64_t c = sample_shape[0], rows = sample_shape[1] / patch, cols = sample_shape[2] / patch;
  return tokens.reshape({tokens.size(0), rows, cols, patch, patch, c}).permute({0, 5, 1, 3, 2, 4}).reshape(shape);
}

const OptionSchema<HeadTrainingOptions>& HeadTrainingOptions::schema() {
  static const auto schema =
      OptionSchema<HeadTrainingOptions>("method")
          .include(&HeadTrainingOptions::head, FlowHeadOptions::schema())
          .add("feature_dim", &HeadTrainingOptions::feature_dim, 1, 1 << 14,
               "dtm, artm, fhtm: backbone features per token that condition the head (images: rounded up to a "
               "multiple of patch_size^2)")
          .add("head_samples", &HeadTrainingOptions::head_samples, 1, 1024,
               "dtm, artm, fhtm: inner times s drawn per token and backbone pass in training")
          .add("head_steps", &HeadTrainingOptions::head_steps, 1, 1 << 14,
               "dtm, artm, fhtm: K, Euler steps of the head per transition at sampling");
  return schema;
}

torch::Tensor head_flow_matching_loss(NetworkImpl& head, const torch::Tensor& y, const torch::Tensor& context,
                                      int64_t head_samples, torch::Generator& gen) {
  const int64_t b = y.size(0), n = y.size(1), d = y.size(2), f = context.size(2);
  const auto y_rows = y.unsqueeze(0).expand({head_samples, b, n, d}).reshape({-1, d});
  const auto context_rows = context.unsqueeze(0).expand({head_samples, b, n, f}).reshape({-1, f});
  const int64_t rows = y_rows.size(0);
  const auto y0 = draw_noise({rows, d}, gen, y.device()).to(y.dtype());
  const auto s = torch::rand({rows}, gen).to(y.device(), y.dtype());
  const auto y_s = (1 - s).unsqueeze(1) * y0 + s.unsqueeze(1) * y_rows;
  const auto velocity = head.forward({y_s, s, torch::zeros_like(s), {}, {}, context_rows});
  return (velocity - (y_rows - y0)).pow(2).reshape({head_samples * b, -1}).sum(1).mean();
}

torch::Tensor sample_head(NetworkImpl& head, const torch::Tensor& context, const torch::Tensor& unconditional_context,
                          double cfg_scale, int64_t token_size, int64_t steps, torch::Generator& gen) {
  const int64_t rows = context.size(0);
  auto y = draw_noise({rows, token_size}, gen, context.device()).to(context.dtype());
  const bool guided = unconditional_context.defined() && cfg_scale != 1.0;
  const auto both = guided ? torch::cat({context, unconditional_context}) : context;
  for (int64_t k = 0; k < steps; ++k) {
    const double s = static_cast<double>(k) / static_cast<double>(steps);
    const auto y_in = guided ? torch::cat({y, y}) : y;
    const int64_t n = y_in.size(0);
    auto velocity = head.forward({y_in, filled(n, s, y), filled(n, 0, y), {}, {}, both});
    if (guided) {
      const auto parts = velocity.chunk(2);
      velocity = parts[1] + cfg_scale * (parts[0] - parts[1]);
    }
    y = y + velocity / static_cast<double>(steps);
  }
  return y;
}

torch::Generator generator_from_noise(const torch::Tensor& noise) {
  const auto values = noise.detach().to(torch::kCPU, torch::kFloat).contiguous();
  const auto* bytes = reinterpret_cast<const unsigned char*>(values.data_ptr<float>());
  uint64_t hash = 1469598103934665603ULL;
  for (size_t i = 0; i < static_cast<size_t>(values.numel()) * sizeof(float); ++i) {
    hash ^= bytes[i];
    hash *= 1099511628211ULL;
  }
  return at::detail::createCPUGenerator(hash);
}

int64_t token_patch_size(const Config& config) {
  const std::string& model = config.get_string("model.name");
  if (model == "dit" || model == "causal") return config.get_int("model.patch_size");
  if (model == "unet") return 1;
  return 0;
}

const OptionSchema<DtmOptions>& DtmOptions::schema() {
  static const auto schema =
      OptionSchema<DtmOptions>("method")
          .include(&DtmOptions::time_sampler, TimeSampler::schema())
          .include(&DtmOptions::label_dropout, LabelDropout::schema())
          .include(&DtmOptions::head, HeadTrainingOptions::schema())
          .add("time_grid", &DtmOptions::time_grid, 0, 1 << 16,
               "dtm: 0 trains t continuously (one model samples with any T); T > 0 draws t from {1/T, ..., 1}")
          .add("cfg_scale", &DtmOptions::cfg_scale, 0, 100,
               "dtm: classifier-free guidance scale on the head velocity at sampling (1: off)");
  return schema;
}

Dtm::Dtm(DtmOptions options, int64_t patch) : options_(std::move(options)), tokenizer_{patch} {}

ModuleSet Dtm::build_modules(const Config& config, const DataInfo& data) const {
  NetSpec backbone;
  backbone.in_shape = data.sample_shape;
  backbone.num_classes = data.num_classes;
  backbone.output_init = OutputInit::Default;  // features, not a velocity: no zero start
  const int64_t f = options_.head.feature_dim;
  NetSpec head;
  if (tokenizer_.splits(data.sample_shape)) {
    const int64_t p = tokenizer_.patch, channels = (f + p * p - 1) / (p * p);
    backbone.out_shape = {channels, data.sample_shape[1], data.sample_shape[2]};
    head.in_shape = {p * p * data.sample_shape[0]};
    head.context_dim = p * p * channels;
  } else {
    backbone.out_shape = {f};
    head.in_shape = {numel_of(data.sample_shape)};
    head.context_dim = f;
  }
  head.out_shape = head.in_shape;
  ModuleSet modules;
  modules.add("backbone", make_network(config, backbone, data.data_std));
  modules.add("head", std::make_shared<FlowHeadImpl>(head, options_.head.head));
  return modules;
}

torch::Tensor Dtm::features(NetworkImpl& backbone, const torch::Tensor& z, const torch::Tensor& t,
                            const torch::Tensor& c) const {
  return tokenizer_.to_tokens(backbone.forward({z, t, torch::zeros_like(t), c}));
}

LossOutput Dtm::loss(const LossContext& context, const Batch& batch) {
  const int64_t b = batch.x.size(0);
  torch::Tensor t;
  if (options_.time_grid > 0)
    t = (torch::randint(1, options_.time_grid + 1, {b}, context.gen).to(torch::kFloat) /
         static_cast<double>(options_.time_grid));
  else
    t = options_.time_sampler.draw(b, context.gen);
  const auto c = drop_labels(batch.y, context.modules["backbone"].null_label(), options_.label_dropout.p, context.gen);
  return loss_at(context.modules, batch.x, t.to(batch.x.device()), c, context.gen);
}

LossOutput Dtm::loss_at(const ModuleSet& modules, const torch::Tensor& x, const torch::Tensor& t,
                        const torch::Tensor& c, torch::Generator& gen) const {
  const auto point = draw_path_point(x, t, gen);  // Y = v_t = e - x
  const auto h = features(modules["backbone"], point.z_t, point.t, c);
  LossOutput out;
  out.loss = head_flow_matching_loss(modules["head"], tokenizer_.to_tokens(point.v_t), h,
                                     options_.head.head_samples, gen);
  return out;
}

int64_t Dtm::inner_steps(const SamplingPlan& plan) const {
  if (plan.inner_steps < 0)
    throw UserError("dtm: head steps must be at least 1, got " + std::to_string(plan.inner_steps));
  return plan.inner_steps > 0 ? plan.inner_steps : options_.head.head_steps;
}

NfeCount Dtm::count_nfe(const SamplingPlan& plan) const { return {plan.steps, plan.steps * inner_steps(plan)}; }

torch::Tensor Dtm::sample(const ModuleSet& modules, const torch::Tensor& noise, const torch::Tensor& labels,
                          const SamplingPlan& plan) {
  torch::NoGradGuard no_grad;
  if (plan.steps < 1) throw UserError("dtm: nfe (transitions) must be at least 1, got " + std::to_string(plan.steps));
  const int64_t k = inner_steps(plan);
  auto gen = generator_from_noise(noise);
  NetworkImpl& backbone = modules["backbone"];
  NetworkImpl& head = modules["head"];
  const std::vector<int64_t> sample_shape(noise.sizes().begin() + 1, noise.sizes().end());
  const bool guided = labels.defined() && options_.cfg_scale != 1.0;
  const auto grid = uniform_time_grid(plan.steps);
  auto z = noise;
  const int64_t b = z.size(0);
  for (size_t i = 0; i + 1 < grid.size(); ++i) {
    const NetInput input{z, filled(b, grid[i], z), filled(b, 0, z), labels};
    torch::Tensor h, h_unconditional;
    if (guided) {
      const auto [conditional, unconditional] = conditional_and_unconditional(backbone, input);
      h = tokenizer_.to_tokens(conditional);
      h_unconditional = tokenizer_.to_tokens(unconditional).flatten(0, 1);
    } else {
      h = tokenizer_.to_tokens(backbone.forward(input));
    }
    const int64_t n = h.size(1);
    const int64_t token_size = tokenizer_.to_tokens(z).size(2);
    const auto y = sample_head(head, h.flatten(0, 1), h_unconditional, options_.cfg_scale, token_size, k, gen);
    z = z - (grid[i] - grid[i + 1]) * tokenizer_.from_tokens(y.reshape({b, n, token_size}), sample_shape);
  }
  return z;
}

}  // namespace onestep
