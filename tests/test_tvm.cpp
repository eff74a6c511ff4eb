// Terminal Velocity Matching oracles (spec §3, §6): for every registered network, the parameter
// gradient of the terminal term equals central finite differences in float64 (the gradient
// goes through the JVP; a detached JVP gives another gradient); s = t pairs contribute nothing
// to the terminal term; the exact Gaussian flow map psi*(z, t, s) = z s_s / s_t satisfies the
// terminal velocity condition through the production term; the truncated time draw stays
// below its bound with the right shape; a short run on Gaussian data approaches the exact map
// at 1, 2 and 4 steps.
#include <gtest/gtest.h>

#include <filesystem>

#include "onestep/core/config.h"
#include "onestep/core/registry.h"
#include "onestep/methods/tvm.h"
#include "onestep/train/checkpoint.h"
#include "onestep/train/trainer.h"
#include "test_support.h"

using namespace onestep;

namespace {

constexpr double kSigma = 0.5;

torch::Tensor s_of(const torch::Tensor& t) { return ((1 - t).pow(2) * kSigma * kSigma + t.pow(2)).sqrt(); }

// F*(z, t, s) = (psi* - z) / (s - t) with psi* = z s_s / s_t; at s = t the velocity v*(z, t).
class ExactFlowMap : public NetworkImpl {
 public:
  ExactFlowMap() : NetworkImpl({{2}, {2}, 0}) {}
  torch::Tensor forward(const NetInput& in) override {
    const auto s = in.t - in.h;
    const auto map = (s_of(s) / s_of(in.t) - 1) / (-in.h);
    const auto velocity = (in.t - (1 - in.t) * kSigma * kSigma) / s_of(in.t).pow(2);
    return in.z * torch::where(in.h.abs() > 0, map, velocity).unsqueeze(1);
  }
  std::vector<torch::Tensor> output_parameters() override { return {}; }
};

Tvm make_tvm() {
  Config config;
  config.apply_override("method.name=tvm");
  return Tvm(TvmOptions::schema().read(config));
}

Network make_net(const std::string& model, const NetSpec& spec, uint64_t seed) {
  Config config;
  config.apply_override("model.name=" + model);
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"model.width", "16"}, {"model.depth", "2"}, {"model.emb_dim", "8"}, {"model.channels", "8"},
           {"model.channel_mult", "1,2"}, {"model.num_res_blocks", "1"}, {"model.heads", "2"},
           {"model.time_max_period", "10"}})
    for (const auto& spec_key : config.keys())
      if (spec_key.key == key) config.apply_override(key + "=" + value);
  torch::manual_seed(seed);
  auto net = make_network(config, spec);
  net->to(torch::kDouble);
  torch::NoGradGuard no_grad;
  for (auto& p : net->parameters())
    if (p.abs().max().item<double>() == 0) p.normal_(0, 0.2);
  return net;
}

}  // namespace

TEST(Tvm, TerminalGradientGoesThroughTheJvp) {
  const auto tvm = make_tvm();
  for (const auto* info : components("model")) {
    const std::vector<int64_t> shape = info->name == "mlp" ? std::vector<int64_t>{3} : std::vector<int64_t>{1, 8, 8};
    NetSpec spec{shape, shape, 3};
    spec.num_extra = 1;
    SCOPED_TRACE(info->name);
    auto net = make_net(info->name, spec, 1);
    auto target = make_net(info->name, spec, 2);
    const auto opts = torch::TensorOptions().dtype(torch::kDouble);
    torch::manual_seed(3);
    std::vector<int64_t> batch_shape = {4};
    batch_shape.insert(batch_shape.end(), shape.begin(), shape.end());
    const auto z = torch::randn(batch_shape, opts);
    // Long jumps and a fast time embedding, so that the path through dF/ds carries weight.
    const auto t = 0.8 + 0.2 * torch::rand({4}, opts);
    const auto s = 0.2 * torch::rand({4}, opts);
    const auto c = torch::tensor({0, 1, 3, 2}, torch::kLong);
    const auto extra = 1 + torch::rand({4, 1}, opts);
    // The stop-gradient target, held fixed at the current weights: the oracle differentiates
    // || d/ds psi(theta) - target ||² only through the flow map.
    torch::Tensor fixed_target;
    {
      const auto [psi, dpsi_ds] = tvm.flow_map_and_terminal_velocity(*net, z, t, s, c, extra);
      torch::NoGradGuard no_grad;
      fixed_target = target->forward({psi.detach(), s, torch::zeros_like(s), c, extra});
    }
    const auto objective = [&] {
      return (tvm.flow_map_and_terminal_velocity(*net, z, t, s, c, extra).second - fixed_target).pow(2).sum();
    };
    // The production term has this gradient.
    const auto params = net->parameters();
    const auto grads = torch::autograd::grad({tvm.terminal_term(*net, *target, z, t, s, c, extra).sum()}, params);
    // Directional derivative along a random direction, by central differences.
    std::vector<torch::Tensor> direction;
    double analytic = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      direction.push_back(torch::randn_like(params[i]));
      analytic += (grads[i] * direction[i]).sum().item<double>();
    }
    const auto shift = [&](double eps) {
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < params.size(); ++i) params[i].add_(eps * direction[i]);
    };
    const double eps = 1e-5;
    shift(eps);
    const double plus = objective().item<double>();
    shift(-2 * eps);
    const double minus = objective().item<double>();
    shift(eps);
    const double numeric = (plus - minus) / (2 * eps);
    EXPECT_NEAR(analytic, numeric, 1e-6 * std::abs(numeric)) << "analytic " << analytic << " numeric " << numeric;
    // A detached JVP (MeanFlow-style target) misses the path through dF/ds.
    NetInput tangent;
    tangent.h = torch::full_like(t, -1.0);
    const auto [f, df_ds] = network_jvp(*net, {z, t, t - s, c, extra}, tangent, JvpMode::Forward, false);
    const auto detached = (f + per_sample(s - t, z.dim()) * df_ds - fixed_target).pow(2).sum();
    const auto detached_grads = torch::autograd::grad({detached}, params);
    double detached_analytic = 0;
    for (size_t i = 0; i < params.size(); ++i) detached_analytic += (detached_grads[i] * direction[i]).sum().item<double>();
    // ... by at least 100x the tolerance above, so the check would catch it.
    EXPECT_GT(std::abs(detached_analytic - numeric), 1e-4 * std::abs(numeric))
        << "detached " << detached_analytic << " |F| " << f.norm().item<double>() << " |dF/ds| " << df_ds.norm().item<double>();
  }
}

TEST(Tvm, EqualTimesContributeOnlyTheFlowMatchingTerm) {
  const auto tvm = make_tvm();
  auto net = make_net("mlp", {{2}, {2}, 0}, 1);
  const auto z = torch::randn({5, 2}, torch::kDouble);
  const auto t = torch::rand({5}, torch::kDouble);
  auto s = t.clone();
  s[1] = t[1] * 0.5;  // one pair with s != t
  const auto term = tvm.terminal_term(*net, *net, z, t, s, torch::Tensor(), torch::Tensor());
  for (int64_t i = 0; i < 5; ++i) {
    if (i == 1) {
      EXPECT_GT(term[i].item<double>(), 0);
    } else {
      EXPECT_EQ(term[i].item<double>(), 0) << i;
    }
  }
  // No gradient from the s = t pairs either.
  const auto grads = torch::autograd::grad({term[0] + term[2]}, net->parameters(), {}, true, false, true);
  for (const auto& g : grads) {
    if (g.defined()) {
      EXPECT_EQ(g.abs().max().item<double>(), 0);
    }
  }
}

TEST(Tvm, ExactGaussianFlowMapSatisfiesTheTerminalCondition) {
  const auto tvm = make_tvm();
  ExactFlowMap exact;
  const auto opts = torch::TensorOptions().dtype(torch::kDouble);
  torch::manual_seed(4);
  const auto z = torch::randn({64, 2}, opts);
  const auto t = 0.1 + 0.9 * torch::rand({64}, opts);
  const auto s = t * torch::rand({64}, opts);
  const auto term = tvm.terminal_term(exact, exact, z, t, s, torch::Tensor(), torch::Tensor());
  EXPECT_LT(term.max().item<double>(), 1e-20) << term.max();
  // A wrong map (the Euler map z + (s - t) v*(z, t)) violates it.
  class EulerMap : public ExactFlowMap {
    torch::Tensor forward(const NetInput& in) override { return ExactFlowMap::forward({in.z, in.t, torch::zeros_like(in.h)}); }
  } euler;
  EXPECT_GT(tvm.terminal_term(euler, exact, z, t, s, torch::Tensor(), torch::Tensor()).mean().item<double>(), 1e-3);
}

TEST(Tvm, TruncatedTimeDrawsStayBelowTheirBound) {
  auto gen = testing_support::seeded(9);
  for (const char* kind : {"logit-normal", "uniform"}) {
    TimeSampler sampler;
    sampler.kind = kind;
    const auto upper = 0.05 + 0.95 * torch::rand({20000}, gen);
    const auto s = sampler.draw_below(upper, gen);
    EXPECT_TRUE((s <= upper).all().item<bool>()) << kind;
    EXPECT_TRUE((s >= 0).all().item<bool>()) << kind;
    // With the bound at 1 the draw is the untruncated one: mean of logit-normal(-0.4, 1) ~ 0.42.
    const auto free = sampler.draw_below(torch::ones({20000}), gen);
    EXPECT_NEAR(free.mean().item<double>(), std::string(kind) == "uniform" ? 0.5 : sampler.draw(200000, gen).mean().item<double>(),
                0.01)
        << kind;
  }
}

TEST(Tvm, ShortRunOnGaussianDataApproachesTheExactMap) {
  const auto dir = std::filesystem::temp_directory_path() / ("onestep_tvm_gaussian_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  TrainRequest request;
  for (const char* o : {"data.name=gaussian", "data.sigma=0.5", "method.name=tvm", "train.steps=3000",
                        "train.batch_size=512", "model.width=64", "model.depth=2", "train.lr=2e-3",
                        "train.lr_schedule=cosine", "train.ema_decay=0.995", "train.log_every=500",
                        "train.sample_every=0", "eval.at_end=false", "method.time_sampler=uniform"})
    request.config.apply_override(o);
  request.out_dir = dir.string();
  train(request);
  const Checkpoint checkpoint = read_checkpoint(dir.string());
  auto method = make_method(checkpoint.config);
  auto modules = method->build_modules(checkpoint.config, {checkpoint.sample_shape, 0});
  load_modules(modules, checkpoint, "ema");
  torch::manual_seed(12);
  const auto noise = torch::randn({4000, 2});
  const auto exact = noise * kSigma;  // psi*(z, 1, 0) = z s_0 / s_1
  for (const int64_t steps : {1, 2, 4}) {
    const auto x = method->sample(modules, noise, torch::Tensor(), {steps});
    const double relative = ((x - exact).pow(2).sum() / exact.pow(2).sum()).item<double>();
    RecordProperty("relative_squared_error_" + std::to_string(steps), std::to_string(relative));
    EXPECT_LT(relative, 0.01) << steps << " steps: relative squared error " << relative;
  }
  std::filesystem::remove_all(dir);
}
