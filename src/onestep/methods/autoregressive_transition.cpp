// ARTM and FHTM: token-by-token transitions on the independent process with a causal backbone
// (spec §4; see autoregressive_transition.h), and their registrations.
#include "onestep/methods/autoregressive_transition.h"

#include <cmath>

#include "onestep/core/config.h"
#include "onestep/core/error.h"
#include "onestep/nets/causal_transformer.h"

namespace onestep {
namespace {

[[maybe_unused]] const bool artm_registered = MethodRegistry::instance().add(
    {"method", "artm", "",
     "Autoregressive Transition Matching: causal backbone over [z_t, Y_<j], the flow head samples Y token by token",
     ArtmOptions::schema().keys()},
    [](const Config& config) {
      return std::make_unique<Artm>(ArtmOptions::schema().read(config), token_patch_size(config));
    });

[[maybe_unused]] const bool fhtm_registered = MethodRegistry::instance().add(
    {"method", "fhtm", "",
     "Full-History Transition Matching: causal backbone over all states, teacher-forced, no time input",
     FhtmOptions::schema().keys()},
    [](const Config& config) {
      return std::make_unique<Fhtm>(FhtmOptions::schema().read(config), token_patch_size(config));
    });

// The shape of `states` states of `sample_shape` stacked into one sequence: points end to end,
// images one above the other (so that the stack's row-major patches are each state's in turn).
std::vector<int64_t> stacked_shape(const std::vector<int64_t>& sample_shape, int64_t states) {
  auto shape = sample_shape;
  shape[shape.size() == 3 ? 1 : 0] *= states;
  return shape;
}

std::vector<int64_t> shape_of(const torch::Tensor& x) { return {x.sizes().begin() + 1, x.sizes().end()}; }

// The causal backbone, as build_modules made it.
CausalTransformerImpl& causal_backbone(const ModuleSet& modules) {
  return dynamic_cast<CausalTransformerImpl&>(modules["backbone"]);
}

}  // namespace

std::vector<double> transition_grid(const std::string& schedule, int64_t steps) {
  if (schedule == "uniform") return uniform_time_grid(steps);
  std::vector<double> grid(steps + 1);
  for (int64_t i = 0; i < steps; ++i) grid[i] = std::ldexp(1.0, -static_cast<int>(i));
  grid[steps] = 0.0;
  return grid;
}

TokenwiseTransition::TokenwiseTransition(HeadTrainingOptions head, LabelDropout label_dropout, std::string schedule,
                                         double cfg_scale, int64_t patch, int64_t states)
    : head_(std::move(head)),
      label_dropout_(label_dropout),
      schedule_(std::move(schedule)),
      cfg_scale_(cfg_scale),
      tokenizer_{patch, /*coordinates=*/true},
      states_(states) {}

ModuleSet TokenwiseTransition::build_modules(const Config& config, const DataInfo& data) const {
  const std::string& model = config.get_string("model.name");
  if (model != required_network())
    throw UserError("config: method.name = '" + name() + "' needs the causal backbone model.name = '" +
                    required_network() + "', got '" + model + "'");
  const auto& shape = data.sample_shape;
  NetSpec backbone;
  backbone.in_shape = stacked_shape(shape, states_);
  backbone.num_classes = data.num_classes;
  backbone.output_init = OutputInit::Default;
  const int64_t f = head_.feature_dim;
  NetSpec head;
  if (tokenizer_.splits(shape)) {
    const int64_t p = tokenizer_.patch, channels = (f + p * p - 1) / (p * p);
    backbone.out_shape = {channels, shape[1] * states_, shape[2]};
    head.in_shape = {p * p * shape[0]};
    head.context_dim = p * p * channels;
    tokens_per_state_ = shape[1] * shape[2] / (p * p);
  } else {
    int64_t n = 1;
    for (const int64_t d : shape) n *= d;
    backbone.out_shape = {states_ * n * f};
    head.in_shape = {1};
    head.context_dim = f;
    tokens_per_state_ = n;
  }
  head.out_shape = head.in_shape;
  ModuleSet modules;
  modules.add("backbone", make_network(config, backbone, data.data_std));
  modules.add("head", std::make_shared<FlowHeadImpl>(head, head_.head));
  return modules;
}

int64_t TokenwiseTransition::inner_steps(const SamplingPlan& plan) const {
  if (plan.inner_steps < 0)
    throw UserError(name() + ": head steps must be at least 1, got " + std::to_string(plan.inner_steps));
  return plan.inner_steps > 0 ? plan.inner_steps : head_.head_steps;
}

NfeCount TokenwiseTransition::count_nfe(const SamplingPlan& plan) const {
  const int64_t passes = plan.steps * tokens_per_state_;
  return {passes, passes * inner_steps(plan)};
}

torch::Tensor TokenwiseTransition::state_tokens(const torch::Tensor& x) const { return tokenizer_.to_tokens(x); }

torch::Tensor TokenwiseTransition::features(const ModuleSet& modules, const torch::Tensor& sequence,
                                            const torch::Tensor& t, const torch::Tensor& h,
                                            const torch::Tensor& c) const {
  KeyValueCache cache;  // empty: the whole sequence in one call, from the first position
  return causal_backbone(modules).decode({sequence, t, h, c}, cache);
}

void TokenwiseTransition::generate_state(const ModuleSet& modules, torch::Tensor& sequence, int64_t first, double t,
                                         double h, const torch::Tensor& labels, int64_t head_steps,
                                         torch::Generator& gen) const {
  auto& backbone = causal_backbone(modules);
  NetworkImpl& head = modules["head"];
  const int64_t b = sequence.size(0), d = sequence.size(2);
  const bool guided = labels.defined() && cfg_scale_ != 1.0;
  const int64_t rows = guided ? 2 * b : b;
  const auto both = [&](const torch::Tensor& x) { return guided ? torch::cat({x, x}) : x; };
  const auto both_labels = guided ? torch::cat({labels, torch::full_like(labels, backbone.null_label())}) : labels;
  NetInput input{both(sequence.slice(1, 0, first)), filled(rows, t, sequence), filled(rows, h, sequence), both_labels};
  KeyValueCache cache;
  // The features at the token before each new one: first of the tokens so far, then of each new token.
  auto context = backbone.decode(input, cache).select(1, first - 1);
  for (int64_t j = 0; j < tokens_per_state_; ++j) {
    const auto token = guided ? sample_head(head, context.slice(0, 0, b), context.slice(0, b), cfg_scale_, d,
                                            head_steps, gen)
                              : sample_head(head, context, torch::Tensor(), 1.0, d, head_steps, gen);
    sequence.select(1, first + j).copy_(token);
    if (j + 1 == tokens_per_state_) break;
    input.z = both(token.unsqueeze(1));
    context = backbone.decode(input, cache).select(1, 0);
  }
}

torch::Tensor TokenwiseTransition::head_loss(const ModuleSet& modules, const torch::Tensor& sequence,
                                             const torch::Tensor& features, int64_t first, int64_t count,
                                             torch::Generator& gen) const {
  return head_flow_matching_loss(modules["head"], sequence.slice(1, first, first + count),
                                 features.slice(1, first - 1, first + count - 1), head_.head_samples, gen);
}

const OptionSchema<ArtmOptions>& ArtmOptions::schema() {
  static const auto schema =
      OptionSchema<ArtmOptions>("method")
          .include(&ArtmOptions::time_sampler, TimeSampler::schema())
          .include(&ArtmOptions::label_dropout, LabelDropout::schema())
          .include(&ArtmOptions::head, HeadTrainingOptions::schema())
          .add("schedule", &ArtmOptions::schedule, {"uniform", "halving"},
               "artm, fhtm: sampling grid, uniform or halving (remaining noise 1, 1/2, 1/4, ..., 0)")
          .add("cfg_scale", &ArtmOptions::cfg_scale, 0, 100,
               "artm: classifier-free guidance scale on the head velocity at sampling (1: off)")
          .add("transition_noise", &ArtmOptions::transition_noise, {"fresh", "shared"},
               "artm: noise of a training pair's two states: fresh (one draw each, the spec's process) or shared "
               "(one draw; the paper's ablation)");
  return schema;
}

Artm::Artm(ArtmOptions options, int64_t patch)
    : TokenwiseTransition(options.head, options.label_dropout, options.schedule, options.cfg_scale, patch, 2),
      time_sampler_(options.time_sampler),
      transition_noise_(options.transition_noise) {}

TransitionPair artm_transition_pair(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& t_next,
                                    const std::string& noise, torch::Generator& gen) {
  const auto e = draw_noise(x.sizes(), gen, x.device());
  const auto e_next = noise == "shared" ? e : draw_noise(x.sizes(), gen, x.device());
  return {interpolate(x, e, t), interpolate(x, e_next, t_next)};
}

LossOutput Artm::loss(const LossContext& context, const Batch& batch) {
  const auto& x = batch.x;
  const int64_t b = x.size(0), n = tokens_per_state_;
  const auto t = time_sampler_.draw(b, context.gen).to(x.device());
  const auto t_next = t * torch::rand({b}, context.gen).to(x.device());
  const auto [z, y] = artm_transition_pair(x, t, t_next, transition_noise_, context.gen);
  const auto c = drop_labels(batch.y, context.modules["backbone"].null_label(), label_dropout_.p, context.gen);
  const auto sequence = torch::cat({state_tokens(z), state_tokens(y)}, 1);
  const auto h = features(context.modules, sequence, t, t - t_next, c);
  LossOutput out;
  out.loss = head_loss(context.modules, sequence, h, n, n, context.gen);
  return out;
}

torch::Tensor Artm::sample(const ModuleSet& modules, const torch::Tensor& noise, const torch::Tensor& labels,
                           const SamplingPlan& plan) {
  torch::NoGradGuard no_grad;
  if (plan.steps < 1) throw UserError("artm: nfe (transitions) must be at least 1, got " + std::to_string(plan.steps));
  const int64_t k = inner_steps(plan), n = tokens_per_state_;
  auto gen = generator_from_noise(noise);
  const auto shape = shape_of(noise);
  const auto grid = transition_grid(schedule_, plan.steps);
  auto z = noise;
  for (size_t i = 0; i + 1 < grid.size(); ++i) {
    const auto tokens = state_tokens(z);
    auto sequence = torch::cat({tokens, torch::zeros_like(tokens)}, 1);
    generate_state(modules, sequence, n, grid[i], grid[i] - grid[i + 1], labels, k, gen);
    z = tokenizer_.from_tokens(sequence.slice(1, n, 2 * n), shape);
  }
  return z;
}

const OptionSchema<FhtmOptions>& FhtmOptions::schema() {
  static const auto schema =
      OptionSchema<FhtmOptions>("method")
          .include(&FhtmOptions::label_dropout, LabelDropout::schema())
          .include(&FhtmOptions::head, HeadTrainingOptions::schema())
          .add("schedule", &FhtmOptions::schedule, {"uniform", "halving"},
               "artm, fhtm: sampling grid, uniform or halving (remaining noise 1, 1/2, 1/4, ..., 0)")
          .add("transitions", &FhtmOptions::transitions, 1, 16,
               "fhtm: the largest number of transitions T (training draws T in 1..transitions per step)")
          .add("cfg_scale", &FhtmOptions::cfg_scale, 0, 100,
               "fhtm: classifier-free guidance scale on the head velocity at sampling (1: off)");
  return schema;
}

Fhtm::Fhtm(FhtmOptions options, int64_t patch)
    : TokenwiseTransition(options.head, options.label_dropout, options.schedule, options.cfg_scale, patch,
                          options.transitions + 1),
      transitions_(options.transitions) {}

LossOutput Fhtm::loss(const LossContext& context, const Batch& batch) {
  const auto& x = batch.x;
  const int64_t b = x.size(0), n = tokens_per_state_;
  const int64_t steps = torch::randint(1, transitions_ + 1, {1}, context.gen).item<int64_t>();
  const auto grid = transition_grid(schedule_, steps);
  std::vector<torch::Tensor> states;  // only the drawn T's: the backbone reads a prefix of its positions
  for (int64_t i = 0; i <= steps; ++i) {
    const auto e = draw_noise(x.sizes(), context.gen, x.device());  // fresh noise per state
    states.push_back(state_tokens(interpolate(x, e, filled(b, grid[i], x))));
  }
  const auto sequence = torch::cat(states, 1);
  const auto c = drop_labels(batch.y, context.modules["backbone"].null_label(), label_dropout_.p, context.gen);
  const auto h =
      features(context.modules, sequence, filled(b, 0, x), filled(b, 1.0 / static_cast<double>(steps), x), c);
  LossOutput out;
  out.loss = head_loss(context.modules, sequence, h, n, steps * n, context.gen);
  return out;
}

torch::Tensor Fhtm::sample(const ModuleSet& modules, const torch::Tensor& noise, const torch::Tensor& labels,
                           const SamplingPlan& plan) {
  torch::NoGradGuard no_grad;
  if (plan.steps < 1 || plan.steps > transitions_)
    throw UserError("fhtm: nfe (transitions) must be in 1.." + std::to_string(transitions_) +
                    " (method.transitions), got " + std::to_string(plan.steps));
  const int64_t k = inner_steps(plan), n = tokens_per_state_;
  auto gen = generator_from_noise(noise);
  const auto shape = shape_of(noise);
  const auto first = state_tokens(noise);
  auto sequence = torch::zeros({first.size(0), (transitions_ + 1) * n, first.size(2)}, first.options());
  sequence.slice(1, 0, n).copy_(first);
  const double gap = 1.0 / static_cast<double>(plan.steps);
  for (int64_t i = 1; i <= plan.steps; ++i) generate_state(modules, sequence, i * n, 0.0, gap, labels, k, gen);
  return tokenizer_.from_tokens(sequence.slice(1, plan.steps * n, (plan.steps + 1) * n), shape);
}

}  // namespace onestep
