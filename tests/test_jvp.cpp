// JVP oracles (spec §6): forward-mode JVPs equal central finite differences in float64
// (relative error < 1e-6) and the double-backward computation, for every network kind; the
// gradient through the tangent (needed by TVM) agrees between the two modes.
#include <gtest/gtest.h>

#include "onestep/core/config.h"
#include "onestep/methods/jvp.h"
#include "onestep/nets/network.h"

using namespace onestep;

namespace {

struct JvpCase {
  Network net;
  torch::Tensor z, t, h, c, dz, dt, dh;
};

JvpCase make_case(const std::string& model, int64_t num_classes, const std::vector<std::string>& overrides = {}) {
  Config config;
  config.apply_override("model.name=" + model);
  config.apply_override("model.width=32");
  config.apply_override("model.depth=3");
  config.apply_override("model.emb_dim=16");
  for (const auto& override : overrides) config.apply_override(override);
  torch::manual_seed(3);
  JvpCase out;
  out.net = make_network(config, {{3}, {3}, num_classes});
  out.net->to(torch::kDouble);
  const auto opts = torch::TensorOptions().dtype(torch::kDouble);
  out.z = torch::randn({4, 3}, opts);
  out.t = torch::rand({4}, opts);
  out.h = out.t * torch::rand({4}, opts);
  out.c = num_classes > 0 ? torch::tensor({int64_t{0}, int64_t{1}, num_classes, int64_t{2}}, torch::kLong) : torch::Tensor();
  out.dz = torch::randn({4, 3}, opts);
  out.dt = torch::ones({4}, opts);
  out.dh = torch::ones({4}, opts) * 0.7;
  return out;
}

TensorFunction as_function(JvpCase& k) {
  return [&k](const std::vector<torch::Tensor>& in) { return k.net->forward(in[0], in[1], in[2], k.c); };
}

void check_against_finite_differences(const std::string& model, int64_t num_classes,
                                      const std::vector<std::string>& overrides = {}) {
  JvpCase k = make_case(model, num_classes, overrides);
  const auto f = as_function(k);
  const auto [out, tangent] = jvp(f, {k.z, k.t, k.h}, {k.dz, k.dt, k.dh}, JvpMode::Forward, false);
  const double eps = 1e-6;
  const auto fd = [&] {
    torch::NoGradGuard no_grad;
    const auto plus = f({k.z + eps * k.dz, k.t + eps * k.dt, k.h + eps * k.dh});
    const auto minus = f({k.z - eps * k.dz, k.t - eps * k.dt, k.h - eps * k.dh});
    return ((plus - minus) / (2 * eps)).detach();
  }();
  const double relative = ((tangent - fd).norm() / fd.norm()).item<double>();
  EXPECT_LT(relative, 1e-6) << model;
  EXPECT_TRUE(torch::allclose(out.detach(), f({k.z, k.t, k.h}).detach(), 0, 1e-12));

  const auto [out_db, tangent_db] = jvp(f, {k.z, k.t, k.h}, {k.dz, k.dt, k.dh}, JvpMode::DoubleBackward, false);
  EXPECT_TRUE(torch::allclose(tangent_db, tangent, 1e-10, 1e-12)) << (tangent_db - tangent).abs().max();
  EXPECT_TRUE(torch::allclose(out_db.detach(), out.detach(), 0, 1e-12));
}

}  // namespace

TEST(Jvp, MlpMatchesFiniteDifferencesAndDoubleBackward) { check_against_finite_differences("mlp", 0); }
TEST(Jvp, ConditionalMlpMatchesFiniteDifferencesAndDoubleBackward) { check_against_finite_differences("mlp", 3); }
TEST(Jvp, ResidualFourierMlpMatchesFiniteDifferencesAndDoubleBackward) {
  check_against_finite_differences("mlp", 3, {"model.residual=true", "model.fourier_features=8"});
}

TEST(Jvp, GradientThroughTheTangentAgreesBetweenModes) {
  JvpCase k = make_case("mlp", 0);
  const auto f = as_function(k);
  std::vector<torch::Tensor> grads[2];
  const JvpMode modes[2] = {JvpMode::Forward, JvpMode::DoubleBackward};
  for (int m = 0; m < 2; ++m) {
    const auto [out, tangent] = jvp(f, {k.z, k.t, k.h}, {k.dz, k.dt, k.dh}, modes[m], /*create_graph=*/true);
    const auto objective = (out * tangent).sum();
    grads[m] = torch::autograd::grad({objective}, k.net->parameters());
  }
  for (size_t i = 0; i < grads[0].size(); ++i)
    EXPECT_TRUE(torch::allclose(grads[0][i], grads[1][i], 1e-9, 1e-11)) << "parameter " << i;
}

TEST(Jvp, UnusedInputGivesZeroTangent) {
  const TensorFunction f = [](const std::vector<torch::Tensor>& in) { return in[0] * 2; };
  const auto x = torch::randn({3}, torch::kDouble), y = torch::randn({3}, torch::kDouble);
  for (const auto mode : {JvpMode::Forward, JvpMode::DoubleBackward}) {
    const auto [out, tangent] = jvp(f, {x, y}, {torch::zeros_like(x), torch::ones_like(y)}, mode, false);
    EXPECT_TRUE(torch::equal(tangent, torch::zeros_like(x)));
  }
}
