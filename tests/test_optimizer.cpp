// Our Adam/AdamW against LibTorch's own implementations (an independent oracle), in float64
// (whole-buffer operations) and float32 (the fused CPU pass); flat parameter storage; the
// warm-up schedule, gradient clipping and the EMA closed form (and the initial weights' share).
#include <gtest/gtest.h>

#include "onestep/core/config.h"
#include "onestep/nets/network.h"
#include "onestep/train/ema.h"
#include "onestep/train/optimizer.h"

using namespace onestep;

namespace {

// Runs 20 steps of ours and LibTorch's optimizer on two parameters of `dtype`; LibTorch's runs
// in float64 from the same start, so float32 is compared within float32 rounding.
void compare_with_torch(bool decoupled, torch::ScalarType dtype) {
  torch::manual_seed(0);
  auto a = torch::randn({5, 3}, dtype).requires_grad_(true);
  auto a2 = torch::randn({4}, dtype).requires_grad_(true);
  auto b = a.detach().to(torch::kDouble).requires_grad_(true);
  auto b2 = a2.detach().to(torch::kDouble).requires_grad_(true);
  AdamOptions options;
  options.lr = 0.01;
  options.beta2 = 0.99;
  options.weight_decay = 0.1;
  options.decoupled = decoupled;
  Adam ours({{"a", a}, {"a2", a2}}, options);
  std::unique_ptr<torch::optim::Optimizer> reference;
  if (decoupled) {
    reference = std::make_unique<torch::optim::AdamW>(
        std::vector<torch::Tensor>{b, b2}, torch::optim::AdamWOptions(0.01).betas({0.9, 0.99}).weight_decay(0.1));
  } else {
    reference = std::make_unique<torch::optim::Adam>(
        std::vector<torch::Tensor>{b, b2}, torch::optim::AdamOptions(0.01).betas({0.9, 0.99}).weight_decay(0.1));
  }
  for (int step = 0; step < 20; ++step) {
    ours.zero_grad();
    reference->zero_grad();
    (a.pow(3).sin().sum() + a2.exp().sum()).backward();
    (b.pow(3).sin().sum() + b2.exp().sum()).backward();
    ours.step(0.01);
    reference->step();
  }
  const double tolerance = dtype == torch::kDouble ? 1e-12 : 1e-5;
  EXPECT_TRUE(torch::allclose(a.to(torch::kDouble), b, tolerance, tolerance)) << (a - b).abs().max();
  EXPECT_TRUE(torch::allclose(a2.to(torch::kDouble), b2, tolerance, tolerance)) << (a2 - b2).abs().max();
  EXPECT_EQ(ours.step_count(), 20);
}

}  // namespace

TEST(Optimizer, AdamMatchesLibTorch) { compare_with_torch(false, torch::kDouble); }
TEST(Optimizer, AdamWMatchesLibTorch) { compare_with_torch(true, torch::kDouble); }
TEST(Optimizer, FusedFloatAdamMatchesLibTorch) { compare_with_torch(false, torch::kFloat); }
TEST(Optimizer, FusedFloatAdamWMatchesLibTorch) { compare_with_torch(true, torch::kFloat); }

TEST(FlatParameters, ParametersAndGradientsAreViewsOfOneBuffer) {
  auto a = torch::tensor({1.0f, 2.0f}).requires_grad_(true);
  auto b = torch::tensor({{3.0f}, {4.0f}}).requires_grad_(true);
  FlatParameters flat({{"a", a}, {"b", b}});
  EXPECT_TRUE(torch::equal(flat.data(), torch::tensor({1.0f, 2.0f, 3.0f, 4.0f})));
  EXPECT_EQ(b.sizes(), (std::vector<int64_t>{2, 1}));
  (a * b.flatten() * 2).sum().backward();  // accumulates into the buffer
  EXPECT_TRUE(torch::equal(flat.grad(), torch::tensor({6.0f, 8.0f, 2.0f, 4.0f})));
  {
    torch::NoGradGuard no_grad;
    flat.data().mul_(10);
  }
  EXPECT_TRUE(torch::equal(b, torch::tensor({{30.0f}, {40.0f}})));
  // A gradient assigned by hand (as a backward that builds a graph does) is gathered back.
  a.mutable_grad() = torch::tensor({-1.0f, -2.0f});
  EXPECT_TRUE(torch::equal(flat.grad(), torch::tensor({-1.0f, -2.0f, 2.0f, 4.0f})));
  flat.grad().zero_();
  EXPECT_TRUE(torch::equal(a.grad(), torch::zeros({2})));
}

TEST(Optimizer, StateRoundTrips) {
  auto p = torch::ones({3}).requires_grad_(true);
  Adam first({{"p", p}}, {});
  p.mutable_grad() = torch::full({3}, 0.5);
  first.step(0.1);
  auto q = torch::ones({3}).requires_grad_(true);
  Adam second({{"p", q}}, {});
  second.load_state(first.state(), "test");
  EXPECT_EQ(second.step_count(), 1);
  EXPECT_TRUE(torch::equal(second.state().at("p.exp_avg"), first.state().at("p.exp_avg")));
}

TEST(Optimizer, WarmupIsLinearThenConstantOrCosine) {
  const LearningRateSchedule constant{1.0, 4, false, 104};
  EXPECT_DOUBLE_EQ(constant.at(0), 0.25);
  EXPECT_DOUBLE_EQ(constant.at(3), 1.0);
  EXPECT_DOUBLE_EQ(constant.at(100), 1.0);
  EXPECT_DOUBLE_EQ((LearningRateSchedule{1.0, 0, false, 10}.at(0)), 1.0);
  const LearningRateSchedule cosine{1.0, 4, true, 104};
  EXPECT_DOUBLE_EQ(cosine.at(3), 1.0);
  EXPECT_DOUBLE_EQ(cosine.at(4), 1.0);
  EXPECT_NEAR(cosine.at(54), 0.5, 1e-12);
  EXPECT_NEAR(cosine.at(104), 0.0, 1e-12);
}

TEST(Optimizer, ClippingBoundsTheGlobalNorm) {
  auto a = torch::zeros({2}).requires_grad_(true);
  auto b = torch::zeros({1}).requires_grad_(true);
  FlatParameters flat({{"a", a}, {"b", b}});
  a.mutable_grad() = torch::tensor({3.0f, 0.0f});
  b.mutable_grad() = torch::tensor({4.0f});
  const double norm = gradient_norm(flat).item<double>();
  EXPECT_NEAR(norm, 5.0, 1e-6);
  clip_gradients(flat, norm, 1.0);
  EXPECT_NEAR(std::sqrt(a.grad().pow(2).sum().item<double>() + b.grad().pow(2).sum().item<double>()), 1.0, 1e-5);
}

TEST(Ema, FollowsTheClosedForm) {
  Config config;
  const NetSpec spec{{2}, {2}, 0};
  torch::manual_seed(1);
  ModuleSet live, shadow;
  live.add("net", make_network(config, spec));
  live.add("head", make_network(config, spec));
  shadow.add("net", make_network(config, spec));
  shadow.add("head", make_network(config, spec));
  const auto initial = live.parameters();
  std::vector<torch::Tensor> expected;
  for (const auto& p : initial) expected.push_back(p.detach() + (1.0 - std::pow(0.9, 5)));
  Ema ema(std::move(shadow), live, 0.9);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : live.parameters()) p.add_(1.0);
  }
  const FlatParameters live_parameters(live.named_parameters(), /*with_grads=*/false);
  for (int i = 0; i < 5; ++i) ema.update(live, live_parameters);
  // shadow = initial + (1 - 0.9^5) * 1 when the live weights sit at initial + 1, in every module.
  const auto averaged = ema.modules().parameters();
  ASSERT_EQ(averaged.size(), expected.size());
  for (size_t i = 0; i < averaged.size(); ++i) EXPECT_TRUE(torch::allclose(averaged[i], expected[i], 1e-5, 1e-6)) << i;
  // The initial weights' share that the notes report: with live = initial + 1 (`initial` holds the
  // live tensors, now moved), shadow = live - share.
  EXPECT_NEAR(ema_initial_share(0.9, 5), (initial[0] - averaged[0]).mean().item<double>(), 1e-5);
  EXPECT_EQ(ema_initial_share_note(0.999, 473), ", still 62% the initial weights");
  EXPECT_EQ(ema_initial_share_note(0.999, 3000), "");
}
