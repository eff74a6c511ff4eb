// Drifting Models (spec §5, §6): the field is anti-symmetric (swapping positives and negatives
// negates it) and vanishes for identical sets; it equals a float64 reference of the spec's
// formula, RMS-normalised, also where the field's float32 squares underflow; a negative of
// weight w is w copies of it; the production loss has gradient -2 V / N with respect to the
// generator output; on feature sets each set's field is its own, the sets of the encoder have
// their closed forms, and the loss's gradient goes through the encoder to the images (the
// encoder's weights get none), class groups with CFG negatives each get their own field,
// batched or not; the feature space follows the data and the committed encoder loads by its
// hash; the step's batch has one group per class plus the CFG negatives; on 8gaussians a short
// run covers all 8 modes with about equal mass at 1 NFE, also from a collapsed start (every
// output on one mode); the default config trains (energy distance falls within a few hundred
// steps).
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "onestep/core/config.h"
#include "onestep/data/dataset.h"
#include "onestep/eval/point_metrics.h"
#include "onestep/eval/feature_encoder.h"
#include "onestep/methods/drifting.h"
#include "onestep/train/checkpoint.h"
#include "onestep/train/trainer.h"
#include "test_support.h"

using namespace onestep;
using onestep::testing_support::FixedOutput;
using onestep::testing_support::seeded;
using onestep::testing_support::user_error_message;

namespace {

const std::vector<double> kTemperatures = {0.02, 0.05, 0.2};

Config drifting_config(const std::vector<std::string>& overrides) {
  Config config;
  config.apply_override("method.name=drifting");
  for (const auto& o : overrides) config.apply_override(o);
  return config;
}

Drifting make_drifting(const std::vector<std::string>& overrides) {
  return Drifting(DriftingOptions::schema().read(drifting_config(overrides)));
}

// The 8 centres of 8gaussians (radius 2).
torch::Tensor centres() {
  const auto angle = torch::arange(8, torch::kFloat) * (2 * M_PI / 8);
  return torch::stack({torch::cos(angle), torch::sin(angle)}, 1) * 2;
}

// Share of the points nearest to each centre.
std::vector<double> mode_shares(const torch::Tensor& points) {
  const auto nearest = torch::cdist(points, centres()).argmin(1);
  const auto counts = torch::bincount(nearest, {}, 8).to(torch::kDouble) / points.size(0);
  return {counts.data_ptr<double>(), counts.data_ptr<double>() + 8};
}

// Trains an unconditional generator on 8gaussians (labels dropped) with Adam, from the
// framework's output initialisation (outputs ~100x smaller than the data: the scale-free field
// still attracts them) or, with `collapse`, with every initial output on the mode at (2, 0)
// (output weight 0, bias (2, 0)). Returns 4000 one-pass samples.
torch::Tensor train_on_8gaussians(bool collapse, int64_t steps) {
  Config config = drifting_config({"data.name=8gaussians", "model.width=128", "model.depth=3", "method.n_pos=512",
                                   "method.n_neg=512", "method.output_init=default"});
  auto dataset = make_dataset(config);
  Drifting method(DriftingOptions::schema().read(config));
  torch::manual_seed(3);
  const DataInfo info{{2}, 0, 1.45};
  ModuleSet modules = method.build_modules(config, info);
  if (collapse) {
    torch::NoGradGuard no_grad;
    auto output = modules["net"].output_parameters();
    output[0].zero_();
    output[1].copy_(torch::tensor({2.0f, 0.0f}));
  }
  torch::optim::Adam adam(modules.parameters(), torch::optim::AdamOptions(1e-3));
  auto gen = seeded(11);
  for (int64_t step = 0; step < steps; ++step) {
    Batch batch = method.training_batch(*dataset, 256, gen);
    batch.y = torch::Tensor();
    const auto out = method.loss({modules, nullptr, nullptr, gen}, batch);
    adam.zero_grad();
    out.loss.backward();
    adam.step();
  }
  auto noise_gen = seeded(99);
  return method.sample(modules, torch::randn({4000, 32}, noise_gen), {}, {1});
}

// The spec's field step by step in float64, the generated samples x the only negatives (each
// masked against itself), no weights: an independent reference for drifting_field.
torch::Tensor reference_field(const torch::Tensor& x, const torch::Tensor& positives,
                              const std::vector<double>& temperatures) {
  const auto xs = x.to(torch::kDouble), pos = positives.to(torch::kDouble);
  const int64_t n = xs.size(0);
  const auto targets = torch::cat({xs, pos});
  auto self = torch::zeros({n, targets.size(0)}, xs.options());
  self.slice(1, 0, n).diagonal().fill_(1.0);
  const auto distance = torch::cdist(xs, targets);
  const auto mean = (distance * (1 - self)).sum() / (1 - self).sum();
  const auto normalised = distance / mean + 1e4 * self;
  const auto scale = std::sqrt(static_cast<double>(xs.size(1))) / mean;
  auto total = torch::zeros_like(xs);
  for (const double tau : temperatures) {
    const auto logits = -normalised / tau;
    const auto a = (torch::softmax(logits, 1) * torch::softmax(logits, 0)).sqrt();
    const auto a_neg = a.slice(1, 0, n), a_pos = a.slice(1, n);
    const auto w_pos = a_pos * a_neg.sum(1, true), w_neg = a_neg * a_pos.sum(1, true);
    const auto v = w_pos.mm(pos * scale) - w_neg.mm(xs * scale) - (w_pos.sum(1, true) - w_neg.sum(1, true)) * xs * scale;
    total += v / v.pow(2).mean().sqrt();
  }
  return total;
}

}  // namespace

TEST(Drifting, FieldIsAntiSymmetric) {
  auto gen = seeded(1);
  const auto x = torch::randn({64, 2}, gen);
  const auto p = torch::randn({80, 2}, gen) * 0.7 + 0.5;
  const auto q = torch::randn({70, 2}, gen) * 1.3;
  const auto pq = drifting_field(x, p, q, kTemperatures);
  const auto qp = drifting_field(x, q, p, kTemperatures);
  EXPECT_GT(pq.v.abs().max().item<double>(), 0.5);
  EXPECT_TRUE(torch::allclose(qp.v, -pq.v, 0, 1e-5)) << (qp.v + pq.v).abs().max().item<double>();
  for (size_t i = 0; i < kTemperatures.size(); ++i)
    EXPECT_NEAR(qp.raw_squared_norms[i].item<double>(), pq.raw_squared_norms[i].item<double>(),
                1e-6 * pq.raw_squared_norms[i].item<double>());
  // Also with the generated samples among the negatives (self-masked) against 5-D data.
  const auto x5 = torch::randn({40, 5}, gen);
  const auto p5 = torch::randn({50, 5}, gen);
  const auto a = drifting_field(x5, p5, x5, kTemperatures);
  const auto b = drifting_field(x5, x5, p5, kTemperatures);
  EXPECT_TRUE(torch::allclose(a.v, -b.v, 0, 1e-5));
}

TEST(Drifting, IdenticalSetsGiveZeroField) {
  auto gen = seeded(2);
  const auto x = torch::randn({64, 2}, gen);
  const auto p = torch::randn({80, 2}, gen);
  const auto q = torch::randn({80, 2}, gen) + 1.0;
  const auto same = drifting_field(x, p, p.clone(), kTemperatures);
  const auto different = drifting_field(x, p, q, kTemperatures);
  // The raw field (before the RMS normalisation, which would rescale rounding noise to 1).
  for (size_t i = 0; i < kTemperatures.size(); ++i) {
    EXPECT_GT(different.raw_squared_norms[i].item<double>(), 1e-5);
    EXPECT_LT(same.raw_squared_norms[i].item<double>(), 1e-10 * different.raw_squared_norms[i].item<double>())
        << "tau " << kTemperatures[i];
  }
}

TEST(Drifting, NormalisationSurvivesUnderflowingKernels) {
  // One generated sample on the positives, seven together one unit away: at tau = 0.03 every
  // sample's field is about 1e-25 (each row's weight sits where another row holds it: the far
  // ones' positives, the near one's far negatives), whose float32 squares underflow. The
  // normalised field must still be the float64 reference's, RMS 1 per temperature.
  auto gen = seeded(5);
  auto x = torch::zeros({8, 2});
  x.slice(0, 1).select(1, 0).fill_(1.0);
  const auto positives = 0.01 * torch::randn({8, 2}, gen);
  const std::vector<double> temperatures = {0.03, 0.2};
  const auto field = drifting_field(x, positives, x, temperatures, {}, true);
  ASSERT_LT(field.raw_squared_norms[0].item<double>(), 1e-40);  // the tiny regime is reached
  const auto expected = reference_field(x, positives, temperatures).to(torch::kFloat);
  EXPECT_TRUE(torch::allclose(field.v, expected, 1e-4, 1e-4)) << field.v << expected;
  // Each temperature alone: RMS 1.
  for (const double tau : temperatures) {
    const auto alone = drifting_field(x, positives, x, {tau}, {}, true).v;
    EXPECT_NEAR(alone.pow(2).mean().sqrt().item<double>(), 1.0, 1e-5) << "tau " << tau;
  }
}

TEST(Drifting, WeightedNegativeCountsAsCopies) {
  auto gen = seeded(3);
  const auto x = torch::randn({30, 2}, gen);
  const auto p = torch::randn({40, 2}, gen);
  const auto extra = torch::randn({5, 2}, gen) + 2.0;
  // x among the negatives (masked), the extra negatives with weight 3 = each three times.
  auto weights = torch::ones({35});
  weights.slice(0, 30).fill_(3.0);
  const auto weighted = drifting_field(x, p, torch::cat({x, extra}), kTemperatures, weights, true);
  const auto copies = drifting_field(x, p, torch::cat({x, extra, extra, extra}), kTemperatures, {}, true);
  EXPECT_TRUE(torch::allclose(weighted.v, copies.v, 1e-4, 1e-5));
  // Weight 0 removes them.
  const auto removed = drifting_field(x, p, torch::cat({x, extra}), kTemperatures,
                                      torch::cat({torch::ones({30}), torch::zeros({5})}), true);
  const auto without = drifting_field(x, p, x, kTemperatures, {}, true);
  EXPECT_TRUE(torch::allclose(removed.v, without.v, 1e-4, 1e-5));
}

TEST(Drifting, LossGradientIsMinusTwoVOverN) {
  // One unlabelled group: the generated batch is the negatives (self-masked), the batch the
  // positives. d/dx mean_i ||x_i - sg(x_i + V_i)||^2 = -2 V / N.
  const int64_t n = 48;
  auto method = make_drifting({"method.n_neg=48"});
  auto gen = seeded(4);
  auto net = std::make_shared<FixedOutput>(torch::randn({n, 2}, gen));
  ModuleSet modules;
  modules.add("net", net);
  const Batch batch{torch::randn({60, 2}, gen) + 0.5, {}};
  const auto out = method.loss({modules, nullptr, nullptr, gen}, batch);
  out.loss.backward();
  const auto v = drifting_field(net->out.detach(), batch.x, net->out.detach(), kTemperatures, {}, true).v;
  EXPECT_TRUE(torch::allclose(net->out.grad(), -2.0 * v / n, 1e-5, 1e-7));
  EXPECT_NEAR(out.loss.item<double>(), v.pow(2).sum(1).mean().item<double>(), 1e-5);
  EXPECT_EQ(out.parts.size(), 3u);
  EXPECT_TRUE(out.parts.count("raw_v2_tau0.05"));
}

TEST(Drifting, FieldOnFeatureSetsIsEachSetsOwnField) {
  // B feature sets at once (weighted extra negatives, self-masking) = each set alone.
  auto gen = seeded(21);
  const int64_t b = 3, n = 12, p = 15, extra = 4;
  const auto x = torch::randn({b, n, 5}, gen);
  const auto positives = torch::randn({b, p, 5}, gen) + 0.3;
  const auto negatives = torch::cat({x, torch::randn({b, extra, 5}, gen)}, 1);
  const auto weights = torch::cat({torch::ones({n}), torch::full({extra}, 2.5)});
  const auto all = drifting_field(x, positives, negatives, kTemperatures, weights, true);
  ASSERT_EQ(all.v.sizes(), x.sizes());
  for (int64_t i = 0; i < b; ++i) {
    const auto one = drifting_field(x[i], positives[i], negatives[i], kTemperatures, weights, true);
    EXPECT_TRUE(torch::allclose(all.v[i], one.v, 1e-5, 1e-6)) << "set " << i;
  }
}

TEST(Drifting, FeatureSetsOfAnEncoderHaveTheirClosedForms) {
  torch::manual_seed(2);
  FeatureEncoder encoder(1);
  auto gen = seeded(22);
  const int64_t n = 3;
  const auto x = torch::randn({n, 1, 8, 8}, gen);
  const auto sets = drifting_feature_sets(x, encoder.get());
  const std::map<std::string, torch::Tensor> by_name(sets.begin(), sets.end());
  // raw; per map location, mean, std; patch 2 and 4 mean and std where they fit (8x8, 4x4, 2x2).
  EXPECT_EQ(sets.size(), 1u + 3 * 3 + 4 + 4 + 2);
  EXPECT_TRUE(torch::equal(by_name.at("raw"), x.reshape({n, 1, 64})));
  EXPECT_EQ(drifting_feature_sets(x, nullptr).size(), 1u);
  const auto maps = encoder->feature_maps(x);
  for (size_t k = 0; k < maps.size(); ++k) {
    const auto& m = maps[k];
    const int64_t c = m.size(1), h = m.size(2), w = m.size(3);
    const std::string name = "map" + std::to_string(k);
    const auto& location = by_name.at(name + ".location");
    ASSERT_EQ(location.sizes(), (std::vector<int64_t>{n, h * w, c}));
    EXPECT_TRUE(torch::equal(location.select(1, w + 1), m.select(2, 1).select(2, 1)));
    EXPECT_TRUE(torch::allclose(by_name.at(name + ".mean").squeeze(1), m.mean({2, 3}), 1e-5, 1e-6));
    // Standard deviations as sqrt(variance + 1e-6) (differentiable where a variance is 0).
    const auto stdev = [](const torch::Tensor& t, std::vector<int64_t> dims) {
      return (t.var(dims, /*unbiased=*/false) + 1e-6).sqrt();
    };
    EXPECT_TRUE(torch::allclose(by_name.at(name + ".std").squeeze(1), stdev(m, {2, 3}), 1e-4, 1e-4));
    for (const int64_t patch : {2, 4}) {
      const std::string patch_name = name + ".patch" + std::to_string(patch);
      if (h < patch) {
        EXPECT_EQ(by_name.count(patch_name + ".mean"), 0u);
        continue;
      }
      // Blocks by reshaping: N x C x h/k x k x w/k x k.
      const auto blocks = m.reshape({n, c, h / patch, patch, w / patch, patch});
      const auto as_sets = [](const torch::Tensor& t) { return t.flatten(2).transpose(1, 2); };
      EXPECT_TRUE(torch::allclose(by_name.at(patch_name + ".mean"), as_sets(blocks.mean({3, 5})), 1e-5, 1e-6));
      EXPECT_TRUE(torch::allclose(by_name.at(patch_name + ".std"), as_sets(stdev(blocks, {3, 5})), 1e-4, 1e-4));
    }
  }
}

TEST(Drifting, FeatureLossGradientGoesThroughTheEncoder) {
  // With an encoder the loss is sum_f mean_i mean_F ||phi_f(x_i) - sg(phi_f(x_i) + V_fi)||^2, so
  // its gradient with respect to the generator output is -2 sum_f J_f^T V_f / (N F_f): built
  // here from the feature sets, each set's field and vector-Jacobian products.
  const int64_t n = 6;
  auto method = make_drifting({"method.n_neg=6", "method.feature_space=encoder"});
  auto gen = seeded(23);
  auto net = std::make_shared<FixedOutput>(torch::randn({n, 1, 8, 8}, gen));
  ModuleSet modules;
  modules.add("net", net);
  torch::manual_seed(3);
  auto encoder = std::make_shared<FeatureEncoderImpl>(1);
  for (auto& p : encoder->parameters()) p.set_requires_grad(false);
  const FrozenModules frozen = {{"encoder", encoder}};
  const Batch batch{torch::randn({9, 1, 8, 8}, gen), {}};
  const auto out = method.loss({modules, nullptr, &frozen, gen}, batch);
  out.loss.backward();

  const auto x = net->out.detach().clone().requires_grad_(true);
  const auto sets = drifting_feature_sets(x, encoder.get());
  std::vector<std::pair<std::string, torch::Tensor>> positive_sets;
  {
    torch::NoGradGuard no_grad;
    positive_sets = drifting_feature_sets(batch.x, encoder.get());
  }
  auto dot = torch::zeros({});
  for (size_t f = 0; f < sets.size(); ++f) {
    const auto features = sets[f].second.detach().transpose(0, 1);
    const auto v = drifting_field(features, positive_sets[f].second.transpose(0, 1), features, kTemperatures, {}, true)
                       .v.transpose(0, 1);
    dot = dot + (sets[f].second * v).sum() / static_cast<double>(n * sets[f].second.size(1));
  }
  const auto expected = -2.0 * torch::autograd::grad({dot}, {x})[0];
  EXPECT_GT(expected.abs().max().item<double>(), 0);
  EXPECT_TRUE(torch::allclose(net->out.grad(), expected, 1e-4, 1e-7)) << (net->out.grad() - expected).abs().max();
  for (const auto& p : encoder->parameters()) EXPECT_FALSE(p.grad().defined());
}

TEST(Drifting, LabelledGuidedStepIsEachGroupsOwnFieldWithAndWithoutGroupBatching) {
  // Three class groups with CFG negatives (alpha fixed at 2: weight (2 - 1)(n_neg - 1) / n_unc),
  // on the encoder's feature sets: the gradient is -2 sum_f J_f^T V_f / (rows F_f) with each
  // group's and set's field computed alone, and the logged raw sizes are their mean; the same
  // whether the step computes the groups one at a time or all in one batch.
  const int64_t groups = 3, n_neg = 4, n_pos = 5, n_unc = 2;
  auto gen = seeded(24);
  const auto generated = torch::randn({groups * n_neg, 1, 8, 8}, gen);
  const auto labels = torch::cat({torch::arange(groups).repeat_interleave(n_pos), torch::full({groups * n_unc}, groups)});
  const Batch batch{torch::randn({groups * (n_pos + n_unc), 1, 8, 8}, gen), labels};
  torch::manual_seed(3);
  auto encoder = std::make_shared<FeatureEncoderImpl>(1);
  for (auto& p : encoder->parameters()) p.set_requires_grad(false);
  const FrozenModules frozen = {{"encoder", encoder}};

  const auto x = generated.clone().requires_grad_(true);
  const auto sets = drifting_feature_sets(x, encoder.get());
  std::vector<std::pair<std::string, torch::Tensor>> positive_sets, unconditional_sets;
  {
    torch::NoGradGuard no_grad;
    positive_sets = drifting_feature_sets(batch.x.slice(0, 0, groups * n_pos), encoder.get());
    unconditional_sets = drifting_feature_sets(batch.x.slice(0, groups * n_pos), encoder.get());
  }
  const auto weights = torch::cat({torch::ones({n_neg}), torch::full({n_unc}, 1.0 * (n_neg - 1) / n_unc)});
  auto dot = torch::zeros({});
  auto raw = torch::zeros({3}, torch::kDouble);
  for (size_t f = 0; f < sets.size(); ++f)
    for (int64_t g = 0; g < groups; ++g) {
      const auto own = sets[f].second.detach().slice(0, g * n_neg, (g + 1) * n_neg).transpose(0, 1);
      const auto negatives =
          torch::cat({own, unconditional_sets[f].second.slice(0, g * n_unc, (g + 1) * n_unc).transpose(0, 1)}, 1);
      const auto positives = positive_sets[f].second.slice(0, g * n_pos, (g + 1) * n_pos).transpose(0, 1);
      const auto field = drifting_field(own, positives, negatives, kTemperatures, weights, true);
      const auto features = sets[f].second.slice(0, g * n_neg, (g + 1) * n_neg);
      dot = dot + (features * field.v.transpose(0, 1)).sum() / static_cast<double>(groups * n_neg * features.size(1));
      raw += field.raw_squared_norms.mean(1) / static_cast<double>(groups * sets.size());
    }
  const auto expected = -2.0 * torch::autograd::grad({dot}, {x})[0];
  ASSERT_GT(expected.abs().max().item<double>(), 0);

  for (const std::string batching : {"off", "on"}) {
    auto method = make_drifting({"method.n_neg=4", "method.n_pos=5", "method.n_unc=2", "method.cfg_min=2", "method.cfg_max=2",
                                 "method.feature_space=encoder", "method.group_batching=" + batching});
    auto net = std::make_shared<FixedOutput>(generated.clone(), groups);
    ModuleSet modules;
    modules.add("net", net);
    const auto out = method.loss({modules, nullptr, &frozen, gen}, batch);
    out.loss.backward();
    EXPECT_TRUE(torch::allclose(net->out.grad(), expected, 1e-4, 1e-7))
        << batching << ": " << (net->out.grad() - expected).abs().max();
    for (int64_t i = 0; i < 3; ++i)
      EXPECT_NEAR(out.parts.at("raw_v2_tau" + format_number(kTemperatures[i])).item<double>(), raw[i].item<double>(),
                  1e-5 * raw[i].item<double>())
          << batching;
  }
  // With a guidance alpha drawn per group (so weights differ between groups), batching changes
  // nothing either.
  std::vector<torch::Tensor> gradients;
  for (const std::string batching : {"off", "on"}) {
    auto method = make_drifting({"method.n_neg=4", "method.n_pos=5", "method.n_unc=2", "method.cfg_max=3",
                                 "method.feature_space=encoder", "method.group_batching=" + batching});
    auto net = std::make_shared<FixedOutput>(generated.clone(), groups);
    ModuleSet modules;
    modules.add("net", net);
    auto draws = seeded(25);
    method.loss({modules, nullptr, &frozen, draws}, batch).loss.backward();
    gradients.push_back(net->out.grad());
  }
  EXPECT_TRUE(torch::allclose(gradients[1], gradients[0], 1e-4, 1e-7)) << (gradients[1] - gradients[0]).abs().max();
}

TEST(Drifting, FeatureSpaceFollowsTheDataAndTheShippedEncoderLoads) {
  const auto drifting = [](const std::string& space) { return make_drifting({"method.feature_space=" + space}); };
  const DataInfo points{{2}, 0, 1.0}, fashion{{1, 28, 28}, 10, 0.5}, other{{3, 32, 32}, 0, 0.5};
  EXPECT_TRUE(drifting("auto").frozen_modules(points).empty());
  EXPECT_TRUE(drifting("raw").frozen_modules(fashion).empty());
  EXPECT_TRUE(testing_support::contains(user_error_message([&] { drifting("encoder").frozen_modules(points); }),
                                        "needs image data"));
  EXPECT_TRUE(testing_support::contains(user_error_message([&] { drifting("auto").frozen_modules(other); }),
                                        "onestep encoder train"));
  const auto own = make_drifting({"method.encoder=mine.safetensors"});
  EXPECT_TRUE(testing_support::contains(user_error_message([&] { own.frozen_modules(other); }), "encoder_sha256"));
  // The committed encoder passes its hash check and builds for 1 x 28 x 28 images.
  const auto specs = drifting("auto").frozen_modules(fashion);
  ASSERT_EQ(specs.size(), 1u);
  const auto encoder = std::dynamic_pointer_cast<FeatureEncoderImpl>(load_frozen_module(specs[0]));
  ASSERT_TRUE(encoder);
  torch::NoGradGuard no_grad;
  EXPECT_EQ(encoder->feature_maps(torch::zeros({2, 1, 28, 28})).back().sizes(), (std::vector<int64_t>{2, 128, 7, 7}));
}

TEST(Drifting, BatchHasOneGroupPerClassAndTheCfgNegatives) {
  Config config = drifting_config({"data.name=8gaussians", "method.n_pos=10", "method.n_unc=4", "method.cfg_max=3"});
  auto dataset = make_dataset(config);
  auto method = make_drifting({"method.n_pos=10", "method.n_unc=4", "method.cfg_max=3"});
  auto gen = seeded(5);
  const Batch batch = method.training_batch(*dataset, 3, gen);  // 3 of the 8 classes
  ASSERT_EQ(batch.x.size(0), 3 * 10 + 3 * 4);
  const auto y = batch.y;
  for (int g = 0; g < 3; ++g)
    EXPECT_TRUE((y.slice(0, g * 10, (g + 1) * 10) == y[g * 10]).all().item<bool>());
  EXPECT_TRUE((y.slice(0, 30) == 8).all().item<bool>());  // the null label
  // All classes when train.batch_size >= classes; the loss runs with guidance and samples.
  const Batch all = method.training_batch(*dataset, 256, gen);
  EXPECT_EQ(all.x.size(0), 8 * 10 + 8 * 4);
  const DataInfo info{{2}, 8, 1.45};
  ModuleSet modules = method.build_modules(drifting_config({"model.width=16", "model.depth=1"}), info);
  EXPECT_EQ(modules["net"].spec().num_extra, 1);
  const auto out = method.loss({modules, nullptr, nullptr, gen}, all);
  EXPECT_TRUE(std::isfinite(out.loss.item<double>()));
  out.loss.backward();
  const auto samples = method.sample(modules, torch::randn({5, 32}, gen), torch::arange(5), {4});
  EXPECT_EQ(samples.sizes(), (std::vector<int64_t>{5, 2}));
  EXPECT_EQ(method.count_nfe({4}).backbone, 1);
}

TEST(Drifting, QueueKeepsTheMostRecentRealSamples) {
  Config config = drifting_config({"data.name=checkerboard"});
  auto dataset = make_dataset(config);
  auto method = make_drifting({"method.n_pos=10", "method.queue_size=25"});
  auto gen = seeded(6);
  std::vector<torch::Tensor> fresh;
  for (int step = 0; step < 4; ++step) {
    auto copy = gen.clone();
    fresh.push_back(dataset->train_batch(10, copy).x);  // what the step draws
    const Batch batch = method.training_batch(*dataset, 1, gen);
    EXPECT_EQ(batch.x.size(0), std::min<int64_t>(10 * (step + 1), 25));
    EXPECT_TRUE(torch::equal(batch.x.slice(0, batch.x.size(0) - 10), fresh.back()));
  }
  const Batch last = method.training_batch(*dataset, 1, gen);
  EXPECT_TRUE(torch::equal(last.x.slice(0, 0, 5), fresh[2].slice(0, 5)));  // oldest kept: step 2's last 5
}

TEST(Drifting, RejectsBadOptions) {
  using onestep::testing_support::contains;
  EXPECT_TRUE(contains(user_error_message([] { make_drifting({"method.temperatures=0.1,-1"}); }), "-1"));
  EXPECT_TRUE(contains(user_error_message([] { make_drifting({"method.temperatures=0.1,,0.2"}); }), "temperatures"));
  EXPECT_TRUE(contains(user_error_message([] { make_drifting({"method.cfg_max=2"}); }), "n_unc"));
  EXPECT_TRUE(contains(user_error_message([] { make_drifting({"method.queue_size=10"}); }), "n_pos"));
  EXPECT_TRUE(contains(user_error_message([] { make_drifting({"method.output_init=zero"}); }), "output_init"));
  EXPECT_EQ(make_drifting({"method.temperatures=0.5, 2"}).temperatures(), (std::vector<double>{0.5, 2.0}));
}

TEST(Drifting, CoversAllEightModesAtOneNfe) {
  const auto samples = train_on_8gaussians(false, 400);
  for (const double share : mode_shares(samples)) {
    EXPECT_GT(share, 0.125 * 0.6);
    EXPECT_LT(share, 0.125 * 1.4);
  }
  const auto to_mode = std::get<0>(torch::cdist(samples, centres()).min(1));
  EXPECT_LT(to_mode.median().item<double>(), 0.35);  // the modes' std is 0.15
}

TEST(Drifting, RecoversAllModesFromACollapsedStart) {
  const auto samples = train_on_8gaussians(true, 600);
  for (const double share : mode_shares(samples)) {
    EXPECT_GT(share, 0.125 * 0.5);
    EXPECT_LT(share, 0.125 * 1.5);
  }
  const auto to_mode = std::get<0>(torch::cdist(samples, centres()).min(1));
  // Looser than from the default start (0.35; the modes' own median is 0.18): after 600 steps
  // the recovered modes are still wider (measured 0.37).
  EXPECT_LT(to_mode.median().item<double>(), 0.45);
}

class DriftingRun : public onestep::testing_support::TempFolderTest {};

TEST_F(DriftingRun, DefaultConfigTrainsOnCheckerboard) {
  // Everything at its default but the run length: energy distance after 1 step vs 300 steps, of
  // the raw weights (after 300 steps the EMA (0.999) still holds 74% of the initial weights).
  const auto energy = [&](int64_t steps) {
    Config config = drifting_config({"data.name=checkerboard", "train.steps=" + std::to_string(steps),
                                     "train.threads=1", "train.sample_every=0", "train.log_every=50",
                                     "eval.nfe=1", "eval.num=2000", "eval.use_ema=false"});
    const std::string out = path("run" + std::to_string(steps));
    train({config, out});
    std::ifstream in(out + "/metrics.jsonl");
    std::string line, last;
    while (std::getline(in, line)) last = line;
    return nlohmann::json::parse(last)["eval"][0]["energy_distance"].get<double>();
  };
  const double start = energy(1), trained = energy(300);
  RecordProperty("energy_distance_start", std::to_string(start));
  RecordProperty("energy_distance_300", std::to_string(trained));
  EXPECT_LT(trained, 0.3 * start) << "start " << start << ", after 300 steps " << trained;
}
