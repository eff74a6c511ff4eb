// Transition Matching oracles (spec §4, §6), against the Gaussian closed form of spec §2: for
// data x ~ N(0, sigma^2 I) and z_t = (1 - t) x + t e, the step Y = e - x given z_t is
// N(v*(z_t, t), tau_t^2 I) with v* = z (t - (1 - t) sigma^2) / s_t^2, tau_t = sigma / s_t and
// s_t^2 = (1 - t)^2 sigma^2 + t^2. The exact head of the inner path Y_s = (1 - s) Y_0 + s Y is
// then g*(y, s) = m + (y - s m) (s tau^2 - (1 - s)) / V_s with V_s = (1 - s)^2 + s^2 tau^2, and
// its flow-matching loss is the residual variance tau^2 / V_s per coordinate, whose integral
// over s ~ U(0, 1) is (pi / 2) tau.
//  - DTM's production loss with the exact backbone and head equals D (pi / 2) E_t[tau_t]; a head
//    for the wrong latent (x - e) or the reversed inner path scores worse;
//  - DTM's sampler with the exact modules turns noise into N(0, sigma^2) in 1 and 2 transitions;
//  - the Euler-mean identity: after a short training run on gaussian data the mean of many head
//    samples at a fixed z_t is v*(z_t, t), and their spread tau_t;
//  - patch tokens follow dit's layout; DTM on images (dit backbone, head per patch token) trains
//    and samples, with CFG, on CPU;
//  - the causal backbone of ARTM and FHTM never looks ahead: changing a token changes no earlier
//    token's output, on points (one token per coordinate) and on images (patches); decoding
//    with its key-value cache, in chunks, gives the full pass's outputs (float64);
//  - ARTM and FHTM train and sample, with CFG, on points and images, and count one backbone
//    pass per generated token;
//  - ARTM's training pairs: with fresh noise the two states' noises are uncorrelated, with
//    shared noise they are one draw (z_{t'} - x = (t' / t) (z_t - x)).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "onestep/core/config.h"
#include "onestep/methods/autoregressive_transition.h"
#include "onestep/methods/transition_matching.h"
#include "onestep/nets/causal_transformer.h"
#include "onestep/train/checkpoint.h"
#include "onestep/train/trainer.h"
#include "test_support.h"

using namespace onestep;

namespace {

constexpr double kSigma = 0.5;

torch::Tensor s_of(const torch::Tensor& t) { return ((1 - t).pow(2) * kSigma * kSigma + t.pow(2)).sqrt(); }
torch::Tensor v_star(const torch::Tensor& z, const torch::Tensor& t) {
  return z * ((t - (1 - t) * kSigma * kSigma) / s_of(t).pow(2)).unsqueeze(1);
}

// The exact backbone's features: [z, t].
class ExactBackbone : public NetworkImpl {
 public:
  ExactBackbone() : NetworkImpl({{2}, {3}, 0}) {}
  torch::Tensor forward(const NetInput& in) override { return torch::cat({in.z, in.t.unsqueeze(1)}, 1); }
  std::vector<torch::Tensor> output_parameters() override { return {}; }
};

// The exact head g*(y, s | z, t); `latent_sign` -1 models the latent x - e, `reversed` the
// inner path Y_s = s Y_0 + (1 - s) Y (both wrong).
class ExactHead : public NetworkImpl {
 public:
  explicit ExactHead(double latent_sign = 1, bool reversed = false)
      : NetworkImpl({{2}, {2}, 0, 0, 3}), latent_sign_(latent_sign), reversed_(reversed) {}
  torch::Tensor forward(const NetInput& in) override {
    const auto z = in.context.slice(1, 0, 2), t = in.context.select(1, 2);
    const auto m = latent_sign_ * v_star(z, t);
    const auto tau2 = (kSigma * kSigma / s_of(t).pow(2)).unsqueeze(1);
    const auto s = (reversed_ ? 1 - in.t : in.t).unsqueeze(1);
    const auto variance = (1 - s).pow(2) + s.pow(2) * tau2;
    const auto g = m + (in.z - s * m) * (s * tau2 - (1 - s)) / variance;
    return reversed_ ? -g : g;
  }
  std::vector<torch::Tensor> output_parameters() override { return {}; }

 private:
  double latent_sign_;
  bool reversed_;
};

ModuleSet exact_modules(double latent_sign = 1, bool reversed = false) {
  ModuleSet modules;
  modules.add("backbone", std::make_shared<ExactBackbone>());
  modules.add("head", std::make_shared<ExactHead>(latent_sign, reversed));
  return modules;
}

Dtm default_dtm() {
  Config config;
  config.apply_override("method.name=dtm");
  return Dtm(DtmOptions::schema().read(config), 0);
}

}  // namespace

TEST(TransitionMatching, ExactKernelLossIsTheClosedFormMinimum) {
  auto dtm = default_dtm();
  auto gen = onestep::testing_support::seeded(3);
  const int64_t n = 40000;
  const auto x = torch::randn({n, 2}, gen) * kSigma;
  const auto t = torch::rand({n}, gen);
  const double exact = dtm.loss_at(exact_modules(), x, t, torch::Tensor(), gen).loss.item<double>();
  // D (pi / 2) E_t[sigma / s_t] for t ~ U(0, 1), by the midpoint rule.
  const auto grid = (torch::arange(100000, torch::kDouble) + 0.5) / 100000.0;
  const double closed_form = 2 * M_PI / 2 * (kSigma / s_of(grid)).mean().item<double>();
  RecordProperty("exact_loss", std::to_string(exact));
  RecordProperty("closed_form", std::to_string(closed_form));
  EXPECT_NEAR(exact / closed_form, 1.0, 0.02) << exact << " vs " << closed_form;
  const double wrong_latent = dtm.loss_at(exact_modules(-1), x, t, torch::Tensor(), gen).loss.item<double>();
  const double reversed_path = dtm.loss_at(exact_modules(1, true), x, t, torch::Tensor(), gen).loss.item<double>();
  EXPECT_GT(wrong_latent, 1.3 * closed_form);
  EXPECT_GT(reversed_path, 1.3 * closed_form);
}

TEST(TransitionMatching, ExactKernelSamplesTheDataInAnyNumberOfTransitions) {
  auto dtm = default_dtm();
  const auto modules = exact_modules();
  torch::manual_seed(5);
  const auto noise = torch::randn({20000, 2});
  for (const int64_t steps : {1, 2, 4}) {
    const SamplingPlan plan{steps, 100};
    EXPECT_EQ(dtm.count_nfe(plan).backbone, steps);
    EXPECT_EQ(dtm.count_nfe(plan).head, steps * 100);
    const auto x = dtm.sample(modules, noise, torch::Tensor(), plan);
    EXPECT_NEAR(x.std(0).mean().item<double>(), kSigma, 0.02) << steps << " transitions";
    EXPECT_NEAR(x.mean(0).abs().max().item<double>(), 0.0, 0.02) << steps << " transitions";
    // The step is random beyond the noise, yet a sample is a function of its noise.
    EXPECT_TRUE(torch::equal(x, dtm.sample(modules, noise, torch::Tensor(), plan)));
  }
}

TEST(TransitionMatching, ShortRunHeadMeanIsTheMarginalVelocity) {
  const auto dir = std::filesystem::temp_directory_path() / ("onestep_dtm_gaussian_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  TrainRequest request;
  for (const char* o : {"data.name=gaussian", "data.sigma=0.5", "method.name=dtm", "train.steps=2000",
                        "train.batch_size=256", "model.width=64", "model.depth=2", "train.lr=2e-3",
                        "train.lr_schedule=cosine", "train.ema_decay=0.995", "train.log_every=500",
                        "train.sample_every=0", "eval.at_end=false", "method.time_sampler=uniform", "train.threads=1"})
    request.config.apply_override(o);
  request.out_dir = dir.string();
  train(request);
  const Checkpoint checkpoint = read_checkpoint(dir.string());
  auto method = make_method(checkpoint.config);
  auto& dtm = dynamic_cast<Dtm&>(*method);
  auto modules = dtm.build_modules(checkpoint.config, {checkpoint.sample_shape, 0});
  load_modules(modules, checkpoint, "ema");
  torch::NoGradGuard no_grad;
  auto gen = onestep::testing_support::seeded(9);
  const int64_t draws = 4000;
  for (const double time : {1.0, 0.6, 0.3}) {
    // Points at one to one and a half standard deviations of z_t (s_t per coordinate).
    for (const auto& point : {std::vector<float>{0.8f, -0.4f}, std::vector<float>{-1.2f, 0.3f}}) {
      const auto t = torch::full({draws}, time);
      const auto z = (torch::tensor(point) * s_of(torch::tensor(time))).unsqueeze(0).expand({draws, 2}).contiguous();
      const auto h = dtm.features(modules["backbone"], z, t, torch::Tensor()).flatten(0, 1);
      const auto y = sample_head(modules["head"], h, torch::Tensor(), 1.0, 2, 16, gen);
      const auto expected = v_star(z.slice(0, 0, 1), t.slice(0, 0, 1)).squeeze(0);
      const double tau = kSigma / s_of(torch::tensor(time)).item<double>();
      const double mean_error = (y.mean(0) - expected).abs().max().item<double>();
      const double spread = y.std(0).mean().item<double>();
      // Monte Carlo error of the mean: tau / sqrt(4000) < 0.02; the rest is the short run's.
      EXPECT_LT(mean_error, 0.1) << "t = " << time << " mean " << y.mean(0) << " v* " << expected;
      EXPECT_NEAR(spread / tau, 1.0, 0.2) << "t = " << time;
    }
  }
  std::filesystem::remove_all(dir);
}

TEST(TransitionMatching, PatchTokensFollowTheDitLayout) {
  const Tokenizer tokenizer{2};
  // Pixel (c, i, j) holds 100 * patch index + 10 * (position in patch) + c.
  auto image = torch::zeros({1, 3, 4, 6});
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j = 0; j < 6; ++j) image[0][c][i][j] = 100 * ((i / 2) * 3 + j / 2) + 10 * ((i % 2) * 2 + j % 2) + c;
  const auto tokens = tokenizer.to_tokens(image);
  ASSERT_EQ(tokens.sizes(), (std::vector<int64_t>{1, 6, 12}));
  for (int64_t n = 0; n < 6; ++n)
    for (int64_t k = 0; k < 12; ++k) EXPECT_EQ(tokens[0][n][k].item<float>(), 100 * n + 10 * (k / 3) + k % 3);
  EXPECT_TRUE(torch::equal(tokenizer.from_tokens(tokens, {3, 4, 6}), image));
  const auto points = torch::randn({5, 2});
  EXPECT_EQ(tokenizer.to_tokens(points).sizes(), (std::vector<int64_t>{5, 1, 2}));
  EXPECT_TRUE(torch::equal(tokenizer.from_tokens(tokenizer.to_tokens(points), {2}), points));
}

TEST(TransitionMatching, DtmOnImagesTrainsAndSamplesOnCpu) {
  Config config;
  for (const char* o : {"method.name=dtm", "model.name=dit", "model.width=32", "model.depth=2", "model.heads=2",
                        "method.feature_dim=16", "method.head_width=16", "method.cfg_scale=2"})
    config.apply_override(o);
  Dtm dtm(DtmOptions::schema().read(config), token_patch_size(config));
  torch::manual_seed(1);
  const DataInfo data{{1, 8, 8}, 3, 0.5};
  auto modules = dtm.build_modules(config, data);
  auto gen = onestep::testing_support::seeded(2);
  const auto x = torch::rand({16, 1, 8, 8}, gen) * 2 - 1;
  const auto labels = torch::arange(16) % 3;
  const auto params = modules.parameters();
  torch::optim::Adam optimizer(params, torch::optim::AdamOptions(3e-3));
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    optimizer.zero_grad();
    auto fixed = onestep::testing_support::seeded(4);  // the same draws each step: the loss must fall
    const auto loss = dtm.loss_at(modules, x, torch::full({16}, 0.7), labels, fixed).loss;
    loss.backward();
    optimizer.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  EXPECT_LT(last, 0.9 * first);
  const auto samples = dtm.sample(modules, torch::randn({6, 1, 8, 8}), torch::arange(6) % 3, {3, 2});
  EXPECT_EQ(samples.sizes(), (std::vector<int64_t>{6, 1, 8, 8}));
  EXPECT_TRUE(torch::isfinite(samples).all().item<bool>());
}

namespace {

// A causal transformer (width 32, 4 heads, 3 classes, seeded) from samples of `in_shape` to `out_shape`.
Network small_causal(const std::vector<int64_t>& in_shape, const std::vector<int64_t>& out_shape, int depth, int seed) {
  Config config;
  for (const std::string& o : {std::string("model.name=causal"), std::string("model.width=32"),
                               "model.depth=" + std::to_string(depth), std::string("model.heads=4")})
    config.apply_override(o);
  NetSpec spec;
  spec.in_shape = in_shape;
  spec.out_shape = out_shape;
  spec.num_classes = 3;
  torch::manual_seed(seed);
  return make_network(config, spec);
}

// The shape of a batch of `b` samples of `shape`.
std::vector<int64_t> batch_of(int64_t b, const std::vector<int64_t>& shape) {
  std::vector<int64_t> out = {b};
  out.insert(out.end(), shape.begin(), shape.end());
  return out;
}

}  // namespace

TEST(TransitionMatching, CausalBackboneNeverLooksAhead) {
  const Tokenizer patches{2};
  for (const auto& shape : {std::vector<int64_t>{6}, std::vector<int64_t>{1, 8, 8}}) {
    auto net = small_causal(shape, shape.size() == 1 ? std::vector<int64_t>{6 * 3} : std::vector<int64_t>{2, 8, 8}, 2, 2);
    torch::NoGradGuard no_grad;
    const auto z = torch::randn(batch_of(4, shape));
    const NetInput input{z, torch::rand({4}), torch::rand({4}), torch::arange(4) % 4};
    // Outputs per token: points 3 values per coordinate, images the patches' values.
    const auto per_token = [&](const torch::Tensor& out) {
      return shape.size() == 1 ? out.reshape({4, 6, 3}) : patches.to_tokens(out);
    };
    const auto base = per_token(net->forward(input));
    const int64_t tokens = base.size(1);
    for (int64_t k = 0; k < tokens; ++k) {
      auto changed_tokens = shape.size() == 1 ? z.reshape({4, 6, 1}).clone() : patches.to_tokens(z).clone();
      changed_tokens.select(1, k).add_(1.5);
      NetInput changed = input;
      changed.z = shape.size() == 1 ? changed_tokens.reshape(z.sizes()) : patches.from_tokens(changed_tokens, shape);
      const auto out = per_token(net->forward(changed));
      EXPECT_TRUE(torch::equal(out.slice(1, 0, k), base.slice(1, 0, k))) << "token " << k;
      EXPECT_FALSE(torch::allclose(out.select(1, k), base.select(1, k))) << "token " << k;
    }
  }
}

TEST(TransitionMatching, CachedDecodingEqualsTheFullPass) {
  const Tokenizer patches{2};
  for (const auto& shape : {std::vector<int64_t>{7}, std::vector<int64_t>{2, 8, 4}}) {
    auto net = small_causal(shape, shape.size() == 1 ? std::vector<int64_t>{7 * 3} : std::vector<int64_t>{3, 8, 4}, 3, 4);
    net->to(torch::kFloat64);
    auto& causal = dynamic_cast<CausalTransformerImpl&>(*net);
    torch::NoGradGuard no_grad;
    const auto z = torch::randn(batch_of(5, shape), torch::kFloat64);
    const NetInput input{z, torch::rand({5}, torch::kFloat64), torch::rand({5}, torch::kFloat64), torch::arange(5) % 4};
    const auto full = shape.size() == 1 ? net->forward(input).reshape({5, 7, 3}) : patches.to_tokens(net->forward(input));
    const auto tokens = causal.tokens(z);
    ASSERT_EQ(tokens.size(1), full.size(1));
    // Decoded in uneven chunks: a prefix, single tokens, the rest.
    KeyValueCache cache;
    std::vector<torch::Tensor> outputs;
    const int64_t n = tokens.size(1);
    for (const auto& [begin, end] : std::vector<std::pair<int64_t, int64_t>>{{0, 3}, {3, 4}, {4, 5}, {5, n}}) {
      NetInput part = input;
      part.z = tokens.slice(1, begin, end);
      outputs.push_back(causal.decode(part, cache));
      EXPECT_EQ(cache.length(), end);
    }
    const auto decoded = torch::cat(outputs, 1);
    EXPECT_LT((decoded - full).abs().max().item<double>(), 1e-12) << "shape rank " << shape.size();
    NetInput more = input;
    more.z = tokens.slice(1, 0, 1);
    EXPECT_THROW(causal.decode(more, cache), std::logic_error);  // past the last position
  }
}

TEST(TransitionMatching, ArtmAndFhtmTrainAndSampleOnPointsAndImages) {
  for (const std::string method : {"artm", "fhtm"}) {
    for (const auto& shape : {std::vector<int64_t>{2}, std::vector<int64_t>{1, 8, 8}}) {
      Config config;
      for (const std::string& o : {"method.name=" + method, std::string("model.name=causal"), std::string("model.width=32"),
                                  std::string("model.depth=2"), std::string("model.patch_size=4"),
                                  std::string("method.feature_dim=16"), std::string("method.head_width=16"),
                                  std::string("method.cfg_scale=2")})
        config.apply_override(o);
      auto tm = make_method(config);
      torch::manual_seed(1);
      const DataInfo data{shape, 3, 0.5};
      auto modules = tm->build_modules(config, data);
      const int64_t tokens = shape.size() == 1 ? 2 : 4;
      EXPECT_EQ(tm->count_nfe({2, 3}).backbone, 2 * tokens) << method;
      EXPECT_EQ(tm->count_nfe({2, 3}).head, 2 * tokens * 3) << method;
      std::vector<int64_t> batch_shape = {16};
      batch_shape.insert(batch_shape.end(), shape.begin(), shape.end());
      auto gen = onestep::testing_support::seeded(2);
      const Batch batch{torch::rand(batch_shape, gen) * 2 - 1, torch::arange(16) % 3};
      const auto params = modules.parameters();
      torch::optim::Adam optimizer(params, torch::optim::AdamOptions(3e-3));
      double first = 0, last = 0;
      for (int step = 0; step < 30; ++step) {
        optimizer.zero_grad();
        auto fixed = onestep::testing_support::seeded(4);  // the same draws each step: the loss must fall
        const auto loss = tm->loss({modules, nullptr, nullptr, fixed}, batch).loss;
        loss.backward();
        optimizer.step();
        (step == 0 ? first : last) = loss.item<double>();
      }
      EXPECT_LT(last, 0.9 * first) << method;
      batch_shape[0] = 6;
      const auto samples = tm->sample(modules, torch::randn(batch_shape), torch::arange(6) % 3, {2, 2});
      EXPECT_EQ(samples.sizes().vec(), batch_shape) << method;
      EXPECT_TRUE(torch::isfinite(samples).all().item<bool>()) << method;
    }
  }
  Config config;
  config.apply_override("method.name=fhtm");
  const auto message = onestep::testing_support::user_error_message(
      [&] { make_method(config)->build_modules(config, {{2}, 0, 1.0}); });
  EXPECT_TRUE(onestep::testing_support::contains(message, "model.name = 'causal'")) << message;
}

TEST(TransitionMatching, ArtmPairsDrawFreshOrSharedNoise) {
  auto gen = onestep::testing_support::seeded(5);
  const int64_t n = 20000;
  const auto x = torch::rand({n, 2}, gen) * 4 - 2;
  const auto t = torch::rand({n}, gen) * 0.9 + 0.1;
  const auto t_next = t * torch::rand({n}, gen);
  // The noises recovered from each state: e = (z - (1 - t) x) / t.
  const auto noise_of = [&](const torch::Tensor& z, const torch::Tensor& time) {
    return (z - (1 - time).unsqueeze(1) * x) / time.unsqueeze(1);
  };
  const auto correlation = [](const torch::Tensor& a, const torch::Tensor& b) {
    const auto ca = a.flatten() - a.mean(), cb = b.flatten() - b.mean();
    return ((ca * cb).sum() / (ca.norm() * cb.norm())).item<double>();
  };
  const auto keep = t_next > 0.05;  // the second state's noise is recovered well away from t' = 0
  const auto fresh = artm_transition_pair(x, t, t_next, "fresh", gen);
  const double fresh_correlation =
      correlation(noise_of(fresh.z, t).index({keep}), noise_of(fresh.y, t_next).index({keep}));
  EXPECT_LT(std::abs(fresh_correlation), 0.03);  // 20,000 x 2 draws: the null's std is about 0.006
  const auto shared = artm_transition_pair(x, t, t_next, "shared", gen);
  EXPECT_TRUE(torch::allclose(shared.y - x, (t_next / t).unsqueeze(1) * (shared.z - x), 1e-5, 1e-5));
  Config config;
  config.apply_override("method.name=artm");
  config.apply_override("method.transition_noise=shared");
  EXPECT_EQ(make_method(config)->name(), "artm");
  const auto message = onestep::testing_support::user_error_message([] {
    Config bad;
    bad.apply_override("method.name=artm");
    bad.apply_override("method.transition_noise=none");
    make_method(bad);
  });
  EXPECT_TRUE(onestep::testing_support::contains(message, "transition_noise")) << message;
}
