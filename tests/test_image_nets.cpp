// Image networks (U-Net, DiT) with the signature net(z, t, h, c) of spec §0: output shapes,
// forward-mode JVPs against central finite differences (float64, relative error < 1e-6) and
// against the double-backward JVP, tangents on z, t and h, conditional (labels including the
// null label) and unconditional; parameter gradients, and the gradient through the tangent;
// the registry's checks of options against the data's shape.
// Zero-initialised layers (adaLN-zero, residual output convs) are filled with small random
// values first, so that every weight influences the output.
#include <gtest/gtest.h>

#include "onestep/core/config.h"
#include "onestep/methods/jvp.h"
#include "onestep/nets/network.h"
#include "onestep/nets/dit.h"
#include "onestep/nets/unet.h"
#include "test_support.h"

#include <functional>
#include <string>

using namespace onestep;

namespace {

UnetOptions small_unet() {
  UnetOptions options;
  options.channels = 8;
  options.channel_mult = {1, 2};
  options.num_res_blocks = 1;
  options.attention_resolutions = {4};
  options.emb_dim = 16;
  options.heads = 2;
  return options;
}

DitOptions small_dit(bool lipschitz_variant) {
  DitOptions options;
  options.width = 32;
  options.depth = 2;
  options.heads = 4;
  options.mlp_ratio = 2;
  if (lipschitz_variant) {
    options.norm = "rmsnorm";
    options.qk_norm = true;
    options.mod_norm = true;
  }
  return options;
}

using Factory = std::function<Network(const NetSpec&)>;

struct NetKind {
  std::string name;
  Factory make;
};

std::vector<NetKind> net_kinds() {
  return {
      {"unet", [](const NetSpec& s) -> Network { return std::make_shared<UnetImpl>(s, small_unet()); }},
      {"dit", [](const NetSpec& s) -> Network { return std::make_shared<DitImpl>(s, small_dit(false)); }},
      {"dit-lipschitz", [](const NetSpec& s) -> Network { return std::make_shared<DitImpl>(s, small_dit(true)); }},
  };
}

// Builds a float64 network whose all-zero parameters are refilled with small random values.
Network make_net(const NetKind& kind, const NetSpec& spec) {
  torch::manual_seed(7);
  auto net = kind.make(spec);
  net->to(torch::kDouble);
  torch::NoGradGuard no_grad;
  for (auto& p : net->parameters())
    if (p.abs().max().item<double>() == 0) p.normal_(0, 0.2);
  return net;
}

struct Inputs {
  torch::Tensor z, t, h, c, dz, dt, dh;
};

Inputs make_inputs(const NetSpec& spec, int64_t batch) {
  const auto opts = torch::TensorOptions().dtype(torch::kDouble);
  std::vector<int64_t> shape = {batch};
  shape.insert(shape.end(), spec.in_shape.begin(), spec.in_shape.end());
  Inputs in;
  in.z = torch::randn(shape, opts);
  in.t = torch::rand({batch}, opts);
  in.h = in.t * torch::rand({batch}, opts);
  if (spec.num_classes > 0) in.c = torch::arange(batch, torch::kLong) % (spec.num_classes + 1);  // includes null
  in.dz = torch::randn(shape, opts);
  in.dt = torch::randn({batch}, opts);
  in.dh = torch::randn({batch}, opts);
  return in;
}

TensorFunction as_function(const Network& net, const torch::Tensor& c) {
  return [net, c](const std::vector<torch::Tensor>& in) { return net->forward(in[0], in[1], in[2], c); };
}

void check_jvp(const NetKind& kind, const NetSpec& spec) {
  SCOPED_TRACE(kind.name + " classes=" + std::to_string(spec.num_classes) + " channels=" +
               std::to_string(spec.in_shape[0]));
  const auto net = make_net(kind, spec);
  const auto in = make_inputs(spec, 4);
  const auto f = as_function(net, in.c);
  const auto [out, tangent] = jvp(f, {in.z, in.t, in.h}, {in.dz, in.dt, in.dh}, JvpMode::Forward, false);
  std::vector<int64_t> shape = {4};
  shape.insert(shape.end(), spec.out_shape.begin(), spec.out_shape.end());
  EXPECT_EQ(out.sizes().vec(), shape);
  EXPECT_EQ(tangent.sizes().vec(), shape);

  const double eps = 1e-6;
  torch::Tensor fd;
  {
    torch::NoGradGuard no_grad;
    const auto plus = f({in.z + eps * in.dz, in.t + eps * in.dt, in.h + eps * in.dh});
    const auto minus = f({in.z - eps * in.dz, in.t - eps * in.dt, in.h - eps * in.dh});
    fd = (plus - minus) / (2 * eps);
  }
  EXPECT_LT(((tangent - fd).norm() / fd.norm()).item<double>(), 1e-6);

  const auto [out_db, tangent_db] = jvp(f, {in.z, in.t, in.h}, {in.dz, in.dt, in.dh}, JvpMode::DoubleBackward, false);
  EXPECT_TRUE(torch::allclose(tangent_db, tangent, 1e-9, 1e-11)) << (tangent_db - tangent).abs().max();
  EXPECT_TRUE(torch::allclose(out_db.detach(), out.detach(), 0, 1e-12));

  if (spec.num_classes > 0) {  // an undefined label means the null label
    torch::NoGradGuard no_grad;
    const auto null = torch::full({4}, spec.num_classes, torch::kLong);
    EXPECT_TRUE(torch::allclose(net->forward(in.z, in.t, in.h, torch::Tensor()), net->forward(in.z, in.t, in.h, null)));
  }
}

}  // namespace

TEST(ImageNets, OutputShapesForFashionMnistAndCifarSizes) {
  UnetOptions four_levels = small_unet();
  four_levels.channel_mult = {1, 2, 2, 2};  // 28 -> 14 -> 7 -> 4 and back
  four_levels.attention_resolutions = {7};
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{1, 28, 28}, std::vector<int64_t>{3, 32, 32}}) {
    const NetSpec spec{shape, shape, 10};
    const auto in = make_inputs(spec, 2);
    torch::NoGradGuard no_grad;
    UnetImpl unet(spec, four_levels);
    DitImpl dit(spec, small_dit(false));
    const std::vector<int64_t> expected = {2, shape[0], shape[1], shape[2]};
    EXPECT_EQ(unet.forward(in.z.to(torch::kFloat), in.t.to(torch::kFloat), in.h.to(torch::kFloat), in.c).sizes().vec(),
              expected);
    EXPECT_EQ(dit.forward(in.z.to(torch::kFloat), in.t.to(torch::kFloat), in.h.to(torch::kFloat), in.c).sizes().vec(),
              expected);
  }
}

TEST(ImageNets, RegistryRejectsOptionsThatDoNotFitTheData) {
  using onestep::testing_support::contains;
  using onestep::testing_support::user_error_message;
  const auto message = [](const std::vector<std::string>& overrides, const std::vector<int64_t>& shape) {
    Config config;
    for (const auto& assignment : overrides) config.apply_override(assignment);
    return user_error_message([&] { make_network(config, {shape, shape, 0}); });
  };
  const std::vector<int64_t> fmnist = {1, 28, 28};
  const std::string attention =
      message({"model.name=unet", "model.channel_mult=1,2,2", "model.attention_resolutions=8"}, fmnist);
  EXPECT_TRUE(contains(attention, "model.attention_resolutions: 8")) << attention;
  EXPECT_TRUE(contains(attention, "levels are 28, 14, 7")) << attention;
  EXPECT_TRUE(contains(message({"model.name=unet", "model.channels=30", "model.heads=4"}, fmnist), "model.heads"));
  EXPECT_TRUE(contains(message({"model.name=dit", "model.patch_size=3"}, {1, 32, 32}), "model.patch_size = 3"));
  EXPECT_TRUE(contains(message({"model.name=unet"}, {2}), "needs image data"));
  // The sizes that do exist are accepted, including odd ones (7 = ceil(14 / 2)).
  Config config;
  config.apply_override("model.name=unet");
  config.apply_override("model.channels=8");
  config.apply_override("model.attention_resolutions=14,7");
  EXPECT_NO_THROW(make_network(config, {fmnist, fmnist, 0}));
}

TEST(ImageNets, ZeroInitialisedOutputIsZero) {
  const NetSpec spec{{1, 8, 8}, {1, 8, 8}, 0};
  const auto in = make_inputs(spec, 2);
  torch::NoGradGuard no_grad;
  for (const auto& kind : net_kinds()) {
    auto net = kind.make(spec);
    net->to(torch::kDouble);
    EXPECT_EQ(net->forward(in.z, in.t, in.h, in.c).abs().max().item<double>(), 0) << kind.name;
  }
}

TEST(ImageNets, ForwardJvpMatchesFiniteDifferencesAndDoubleBackward) {
  for (const auto& kind : net_kinds()) {
    check_jvp(kind, {{1, 8, 8}, {1, 8, 8}, 0});
    check_jvp(kind, {{3, 8, 8}, {3, 8, 8}, 3});
  }
}

TEST(ImageNets, ParameterGradientsAreDefinedAndFinite) {
  const NetSpec spec{{3, 8, 8}, {3, 8, 8}, 3};
  const auto in = make_inputs(spec, 4);
  for (const auto& kind : net_kinds()) {
    for (const bool fresh : {true, false}) {
      torch::manual_seed(7);
      auto net = fresh ? kind.make(spec) : make_net(kind, spec);
      net->to(torch::kDouble);
      (net->forward(in.z, in.t, in.h, in.c) - in.z).square().mean().backward();
      double total = 0;
      for (const auto& item : net->named_parameters()) {
        const auto& name = item.key();
        const auto& p = item.value();
        ASSERT_TRUE(p.grad().defined()) << kind.name << " " << name;
        EXPECT_TRUE(torch::isfinite(p.grad()).all().item<bool>()) << kind.name << " " << name;
        if (!fresh) {
          EXPECT_GT(p.grad().abs().max().item<double>(), 0) << kind.name << " " << name;
        }
        total += p.grad().abs().sum().item<double>();
      }
      EXPECT_GT(total, 0) << kind.name;
    }
  }
}

TEST(ImageNets, GradientThroughTheTangentAgreesBetweenModes) {
  const NetSpec spec{{1, 8, 8}, {1, 8, 8}, 3};
  for (const auto& kind : net_kinds()) {
    const auto net = make_net(kind, spec);
    const auto in = make_inputs(spec, 2);
    const auto f = as_function(net, in.c);
    std::vector<torch::Tensor> grads[2];
    const JvpMode modes[2] = {JvpMode::Forward, JvpMode::DoubleBackward};
    for (int m = 0; m < 2; ++m) {
      const auto [out, tangent] = jvp(f, {in.z, in.t, in.h}, {in.dz, in.dt, in.dh}, modes[m], /*create_graph=*/true);
      grads[m] = torch::autograd::grad({(out * tangent).sum()}, net->parameters());
    }
    for (size_t i = 0; i < grads[0].size(); ++i)
      EXPECT_TRUE(torch::allclose(grads[0][i], grads[1][i], 1e-8, 1e-10)) << kind.name << " parameter " << i;
  }
}
