// Every registered network (the registry drives this file: a new network is covered without
// editing it), with the generalised input of spec §0 (z, t, h, class, extra conditions,
// context): output shapes on 8x8, 28x28 and 32x32 data; forward-mode JVPs along every
// continuous input against central finite differences (float64, relative error < 1e-6) and
// against the double-backward JVP; the gradient through the tangent agrees between the two
// modes; parameter gradients exist and are finite, also under bf16 autocast; an undefined label
// is the null label; the output initialisations (zero, scaled to the data); LayerNorm and
// softmax equal in their fused and written-out forms; onestep's float32 GELU kernel against
// float64. Also the registry's checks of options against the data's shape, and the
// plain-function JVP (also from two threads at once). Zero-initialised layers (adaLN-zero,
// residual output convs) are filled with small random values first, so that every weight
// influences the output.
#include <gtest/gtest.h>

#include "onestep/core/compat.h"
#include "onestep/core/config.h"
#include "onestep/core/registry.h"
#include "onestep/methods/jvp.h"
#include "onestep/nets/gelu_kernel.h"
#include "onestep/nets/layers.h"
#include "onestep/nets/network.h"
#include "test_support.h"

#include <functional>
#include <map>
#include <string>
#include <thread>

using namespace onestep;
using onestep::testing_support::contains;
using onestep::testing_support::user_error_message;

namespace {

// Small sizes for whichever of these keys a network declares; other keys keep their defaults.
const std::vector<std::pair<std::string, std::string>> kSmall = {
    {"model.width", "32"},    {"model.depth", "2"},          {"model.emb_dim", "16"},
    {"model.channels", "8"},  {"model.channel_mult", "1,2"}, {"model.num_res_blocks", "1"},
    {"model.heads", "4"},     {"model.mlp_ratio", "2"},      {"model.attention_levels", "lowest"}};

// A variant of a registered network: its name and extra overrides.
struct Variant {
  std::string network;
  std::vector<std::string> overrides;
  std::string label() const {
    std::string out = network;
    for (const auto& o : overrides) out += " " + o;
    return out;
  }
};

// Every registered network, plus the Lipschitz-minded DiT options and the residual Fourier-feature
// MLP where they exist.
std::vector<Variant> variants() {
  std::vector<Variant> out;
  for (const auto* info : components("model")) {
    out.push_back({info->name, {}});
    const auto has = [&](const std::string& key) {
      for (const auto& spec : info->keys)
        if (spec.key == key) return true;
      return false;
    };
    if (has("model.qk_norm")) out.push_back({info->name, {"model.norm=rmsnorm", "model.qk_norm=true", "model.mod_norm=true"}});
    if (has("model.residual")) out.push_back({info->name, {"model.residual=true", "model.fourier_features=8"}});
  }
  return out;
}

Config config_of(const Variant& variant) {
  Config config;
  config.apply_override("model.name=" + variant.network);
  const auto keys = config.keys();
  for (const auto& [key, value] : kSmall)
    for (const auto& spec : keys)
      if (spec.key == key) config.apply_override(key + "=" + value);
  for (const auto& o : variant.overrides) config.apply_override(o);
  return config;
}

// A float64 network whose all-zero parameters are refilled with small random values.
Network make_net(const Variant& variant, const NetSpec& spec, bool refill = true) {
  torch::manual_seed(7);
  auto net = make_network(config_of(variant), spec);
  net->to(torch::kDouble);
  torch::NoGradGuard no_grad;
  if (refill)
    for (auto& p : net->parameters())
      if (p.abs().max().item<double>() == 0) p.normal_(0, 0.2);
  return net;
}

NetSpec spec_of(const std::vector<int64_t>& shape, int64_t classes, int64_t extra = 0, int64_t context = 0) {
  NetSpec spec;
  spec.in_shape = spec.out_shape = shape;
  spec.num_classes = classes;
  spec.num_extra = extra;
  spec.context_dim = context;
  return spec;
}

// Inputs and random tangents on every continuous field.
struct Inputs {
  NetInput value, tangent;
};

Inputs make_inputs(const NetSpec& spec, int64_t batch) {
  const auto opts = torch::TensorOptions().dtype(torch::kDouble);
  std::vector<int64_t> shape = {batch};
  shape.insert(shape.end(), spec.in_shape.begin(), spec.in_shape.end());
  Inputs in;
  in.value.z = torch::randn(shape, opts);
  in.value.t = torch::rand({batch}, opts);
  in.value.h = in.value.t * torch::rand({batch}, opts);
  if (spec.num_classes > 0) in.value.c = torch::arange(batch, torch::kLong) % (spec.num_classes + 1);  // with null
  in.tangent = {torch::randn(shape, opts), torch::randn({batch}, opts), torch::randn({batch}, opts)};
  if (spec.num_extra > 0) {
    in.value.extra = 1 + torch::rand({batch, spec.num_extra}, opts);
    in.tangent.extra = torch::randn({batch, spec.num_extra}, opts);
  }
  if (spec.context_dim > 0) {
    in.value.context = torch::randn({batch, spec.context_dim}, opts);
    in.tangent.context = torch::randn({batch, spec.context_dim}, opts);
  }
  return in;
}

// input + eps * tangent on every field that has a tangent.
NetInput moved(const Inputs& in, double eps) {
  NetInput out = in.value;
  for (auto field : {&NetInput::z, &NetInput::t, &NetInput::h, &NetInput::extra, &NetInput::context})
    if ((in.tangent.*field).defined()) out.*field = in.value.*field + eps * in.tangent.*field;
  return out;
}

void check_jvp(const Variant& variant, const NetSpec& spec) {
  SCOPED_TRACE(variant.label() + " classes=" + std::to_string(spec.num_classes) + " extra=" +
               std::to_string(spec.num_extra) + " context=" + std::to_string(spec.context_dim));
  const auto net = make_net(variant, spec);
  const auto in = make_inputs(spec, 4);
  const auto [out, tangent] = network_jvp(*net, in.value, in.tangent, JvpMode::Forward, false);
  std::vector<int64_t> shape = {4};
  shape.insert(shape.end(), spec.out_shape.begin(), spec.out_shape.end());
  EXPECT_EQ(out.sizes().vec(), shape);
  EXPECT_EQ(tangent.sizes().vec(), shape);

  const double eps = 1e-6;
  torch::Tensor fd;
  {
    torch::NoGradGuard no_grad;
    fd = (net->forward(moved(in, eps)) - net->forward(moved(in, -eps))) / (2 * eps);
  }
  EXPECT_LT(((tangent - fd).norm() / fd.norm()).item<double>(), 1e-6);

  const auto [out_db, tangent_db] = network_jvp(*net, in.value, in.tangent, JvpMode::DoubleBackward, false);
  EXPECT_TRUE(torch::allclose(tangent_db, tangent, 1e-9, 1e-11)) << (tangent_db - tangent).abs().max();
  EXPECT_TRUE(torch::allclose(out_db.detach(), out.detach(), 0, 1e-12));

  if (spec.num_classes > 0) {  // an undefined label means the null label
    torch::NoGradGuard no_grad;
    NetInput unlabelled = in.value, null = in.value;
    unlabelled.c = torch::Tensor();
    null.c = torch::full({4}, spec.num_classes, torch::kLong);
    EXPECT_TRUE(torch::allclose(net->forward(unlabelled), net->forward(null)));
  }
}

}  // namespace

TEST(Networks, EveryRegisteredNetworkIsCovered) {
  EXPECT_GE(components("model").size(), 3u);
  for (const auto& variant : variants()) EXPECT_FALSE(config_of(variant).keys().empty());
}

TEST(Networks, OutputShapesForSmallFashionMnistAndCifarSizes) {
  for (const auto& variant : variants()) {
    for (const std::vector<int64_t>& shape : {std::vector<int64_t>{1, 8, 8}, {1, 28, 28}, {3, 32, 32}}) {
      const auto spec = spec_of(shape, 10);
      const auto net = make_net(variant, spec);
      const auto in = make_inputs(spec, 2);
      torch::NoGradGuard no_grad;
      const std::vector<int64_t> expected = {2, shape[0], shape[1], shape[2]};
      EXPECT_EQ(net->forward(in.value).sizes().vec(), expected) << variant.label();
    }
  }
}

TEST(Networks, ForwardJvpMatchesFiniteDifferencesAndDoubleBackward) {
  for (const auto& variant : variants()) {
    check_jvp(variant, spec_of({1, 8, 8}, 0));
    check_jvp(variant, spec_of({3, 8, 8}, 3));
    check_jvp(variant, spec_of({1, 8, 8}, 3, /*extra=*/2, /*context=*/5));
  }
}

TEST(Networks, PointNetworksTakePointData) {
  for (const auto& variant : variants()) {
    Config config = config_of(variant);
    const auto spec = spec_of({3}, 3, 1, 2);
    try {
      make_network(config, spec);
    } catch (const UserError& e) {
      EXPECT_TRUE(contains(e.what(), "needs image data")) << variant.label() << ": " << e.what();
      continue;
    }
    check_jvp(variant, spec);
  }
}

TEST(Networks, EveryConditioningInputReachesTheOutput) {
  // The derivative of the output along each continuous input alone is non-zero, and another
  // class changes the output: no conditioning is erased on the way (an additive embedding
  // before a GroupNorm of one channel per group would be).
  const auto spec = spec_of({1, 8, 8}, 3, 1, 2);
  for (const auto& variant : variants()) {
    const auto net = make_net(variant, spec);
    const auto in = make_inputs(spec, 4);
    for (auto field : {&NetInput::t, &NetInput::h, &NetInput::extra, &NetInput::context}) {
      NetInput only;
      only.*field = in.tangent.*field;
      const auto [out, tangent] = network_jvp(*net, in.value, only, JvpMode::Forward, false);
      EXPECT_GT(tangent.abs().max().item<double>(), 1e-6 * out.abs().max().item<double>()) << variant.label();
    }
    torch::NoGradGuard no_grad;
    NetInput other = in.value;
    other.c = (in.value.c + 1) % 4;
    EXPECT_FALSE(torch::allclose(net->forward(other), net->forward(in.value))) << variant.label();
  }
}

TEST(Networks, ParameterGradientsAreDefinedAndFinite) {
  const auto spec = spec_of({3, 8, 8}, 3, 1, 2);
  for (const auto& variant : variants()) {
    for (const bool refill : {false, true}) {
      auto net = make_net(variant, spec, refill);
      const auto in = make_inputs(spec, 4);
      (net->forward(in.value) - in.value.z).square().mean().backward();
      double total = 0;
      for (const auto& item : net->named_parameters()) {
        const auto& p = item.value();
        ASSERT_TRUE(p.grad().defined()) << variant.label() << " " << item.key();
        EXPECT_TRUE(torch::isfinite(p.grad()).all().item<bool>()) << variant.label() << " " << item.key();
        if (refill) {
          EXPECT_GT(p.grad().abs().max().item<double>(), 0) << variant.label() << " " << item.key();
        }
        total += p.grad().abs().sum().item<double>();
      }
      EXPECT_GT(total, 0) << variant.label();
    }
  }
}

TEST(Layers, FusedAndWrittenOutFormsAgree) {
  // LayerNorm, softmax and attention use fused kernels outside a WrittenOutLayers scope (which
  // every JVP opens) and elementary ops inside one: the same values and gradients (float64).
  torch::manual_seed(5);
  const auto x = (torch::randn({4, 6, 9}, torch::kDouble) * 3).requires_grad_(true);
  const auto weights = torch::randn({4, 6, 9}, torch::kDouble);
  for (const auto& layer : std::vector<std::function<torch::Tensor(const torch::Tensor&)>>{
           [](const torch::Tensor& t) { return layer_norm(t); }, [](const torch::Tensor& t) { return softmax_last(t); }}) {
    const auto fused = layer(x);
    const auto fused_grad = torch::autograd::grad({(fused * weights).sum()}, {x})[0];
    torch::Tensor written, written_grad;
    {
      const WrittenOutLayers scope;
      EXPECT_TRUE(WrittenOutLayers::active());
      written = layer(x);
      written_grad = torch::autograd::grad({(written * weights).sum()}, {x})[0];
    }
    EXPECT_FALSE(WrittenOutLayers::active());
    EXPECT_TRUE(torch::allclose(fused, written, 1e-12, 1e-12));
    EXPECT_TRUE(torch::allclose(fused_grad, written_grad, 1e-10, 1e-12));
  }
  // Attention (LibTorch 2.x: its fused kernel outside the scope), with and without a causal mask.
  std::vector<torch::Tensor> qkv;
  for (int i = 0; i < 3; ++i) qkv.push_back(torch::randn({2, 3, 5, 4}, torch::kDouble).requires_grad_(true));
  const auto out_weights = torch::randn({2, 3, 5, 4}, torch::kDouble);
  for (const auto& bias : {torch::Tensor(), causal_mask(5, qkv[0].options())}) {
    const auto fused = attention(qkv[0], qkv[1], qkv[2], bias);
    const auto fused_grads = torch::autograd::grad({(fused * out_weights).sum()}, qkv);
    const WrittenOutLayers scope;
    const auto written = attention(qkv[0], qkv[1], qkv[2], bias);
    const auto written_grads = torch::autograd::grad({(written * out_weights).sum()}, qkv);
    EXPECT_TRUE(torch::allclose(fused, written, 1e-12, 1e-12)) << "mask " << bias.defined();
    for (int i = 0; i < 3; ++i)
      EXPECT_TRUE(torch::allclose(fused_grads[i], written_grads[i], 1e-10, 1e-12)) << "mask " << bias.defined();
  }
}

TEST(Layers, GeluKernelLoopsAgreeWithFloat64) {
  // gelu_kernel's loops, in every instruction set this CPU runs, against LibTorch's float64 GELU
  // (tanh) and its derivative: on a grid across the range where the function bends, random
  // values, and the tails. Measured worst cases: 1.7e-6 relative (value), 2e-6 |g| (gradient).
  torch::manual_seed(6);
  const auto x64 = torch::cat({torch::linspace(-12, 12, 24001, torch::kDouble), torch::randn({5000}, torch::kDouble) * 3,
                               torch::tensor({-1e30, -100.0, -20.0, 20.0, 100.0, 1e30}, torch::kDouble)});
  const auto g64 = torch::randn_like(x64);
  const auto x = x64.to(torch::kFloat), g = g64.to(torch::kFloat);
  const auto x_ref = x.to(torch::kDouble).requires_grad_(true);  // the float32 inputs, exactly
  const auto ref = torch::gelu(x_ref, "tanh");
  const auto dref = torch::autograd::grad({ref}, {x_ref}, {g.to(torch::kDouble)})[0];
  const auto isas = gelu_kernel::supported_isas();
  std::map<gelu_kernel::Isa, std::pair<torch::Tensor, torch::Tensor>> results;
  for (const auto isa : isas) {
    auto y = torch::empty_like(x), dx = torch::empty_like(x);
    gelu_kernel::forward(x.data_ptr<float>(), y.data_ptr<float>(), x.numel(), isa);
    gelu_kernel::backward(g.data_ptr<float>(), x.data_ptr<float>(), dx.data_ptr<float>(), x.numel(), isa);
    const auto value_error = ((y.to(torch::kDouble) - ref).abs() / (ref.detach().abs() + 1e-6)).max().item<double>();
    const auto grad_error = ((dx.to(torch::kDouble) - dref).abs() / (g.to(torch::kDouble).abs() + 1e-12)).max().item<double>();
    EXPECT_LT(value_error, 5e-6) << gelu_kernel::isa_name(isa);
    EXPECT_LT(grad_error, 5e-6) << gelu_kernel::isa_name(isa);
    results[isa] = {y, dx};
  }
  // AVX2 and AVX-512 run the same fused operations: the same bits, whichever this CPU picks.
  if (results.count(gelu_kernel::Isa::Avx512)) {
    const auto& [y2, dx2] = results.at(gelu_kernel::Isa::Avx2);
    const auto& [y5, dx5] = results.at(gelu_kernel::Isa::Avx512);
    EXPECT_TRUE(torch::equal(y2, y5));
    EXPECT_TRUE(torch::equal(dx2, dx5));
  }
  // Non-finite input stays visible (NaN; gelu(+inf) = +inf); finite input has finite gradients.
  const auto special = torch::tensor({NAN, INFINITY, -1e30f, 1e30f}, torch::kFloat);
  auto y = torch::empty_like(special), dx = torch::empty_like(special);
  const auto ones = torch::ones_like(special);
  for (const auto isa : isas) {
    gelu_kernel::forward(special.data_ptr<float>(), y.data_ptr<float>(), 4, isa);
    gelu_kernel::backward(ones.data_ptr<float>(), special.data_ptr<float>(), dx.data_ptr<float>(), 4, isa);
    EXPECT_TRUE(std::isnan(y[0].item<float>()));
    EXPECT_EQ(y[1].item<float>(), INFINITY);
    EXPECT_EQ(y[2].item<float>(), 0.0f);
    EXPECT_EQ(y[3].item<float>(), 1e30f);
    EXPECT_TRUE(std::isnan(dx[0].item<float>()));
    EXPECT_TRUE(torch::isfinite(dx.slice(0, 1)).all().item<bool>()) << dx;
  }
}

TEST(Layers, GeluOfFloat32CpuTensorsIsTheKernelWithLibTorchsHigherDerivatives) {
  // gelu_tanh on a float32 CPU tensor (several intra-op tasks and a tail): value and gradient as
  // float64; differentiated twice (create_graph) its backward is LibTorch's, so the second
  // derivative is float64's too; with train.cpu_gelu = libtorch and in a WrittenOutLayers scope
  // it is LibTorch's gelu, bit for bit.
  torch::manual_seed(7);
  const auto x = (torch::randn({3 * (1 << 15) + 5}) * 3).requires_grad_(true);
  const auto x64 = x.detach().to(torch::kDouble).requires_grad_(true);
  const auto w = torch::randn_like(x);
  const auto y = gelu_tanh(x), y64 = torch::gelu(x64, "tanh");
  EXPECT_TRUE(torch::allclose(y.to(torch::kDouble), y64.detach(), 5e-6, 1e-6));
  const auto dy = torch::autograd::grad({(y * w).sum()}, {x}, {}, true, true)[0];
  const auto dy64 = torch::autograd::grad({(y64 * w.to(torch::kDouble)).sum()}, {x64}, {}, true, true)[0];
  EXPECT_TRUE(torch::allclose(dy.to(torch::kDouble), dy64.detach(), 1e-5, 1e-5));
  const auto d2 = torch::autograd::grad({dy.sum()}, {x})[0];
  const auto d2_64 = torch::autograd::grad({dy64.sum()}, {x64})[0];
  EXPECT_TRUE(torch::allclose(d2.to(torch::kDouble), d2_64, 1e-4, 1e-4));
  EXPECT_EQ(cpu_gelu().rfind("onestep (", 0), 0u) << cpu_gelu();
  set_cpu_gelu("libtorch");
  EXPECT_EQ(cpu_gelu(), "LibTorch");
  EXPECT_TRUE(torch::equal(gelu_tanh(x), torch::gelu(x, "tanh")));
  set_cpu_gelu("onestep");
  const WrittenOutLayers scope;
  EXPECT_TRUE(torch::equal(gelu_tanh(x), torch::gelu(x, "tanh")));
}

TEST(Networks, TrainUnderBf16AutocastOnTheCpu) {
  // train.precision = bf16: a float32 network under CPU autocast gives a finite output of the
  // right shape and float32 parameter gradients (LibTorch 1.13's CPU autocast hands group_norm
  // bfloat16 inputs, which the U-Net casts back).
  const auto spec = spec_of({1, 8, 8}, 3, 1, 2);
  for (const auto& variant : variants()) {
    auto net = make_net(variant, spec);
    net->to(torch::kFloat);
    auto in = make_inputs(spec, 4);
    for (auto field : {&NetInput::z, &NetInput::t, &NetInput::h, &NetInput::extra, &NetInput::context})
      if ((in.value.*field).defined()) in.value.*field = (in.value.*field).to(torch::kFloat);
    torch::Tensor out;
    {
      const compat::AutocastScope bf16(c10::DeviceType::CPU, true);
      out = net->forward(in.value);
    }
    EXPECT_EQ(out.sizes(), in.value.z.sizes()) << variant.label();
    EXPECT_TRUE(torch::isfinite(out).all().item<bool>()) << variant.label();
    (out.to(torch::kFloat) - in.value.z).square().mean().backward();
    for (const auto& p : net->parameters()) {
      if (p.grad().defined()) {
        EXPECT_EQ(p.grad().scalar_type(), torch::kFloat) << variant.label();
      }
    }
  }
}

TEST(Networks, GradientThroughTheTangentAgreesBetweenModes) {
  const auto spec = spec_of({1, 8, 8}, 3, 1, 2);
  for (const auto& variant : variants()) {
    const auto net = make_net(variant, spec);
    const auto in = make_inputs(spec, 2);
    std::vector<torch::Tensor> grads[2];
    const JvpMode modes[2] = {JvpMode::Forward, JvpMode::DoubleBackward};
    for (int m = 0; m < 2; ++m) {
      const auto [out, tangent] = network_jvp(*net, in.value, in.tangent, modes[m], /*create_graph=*/true);
      grads[m] = torch::autograd::grad({(out * tangent).sum()}, net->parameters());
    }
    for (size_t i = 0; i < grads[0].size(); ++i)
      EXPECT_TRUE(torch::allclose(grads[0][i], grads[1][i], 1e-8, 1e-10)) << variant.label() << " parameter " << i;
  }
}

TEST(Networks, OutputInitialisationZeroAndDataScale) {
  for (const auto& variant : variants()) {
    for (const auto& shape : {std::vector<int64_t>{2}, std::vector<int64_t>{1, 8, 8}}) {
      auto spec = spec_of(shape, 0);
      Config config = config_of(variant);
      spec.output_init = OutputInit::Zero;
      Network net;
      try {
        net = make_network(config, spec);
      } catch (const UserError&) {
        continue;  // an image network on points
      }
      const auto in = make_inputs(spec, 64);
      torch::NoGradGuard no_grad;
      EXPECT_EQ(net->forward({in.value.z.to(torch::kFloat), in.value.t.to(torch::kFloat), in.value.h.to(torch::kFloat)})
                    .abs()
                    .max()
                    .item<double>(),
                0)
          << variant.label();
      // Scaled to the data: the output's standard deviation on noise at initialisation.
      spec.output_init = OutputInit::DataScale;
      for (const double data_std : {0.1, 2.5}) {
        torch::manual_seed(3);
        net = make_network(config, spec, data_std);
        std::vector<int64_t> batch_shape = {512};
        batch_shape.insert(batch_shape.end(), shape.begin(), shape.end());
        const auto z = torch::randn(batch_shape);
        const auto out = net->forward({z, torch::full({512}, 0.5), torch::full({512}, 0.5)});
        EXPECT_NEAR(out.std().item<double>() / data_std, 1.0, 0.15) << variant.label() << " std " << data_std;
      }
    }
  }
}

TEST(Networks, RegistryRejectsOptionsThatDoNotFitTheData) {
  const auto message = [](const std::vector<std::string>& overrides, const std::vector<int64_t>& shape) {
    Config config;
    for (const auto& assignment : overrides) config.apply_override(assignment);
    return user_error_message([&] { make_network(config, spec_of(shape, 0)); });
  };
  const std::vector<int64_t> fmnist = {1, 28, 28};
  const std::string attention = message({"model.name=unet", "model.channel_mult=1,2,2", "model.attention_levels=3"}, fmnist);
  EXPECT_TRUE(contains(attention, "model.attention_levels: '3'")) << attention;
  EXPECT_TRUE(contains(attention, "0..2")) << attention;
  EXPECT_TRUE(contains(message({"model.name=unet", "model.attention_levels=top"}, fmnist), "'top'"));
  EXPECT_TRUE(contains(message({"model.name=unet", "model.channels=30", "model.heads=4"}, fmnist), "model.heads"));
  EXPECT_TRUE(contains(message({"model.name=dit", "model.patch_size=3"}, {1, 32, 32}), "model.patch_size = 3"));
  EXPECT_TRUE(contains(message({"model.name=unet"}, {2}), "needs image data"));
  // Levels are relative to the network, so one config fits every image size.
  for (const auto& shape : {fmnist, std::vector<int64_t>{3, 16, 16}, std::vector<int64_t>{3, 32, 32}}) {
    Config config;
    for (const char* o : {"model.name=unet", "model.channels=8", "model.attention_levels=1,lowest"}) config.apply_override(o);
    EXPECT_NO_THROW(make_network(config, spec_of(shape, 0)));
  }
}

// Forward-mode levels are one per process in LibTorch: two threads' JVPs at once take turns, and
// each gets its own tangent.
TEST(Jvp, ThreadsTakeTurnsWithForwardLevels) {
  const TensorFunction f = [](const std::vector<torch::Tensor>& in) { return in[0].sin() * in[0]; };
  std::vector<std::string> failures(2);
  std::vector<std::thread> threads;
  for (int k = 0; k < 2; ++k)
    threads.emplace_back([&, k] {
      try {
        const auto x = torch::full({64}, 0.5 + k, torch::kDouble), v = torch::ones_like(x);
        for (int i = 0; i < 200; ++i) {
          const auto tangent = jvp(f, {x}, {v}, JvpMode::Forward, false).second;
          if (!torch::allclose(tangent, x.cos() * x + x.sin())) throw std::runtime_error("wrong tangent");
        }
      } catch (const std::exception& error) {
        failures[k] = error.what();
      }
    });
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures, std::vector<std::string>(2));
}

TEST(Jvp, UnusedInputGivesZeroTangent) {
  const TensorFunction f = [](const std::vector<torch::Tensor>& in) { return in[0] * 2; };
  const auto x = torch::randn({3}, torch::kDouble), y = torch::randn({3}, torch::kDouble);
  for (const auto mode : {JvpMode::Forward, JvpMode::DoubleBackward}) {
    const auto [out, tangent] = jvp(f, {x, y}, {torch::zeros_like(x), torch::ones_like(y)}, mode, false);
    EXPECT_TRUE(torch::equal(tangent, torch::zeros_like(x)));
  }
}
