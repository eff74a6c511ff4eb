// MeanFlow oracles (spec §2, §6): r = t gives exactly the Flow Matching target, and through
// the production loss exactly the Flow Matching loss and gradient; the Gaussian closed form
// satisfies the MeanFlow identity through our JVP with the (t, h) tangent, and the wrong
// tangents do not, also through the production loss (a sign error in the (t, h) mapping
// fails); the adaptive weight carries no gradient; the (t, r) sampler keeps r <= t and the
// configured share r != t; a short run on Gaussian data brings u_theta(z, 0, 1) close to
// u*(z, 0, 1) and every jump of the 1-, 2- and 4-step samplers close to the exact one.
#include <gtest/gtest.h>

#include <filesystem>

#include "onestep/core/config.h"
#include "onestep/methods/flow_matching.h"
#include "onestep/methods/jvp.h"
#include "onestep/methods/meanflow.h"
#include "onestep/train/checkpoint.h"
#include "onestep/train/trainer.h"

using namespace onestep;

namespace {

constexpr double kSigma = 0.5;

torch::Tensor s_of(const torch::Tensor& t) { return ((1 - t).pow(2) * kSigma * kSigma + t.pow(2)).sqrt(); }

// v*(z, t) and u*(z, r, t) of spec §2 for x ~ N(0, sigma^2 I), with h = t - r.
torch::Tensor exact_velocity(const torch::Tensor& z, const torch::Tensor& t) {
  return z * ((t - (1 - t) * kSigma * kSigma) / s_of(t).pow(2)).unsqueeze(1);
}
torch::Tensor exact_average_velocity(const torch::Tensor& z, const torch::Tensor& t, const torch::Tensor& h) {
  return z * ((1 - s_of(t - h) / s_of(t)) / h).unsqueeze(1);
}

// |u - (v - (t - r) du/dt)| relative to |u| with du/dt from our JVP along (v, a_t on t, a_h on h).
double identity_residual(double a_t, double a_h) {
  const auto opts = torch::TensorOptions().dtype(torch::kDouble);
  torch::manual_seed(0);
  const auto z = torch::randn({16, 2}, opts);
  const auto t = 0.2 + 0.7 * torch::rand({16}, opts);
  const auto h = t * (0.1 + 0.8 * torch::rand({16}, opts));
  const auto v = exact_velocity(z, t);
  const TensorFunction u = [](const std::vector<torch::Tensor>& in) { return exact_average_velocity(in[0], in[1], in[2]); };
  const auto [u_value, du_dt] =
      jvp(u, {z, t, h}, {v, torch::full_like(t, a_t), torch::full_like(h, a_h)}, JvpMode::Forward, false);
  const auto residual = u_value - MeanFlow::target(v, du_dt, t - h, t);
  return (residual.norm() / u_value.norm()).item<double>();
}

// A network computing u*(z, r, t) exactly (v*(z, t) at r = t), for the production loss.
class ExactAverageVelocity : public NetworkImpl {
 public:
  ExactAverageVelocity() : NetworkImpl({{2}, {2}, 0}) {}
  torch::Tensor forward(const NetInput& in) override {
    const auto safe_h = torch::where(in.h > 0, in.h, torch::ones_like(in.h));
    return torch::where((in.h > 0).unsqueeze(1), exact_average_velocity(in.z, in.t, safe_h), exact_velocity(in.z, in.t));
  }
  std::vector<torch::Tensor> output_parameters() override { return {}; }
};

MeanFlow make_meanflow(const std::vector<std::string>& overrides) {
  Config config;
  for (const auto& o : overrides) config.apply_override(o);
  return MeanFlow(MeanFlowOptions::schema().read(config));
}

// A small float64 MLP for the loss-level checks.
Network small_mlp() {
  Config config;
  for (const char* o : {"model.width=16", "model.depth=2", "model.emb_dim=8"}) config.apply_override(o);
  torch::manual_seed(5);
  auto net = make_network(config, {{2}, {2}, 0});
  net->to(torch::kDouble);
  return net;
}

// Points on the Gaussian path in float64: z_t from the exact marginal, r < t.
struct GaussianDraw {
  PathPoint point;
  torch::Tensor r;
};
GaussianDraw gaussian_draw(int64_t n) {
  const auto opts = torch::TensorOptions().dtype(torch::kDouble);
  torch::manual_seed(1);
  const auto x = torch::randn({n, 2}, opts) * kSigma;
  const auto t = 0.2 + 0.7 * torch::rand({n}, opts);
  const auto e = torch::randn({n, 2}, opts);
  const auto r = t * (0.1 + 0.8 * torch::rand({n}, opts));
  return {{t, e, interpolate(x, e, t), e - x}, r};
}

std::vector<torch::Tensor> gradients(const torch::Tensor& loss, NetworkImpl& net) {
  return torch::autograd::grad({loss}, net.parameters(), {}, /*retain_graph=*/true);
}

}  // namespace

TEST(MeanFlow, EqualTimesGiveExactlyTheFlowMatchingTarget) {
  const auto v = torch::randn({8, 2});
  const auto du_dt = torch::randn({8, 2}) * 100;
  const auto t = torch::rand({8});
  EXPECT_TRUE(torch::equal(MeanFlow::target(v, du_dt, t, t), v));
}

TEST(MeanFlow, GaussianClosedFormSatisfiesTheIdentity) {
  // Tangent (v, 0, 1) on (z, r, t) is 1 on t and 1 on h = t - r.
  EXPECT_LT(identity_residual(1, 1), 1e-10);
  // The three wrong tangents of the paper's ablation break it.
  EXPECT_GT(identity_residual(0, 0), 1e-2);   // (v, 0, 0)
  EXPECT_GT(identity_residual(0, -1), 1e-2);  // (v, 1, 0)
  EXPECT_GT(identity_residual(1, 0), 1e-2);   // (v, 1, 1)
}

TEST(MeanFlow, LossWithEqualTimesIsTheFlowMatchingLoss) {
  // The same draws (path points and labels) through both production losses.
  auto net = small_mlp();
  const auto draw = gaussian_draw(64);
  Config fm_config;
  fm_config.apply_override("method.name=fm");
  const FlowMatching fm(FlowMatchingOptions::schema().read(fm_config));
  const auto meanflow = make_meanflow({"method.adaptive_p=0"});
  const auto fm_loss = fm.loss_at(*net, draw.point, torch::Tensor()).loss;
  const auto mf_loss = meanflow.loss_at(*net, draw.point, draw.point.t, torch::Tensor(), torch::Tensor()).loss;
  EXPECT_NEAR(mf_loss.item<double>(), fm_loss.item<double>(), 1e-12 * fm_loss.item<double>());
  const auto fm_grads = gradients(fm_loss, *net), mf_grads = gradients(mf_loss, *net);
  for (size_t i = 0; i < fm_grads.size(); ++i) EXPECT_TRUE(torch::allclose(mf_grads[i], fm_grads[i], 1e-10, 1e-12)) << i;
}

TEST(MeanFlow, ProductionLossVanishesAtTheExactAverageVelocityOnlyWithTheRightTangent) {
  // With the marginal velocity v* as the z-tangent, the target v* - (t - r) du/dt equals u*
  // exactly, so the loss of the exact network is zero up to rounding; a sign error in the
  // (t, h) tangent mapping, or any of the wrong tangents, makes it large.
  auto draw = gaussian_draw(64);
  draw.point.v_t = exact_velocity(draw.point.z_t, draw.point.t);
  ExactAverageVelocity net;
  const auto loss_with = [&](const std::string& tangent) {
    const auto method = make_meanflow({"method.adaptive_p=0", "method.tangent=" + tangent});
    return method.loss_at(net, draw.point, draw.r, torch::Tensor(), torch::Tensor()).loss.item<double>();
  };
  const double scale = exact_average_velocity(draw.point.z_t, draw.point.t, draw.point.t - draw.r).pow(2).sum(1).mean().item<double>();
  EXPECT_LT(loss_with("v,0,1"), 1e-20 * scale + 1e-24);
  for (const char* wrong : {"v,0,0", "v,1,0", "v,1,1"}) EXPECT_GT(loss_with(wrong), 1e-4 * scale) << wrong;
}

TEST(MeanFlow, ModelTangentTargetsTheMarginalVelocityAtTheExactNetwork) {
  // With the network's own velocity u(z, t, t) = v* as the z-tangent, the identity makes
  // u* + (t - r) du*/dt = v*, so the loss of the exact network against the conditional velocity
  // e - x is |v* - (e - x)|^2 for every r: a closed form. The conditional tangent gives another
  // value (its du/dt carries (e - x - v*) . d_z u*).
  const auto draw = gaussian_draw(64);
  ExactAverageVelocity net;
  const auto loss_with = [&](const std::string& velocity) {
    const auto method = make_meanflow({"method.adaptive_p=0", "method.tangent_velocity=" + velocity});
    return method.loss_at(net, draw.point, draw.r, torch::Tensor(), torch::Tensor()).loss.item<double>();
  };
  const double closed_form =
      (exact_velocity(draw.point.z_t, draw.point.t) - draw.point.v_t).pow(2).sum(1).mean().item<double>();
  EXPECT_NEAR(loss_with("model"), closed_form, 1e-10 * closed_form);
  EXPECT_GT(std::abs(loss_with("conditional") - closed_form), 1e-3 * closed_form);
}

TEST(MeanFlow, AdaptiveWeightCarriesNoGradient) {
  auto net = small_mlp();
  const auto draw = gaussian_draw(64);
  const auto method = make_meanflow({"method.adaptive_p=1", "method.adaptive_c=1e-3"});
  const auto loss = method.loss_at(*net, draw.point, draw.r, torch::Tensor(), torch::Tensor()).loss;
  // The same loss by hand, with the weight detached.
  const auto& t = draw.point.t;
  const auto [u, du_dt] =
      method.average_velocity_and_time_derivative(*net, draw.point.z_t, draw.r, t, torch::Tensor(), draw.point.v_t);
  const auto error = (u - MeanFlow::target(draw.point.v_t, du_dt, draw.r, t)).pow(2).sum(1);
  const auto weight = (error.detach() + 1e-3).pow(-1.0);
  const auto by_hand = (weight * error).mean();
  EXPECT_NEAR(loss.item<double>(), by_hand.item<double>(), 1e-12);
  const auto grads = gradients(loss, *net), expected = gradients(by_hand, *net);
  for (size_t i = 0; i < grads.size(); ++i) EXPECT_TRUE(torch::allclose(grads[i], expected[i], 1e-9, 1e-12)) << i;
  // A weight that kept its gradient would give another gradient: d(L / (L + c)) = c / (L + c)^2 dL.
  const auto attached = (error / (error + 1e-3)).mean();
  const auto other = gradients(attached, *net);
  double difference = 0;
  for (size_t i = 0; i < grads.size(); ++i) difference += (grads[i] - other[i]).abs().sum().item<double>();
  EXPECT_GT(difference, 1e-6);
}

TEST(MeanFlow, TimePairsKeepROrderedAndTheConfiguredShare) {
  const auto method = make_meanflow({"method.ratio=0.25"});
  auto gen = at::detail::createCPUGenerator(7);
  const auto [t, r] = method.sample_time_pair(40000, gen);
  EXPECT_TRUE((r <= t).all().item<bool>());
  EXPECT_TRUE((r >= 0).all().item<bool>());
  EXPECT_TRUE((t <= 1).all().item<bool>());
  // Share of r != t: 0.25 with binomial std sqrt(0.25*0.75/40000) = 0.0022.
  EXPECT_NEAR(r.ne(t).to(torch::kDouble).mean().item<double>(), 0.25, 0.011);
}

TEST(MeanFlow, UniformGapSamplerDrawsGapsUniformlyInsideTheUnitInterval) {
  for (const char* sampler : {"uniform", "logit-normal"}) {
    const auto method = make_meanflow({"method.ratio=1", "method.gap_sampler=uniform-gap",
                                       std::string("method.time_sampler=") + sampler});
    auto gen = at::detail::createCPUGenerator(11);
    const auto [t, r] = method.sample_time_pair(40000, gen);
    EXPECT_TRUE((r >= 0).all().item<bool>()) << sampler;
    EXPECT_TRUE((t <= 1).all().item<bool>()) << sampler;
    const auto gap = (t - r).to(torch::kDouble);
    // U(0, 1): mean 1/2 (std 0.0014 here), P(gap > 0.9) = 0.1 (std 0.0015), against 0.01 for two sorted uniform draws.
    EXPECT_NEAR(gap.mean().item<double>(), 0.5, 0.007) << sampler;
    EXPECT_NEAR((gap > 0.9).to(torch::kDouble).mean().item<double>(), 0.1, 0.008) << sampler;
  }
}

TEST(MeanFlow, ShortRunOnGaussianDataApproachesTheExactAverageVelocity) {
  const auto dir = std::filesystem::temp_directory_path() / ("onestep_meanflow_gaussian_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  TrainRequest request;
  for (const char* o : {"data.name=gaussian", "data.sigma=0.5", "method.name=meanflow", "train.steps=4000",
                        "train.batch_size=1024", "model.width=64", "model.depth=2", "train.lr=2e-3",
                        "train.lr_schedule=cosine", "train.ema_decay=0.995", "train.log_every=500",
                        "train.sample_every=0", "eval.at_end=false", "eval.nfe=1", "method.ratio=0.5",
                        "method.time_sampler=uniform", "method.adaptive_p=0"})
    request.config.apply_override(o);
  request.out_dir = dir.string();
  train(request);
  const Checkpoint checkpoint = read_checkpoint(dir.string());
  auto method = make_method(checkpoint.config);
  auto modules = method->build_modules(checkpoint.config, {checkpoint.sample_shape, 0});
  load_modules(modules, checkpoint, "ema");
  auto* net = &modules["net"];
  torch::NoGradGuard no_grad;
  torch::manual_seed(11);
  // Every interval of the 1-, 2- and 4-step grids, (r, t): the sampler's jump
  // z_r = z_t - (t - r) u(z_t, r, t) against the exact one z_t s_r / s_t. (u itself is small and
  // hard to learn where v changes sign near t = 0.2, but there it is multiplied by t - r.)
  const std::vector<std::pair<double, double>> intervals = {{0, 1}, {0.5, 1}, {0, 0.5}, {0.75, 1}, {0.5, 0.75},
                                                            {0.25, 0.5}, {0, 0.25}};
  for (const auto& [r, t] : intervals) {
    const auto tt = torch::full({4000}, t, torch::kDouble), hh = torch::full({4000}, t - r, torch::kDouble);
    const auto z = torch::randn({4000, 2}, torch::kDouble) * s_of(tt).unsqueeze(1);  // exact marginal at t
    const auto u = net->forward({z.to(torch::kFloat), tt.to(torch::kFloat), hh.to(torch::kFloat)});
    const auto jump = z - (t - r) * u.to(torch::kDouble);
    const auto exact = z * (s_of(tt - hh) / s_of(tt)).unsqueeze(1);
    const double relative = ((jump - exact).pow(2).sum() / exact.pow(2).sum()).item<double>();
    RecordProperty("jump_error_" + std::to_string(r) + "_" + std::to_string(t), std::to_string(relative));
    EXPECT_LT(relative, 0.01) << "relative squared error of the jump " << t << " -> " << r << ": " << relative;
  }
  // u(z, 0, 1) itself, the one-step generator.
  const auto z = torch::randn({4000, 2});
  const auto ones = torch::ones({4000});
  const auto u = net->forward({z, ones, ones});
  const auto exact = z * (1 - kSigma);  // u*(z, 0, 1) = z (1 - s_0 / s_1)
  const double relative = ((u - exact).pow(2).sum() / exact.pow(2).sum()).item<double>();
  RecordProperty("relative_squared_error_u_0_1", std::to_string(relative));
  EXPECT_LT(relative, 0.02) << "relative squared error of u(z, 0, 1): " << relative;
  std::filesystem::remove_all(dir);
}

TEST(MeanFlow, GuidanceIsFoldedOnlyInsideTheIntervalAndForKeptLabels) {
  const auto method =
      make_meanflow({"method.cfg_omega=2.0", "method.cfg_kappa=0.5", "method.cfg_t_lo=0.2", "method.cfg_t_hi=0.8"});
  const auto v_t = torch::full({4, 2}, 1.0), v_cond = torch::full({4, 2}, 3.0), v_uncond = torch::full({4, 2}, 5.0);
  const auto t = torch::tensor({0.5, 0.1, 0.9, 0.5});
  const auto dropped = torch::tensor({false, false, false, true});
  const auto folded = method.fold_guidance(v_t, v_cond, v_uncond, t, dropped);
  // 2*1 + 0.5*3 + (1 - 2 - 0.5)*5 = -4 for the first sample; the others keep v_t.
  EXPECT_TRUE(torch::allclose(folded, torch::tensor({-4.0, -4.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0}).reshape({4, 2})));
}
