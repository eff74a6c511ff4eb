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
  const auto norm = gradient_norm(flat);
  EXPECT_NEAR(norm.item<double>(), 5.0, 1e-6);
  clip_gradients(flat, norm, 6.0);  // within the bound: untouched
  EXPECT_TRUE(torch::equal(a.grad(), torch::tensor({3.0f, 0.0f})));
  clip_gradients(flat, norm, 1.0);
  EXPECT_NEAR(std::sqrt(a.grad().pow(2).sum().item<double>() + b.grad().pow(2).sum().item<double>()), 1.0, 1e-5);
  // The factor is max_norm / (norm + 1e-6) in double, applied as float, as a host scalar would be.
  EXPECT_EQ(b.grad().item<float>(), 4.0f * static_cast<float>(1.0 / (norm.item<double>() + 1e-6)));
}

TEST(Ema, FollowsTheClosedForm) {
  // With the live weights held at initial + 1 from the first update on, shadow = initial + (1 -
  // share) in every module, share the product of the decays: 0.9^5 without the warm-up, and with
  // it (1/10)(2/11)(3/12)(4/13)(5/14) = 5! 9! / 14!, below 0.9 at every one of the five updates.
  const double without_warmup = std::pow(0.9, 5), with_warmup = 120.0 * 362880.0 / 87178291200.0;
  for (const auto& [schedule, share] : {std::pair{EmaSchedule{0.9, false}, without_warmup},
                                        std::pair{EmaSchedule{0.9, true}, with_warmup}}) {
    SCOPED_TRACE(schedule.warmup ? "warm-up" : "constant decay");
    Config config;
    const NetSpec spec{{2}, {2}, 0};
    torch::manual_seed(1);
    ModuleSet live, shadow;
    live.add("net", make_network(config, spec));
    live.add("head", make_network(config, spec));
    shadow.add("net", make_network(config, spec));
    shadow.add("head", make_network(config, spec));
    std::vector<torch::Tensor> expected;
    for (const auto& p : live.parameters()) expected.push_back(p.detach().clone() + (1.0 - share));
    Ema ema(std::move(shadow), live, schedule);
    {
      torch::NoGradGuard no_grad;
      for (auto& p : live.parameters()) p.add_(1.0);
    }
    const FlatParameters live_parameters(live.named_parameters(), /*with_grads=*/false);
    for (int step = 0; step < 5; ++step) ema.update(live, live_parameters, step);
    const auto averaged = ema.modules().parameters();
    ASSERT_EQ(averaged.size(), expected.size());
    for (size_t i = 0; i < averaged.size(); ++i)
      EXPECT_TRUE(torch::allclose(averaged[i], expected[i], 1e-5, 1e-6)) << i;
    // The share that the notes report is the one the updates left.
    EXPECT_NEAR(schedule.initial_share(5), share, 1e-12);
  }
  // The warm-up hands over to the decay where (1 + n) / (10 + n) reaches it: n = 8 for 0.5, so
  // after 10 updates the share is 8! 9! / 17! times 0.5^2.
  EXPECT_NEAR(EmaSchedule({0.5, true}).initial_share(10), 40320.0 * 362880.0 / 355687428096000.0 * 0.25, 1e-15);
  EXPECT_EQ(EmaSchedule({0.999, false}).initial_share_note(473), ", still 62% the initial weights");
  EXPECT_EQ(EmaSchedule({0.999, false}).initial_share_note(3000), "");
  EXPECT_EQ(EmaSchedule({0.999, true}).initial_share_note(3), "");  // 1/10 * 2/11 * 3/12 = 0.45%
  EXPECT_EQ(EmaSchedule({0.999, true}).initial_share_note(1), "");  // 10%, not above
}
