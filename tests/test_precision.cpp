// Mixed precision (train.precision = bf16): the autocast scope of compat.h turns bfloat16 on
// for one device and restores the previous state; JVPs stay float32 inside it (equal to the
// JVP without autocast); every registered method (the registry drives this) computes under
// bf16 autocast a finite loss close to its float32 value at the same weights and draws, with
// float32 gradients.
#include <gtest/gtest.h>


#include "onestep/core/compat.h"
#include "onestep/core/config.h"
#include "onestep/core/registry.h"
#include "onestep/data/dataset.h"
#include "onestep/methods/jvp.h"
#include "onestep/methods/method.h"
#include "onestep/nets/network.h"
#include "test_support.h"

using namespace onestep;

namespace {

Network small_mlp() {
  Config config;
  config.apply_override("model.width=32");
  config.apply_override("model.depth=2");
  torch::manual_seed(0);
  return make_network(config, NetSpec{{2}, {2}, 0});
}

NetInput inputs() {
  auto gen = at::detail::createCPUGenerator(1);
  return {torch::randn({8, 2}, gen), torch::rand({8}, gen), torch::rand({8}, gen) * 0.5};
}

}  // namespace

TEST(Precision, AutocastScopeTurnsBf16OnAndRestores) {
  const auto net = small_mlp();
  torch::NoGradGuard no_grad;
  {
    const compat::AutocastScope bf16(c10::DeviceType::CPU, true);
    EXPECT_EQ(net->forward(inputs()).scalar_type(), torch::kBFloat16);
    {
      const compat::AutocastScope off(c10::DeviceType::CPU, false);
      EXPECT_EQ(net->forward(inputs()).scalar_type(), torch::kFloat);
    }
    EXPECT_EQ(net->forward(inputs()).scalar_type(), torch::kBFloat16);
  }
  EXPECT_EQ(net->forward(inputs()).scalar_type(), torch::kFloat);
}

TEST(Precision, JvpStaysFloat32UnderAutocast) {
  const auto net = small_mlp();
  const auto in = inputs();
  NetInput tangent;
  tangent.z = torch::ones_like(in.z);
  tangent.t = torch::ones_like(in.t);
  const auto [out, du] = network_jvp(*net, in, tangent, JvpMode::Forward, false);
  const compat::AutocastScope bf16(c10::DeviceType::CPU, true);
  const auto [out_bf16, du_bf16] = network_jvp(*net, in, tangent, JvpMode::Forward, false);
  EXPECT_EQ(out_bf16.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(out_bf16, out));
  EXPECT_TRUE(torch::equal(du_bf16, du));
}

class MethodPrecision : public ::testing::TestWithParam<std::string> {};

TEST_P(MethodPrecision, Bf16LossIsCloseToFloat32WithFloat32Gradients) {
  Config config;
  for (const auto* o : {"data.name=8gaussians", "model.width=64", "model.depth=2"}) config.apply_override(o);
  testing_support::choose_method(config, GetParam());
  config.validate();
  auto dataset = make_dataset(config);
  auto method = make_method(config);
  torch::manual_seed(0);
  auto gen = at::detail::createCPUGenerator(0);
  const DataInfo info{dataset->sample_shape(), dataset->num_classes(), 1.0};
  ModuleSet modules = method->build_modules(config, info);
  const Batch batch = method->training_batch(*dataset, 256, gen);
  const auto loss_with = [&](bool bf16) {
    auto draws = at::detail::createCPUGenerator(7);
    const compat::AutocastScope autocast(c10::DeviceType::CPU, bf16);
    return method->loss({modules, &modules, nullptr, draws}, batch).loss;
  };
  const double fp32 = loss_with(false).item<double>();
  const auto loss = loss_with(true);
  ASSERT_TRUE(std::isfinite(loss.item<double>()));
  EXPECT_EQ(loss.scalar_type(), torch::kFloat);
  EXPECT_NEAR(loss.item<double>(), fp32, 0.05 * std::abs(fp32) + 1e-6);
  loss.backward();
  for (const auto& p : modules.parameters())
    if (p.grad().defined()) {
      EXPECT_EQ(p.grad().scalar_type(), torch::kFloat);
    }
}

INSTANTIATE_TEST_SUITE_P(Registered, MethodPrecision, ::testing::ValuesIn(testing_support::registered_names("method")),
                         [](const auto& info) { return info.param; });
