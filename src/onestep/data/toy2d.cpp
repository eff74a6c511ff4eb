// Toy datasets: closed-form samplers for the 2-D classics and an isotropic Gaussian. Training
// draws use only the caller's generator; the held-out set comes from a private generator.
#include "onestep/data/toy2d.h"

#include "onestep/core/error.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <sstream>
#include <utility>

namespace onestep {
namespace {

constexpr double kPi = 3.14159265358979323846;

// Seed of the private held-out generator. Fixed (never derived from the training seed) so that
// every run, on every machine, scores against the same held-out points.
constexpr uint64_t kHeldoutSeed = 0x9E3779B97F4A7C15ULL;
// The held-out set grows in chunks of this many samples, drawn in order from the held-out
// generator, so heldout(n) does not depend on which sizes were asked for earlier.
constexpr int64_t kHeldoutChunk = 1024;

using Sampler = std::function<Batch(int64_t n, torch::Generator& gen)>;

class ToyDataset final : public Dataset {
 public:
  ToyDataset(Sampler sampler, int64_t dim, int64_t num_classes, std::string description)
      : sampler_(std::move(sampler)),
        dim_(dim),
        num_classes_(num_classes),
        description_(std::move(description)) {}

  std::vector<int64_t> sample_shape() const override { return {dim_}; }
  int64_t num_classes() const override { return num_classes_; }
  Batch train_batch(int64_t n, torch::Generator& gen) override { return sampler_(n, gen); }
  std::string describe() const override { return description_; }

  Batch heldout(int64_t n) override {
    while (!heldout_.x.defined() || heldout_.x.size(0) < n) {
      Batch chunk = sampler_(kHeldoutChunk, heldout_gen_);
      heldout_.x = heldout_.x.defined() ? torch::cat({heldout_.x, chunk.x}) : chunk.x;
      if (chunk.y.defined()) {
        heldout_.y = heldout_.y.defined() ? torch::cat({heldout_.y, chunk.y}) : chunk.y;
      }
    }
    const int64_t count = std::max<int64_t>(n, 0);
    Batch out;
    out.x = heldout_.x.narrow(0, 0, count).clone();
    if (heldout_.y.defined()) out.y = heldout_.y.narrow(0, 0, count).clone();
    return out;
  }

 private:
  Sampler sampler_;
  int64_t dim_;
  int64_t num_classes_;
  std::string description_;
  torch::Generator heldout_gen_ = at::make_generator<at::CPUGeneratorImpl>(kHeldoutSeed);
  Batch heldout_;
};

const auto kFloat = torch::kFloat;

// x1 ~ U(-2, 2); x2 uniform in one of the two unit squares of column floor(x1) whose row
// floor(x2) has the same parity, i.e. filled squares satisfy floor(x1) + floor(x2) even.
Batch sample_checkerboard(int64_t n, torch::Generator& gen) {
  auto x1 = torch::rand({n}, gen, kFloat) * 4 - 2;
  auto row = torch::randint(0, 2, {n}, gen, kFloat) * 2 - 2 + torch::remainder(torch::floor(x1), 2);
  // Clamp below row + 1: u + row can round up to row + 1 in float32 when u is just below 1.
  const float below_one = std::nextafter(1.0f, 0.0f);
  auto x2 = torch::minimum(row + torch::rand({n}, gen, kFloat), row + below_one);
  return {torch::stack({x1, x2}, 1), {}};
}

// sklearn make_moons geometry (outer arc (cos t, sin t), inner arc (1 - cos t, 1/2 - sin t),
// t ~ U(0, pi)), Gaussian noise of std 0.05 in those units, then centred at the origin (the
// centre of the bounding box [-1, 2] x [-1/2, 1]) and scaled by 1.5.
Batch sample_moons(int64_t n, torch::Generator& gen) {
  auto t = torch::rand({n}, gen, kFloat) * kPi;
  auto inner = torch::randint(0, 2, {n}, gen, kFloat).to(torch::kBool);
  auto x = torch::where(inner, 1 - torch::cos(t), torch::cos(t));
  auto y = torch::where(inner, 0.5 - torch::sin(t), torch::sin(t));
  auto points = torch::stack({x, y}, 1) + 0.05 * torch::randn({n, 2}, gen, kFloat);
  return {(points - torch::tensor({0.5f, 0.25f})) * 1.5, {}};
}

// Mode k in 0..7 at angle 2 pi k / 8 on the circle of radius 2, std 0.15; label y = k.
Batch sample_8gaussians(int64_t n, torch::Generator& gen) {
  auto mode = torch::randint(0, 8, {n}, gen, torch::kLong);
  auto angle = mode.to(kFloat) * (2 * kPi / 8);
  auto centres = torch::stack({torch::cos(angle), torch::sin(angle)}, 1) * 2;
  return {centres + 0.15 * torch::randn({n, 2}, gen, kFloat), mode};
}

// Two Archimedean spirals r = 2.2 theta / (3 pi), theta in [0, 3 pi], the second rotated by
// pi. theta = 3 pi sqrt(u) makes the density roughly uniform along the arc (arc length grows
// like theta^2). Noise std 0.05.
Batch sample_spirals(int64_t n, torch::Generator& gen) {
  auto theta = torch::sqrt(torch::rand({n}, gen, kFloat)) * (3 * kPi);
  auto r = theta * (2.2 / (3 * kPi));
  auto sign = torch::randint(0, 2, {n}, gen, kFloat) * 2 - 1;
  auto arm = torch::stack({r * torch::cos(theta), r * torch::sin(theta)}, 1) * sign.unsqueeze(1);
  return {arm + 0.05 * torch::randn({n, 2}, gen, kFloat), {}};
}

// sklearn make_swiss_roll's (x, z) = (t cos t, t sin t), t ~ U(1.5 pi, 4.5 pi), scaled by 1/7
// (so |coordinates| <= 4.5 pi / 7 ~ 2.02), plus noise of std 0.05 after scaling.
Batch sample_swissroll(int64_t n, torch::Generator& gen) {
  auto t = (1 + 2 * torch::rand({n}, gen, kFloat)) * (1.5 * kPi);
  auto roll = torch::stack({t * torch::cos(t), t * torch::sin(t)}, 1) / 7;
  return {roll + 0.05 * torch::randn({n, 2}, gen, kFloat), {}};
}

}  // namespace

const std::vector<std::string>& toy_dataset_names() {
  static const std::vector<std::string> names = {"checkerboard", "moons",     "8gaussians",
                                                 "spirals",      "swissroll", "gaussian"};
  return names;
}

std::unique_ptr<Dataset> make_toy_dataset(const std::string& name, double sigma, int64_t dim) {
  if (name == "checkerboard") {
    return std::make_unique<ToyDataset>(sample_checkerboard, 2, 0,
                                        "checkerboard (2-D, 8 squares in [-2,2]^2)");
  }
  if (name == "moons") {
    return std::make_unique<ToyDataset>(
        sample_moons, 2, 0, "moons (2-D, two interleaving half circles, noise 0.05, scaled 1.5x)");
  }
  if (name == "8gaussians") {
    return std::make_unique<ToyDataset>(
        sample_8gaussians, 2, 8,
        "8gaussians (2-D, 8 modes on a circle of radius 2, std 0.15, labelled by mode)");
  }
  if (name == "spirals") {
    return std::make_unique<ToyDataset>(
        sample_spirals, 2, 0, "spirals (2-D, two interleaved Archimedean spirals, noise 0.05)");
  }
  if (name == "swissroll") {
    return std::make_unique<ToyDataset>(
        sample_swissroll, 2, 0, "swissroll (2-D, swiss roll (x, z) projection / 7, noise 0.05)");
  }
  if (name == "gaussian") {
    if (!(sigma > 0) || !std::isfinite(sigma)) {
      std::ostringstream msg;
      msg << "gaussian dataset: sigma must be a positive finite number, got " << sigma;
      throw UserError(msg.str());
    }
    if (dim < 1) {
      throw UserError("gaussian dataset: dim must be >= 1, got " + std::to_string(dim));
    }
    std::ostringstream description;
    description << "gaussian (" << dim << "-D, N(0, sigma^2 I), sigma " << sigma << ")";
    auto sampler = [sigma, dim](int64_t n, torch::Generator& gen) {
      return Batch{torch::randn({n, dim}, gen, kFloat) * sigma, {}};
    };
    return std::make_unique<ToyDataset>(sampler, dim, 0, description.str());
  }
  std::string known;
  for (const auto& known_name : toy_dataset_names()) {
    known += (known.empty() ? "" : ", ") + known_name;
  }
  throw UserError("unknown toy dataset '" + name + "' (known: " + known + ")");
}

const OptionSchema<GaussianDataOptions>& GaussianDataOptions::schema() {
  static const auto schema = OptionSchema<GaussianDataOptions>("data")
                                 .add("sigma", &GaussianDataOptions::sigma, 1e-6, 1e300,
                                      "standard deviation of the `gaussian` data")
                                 .add("dim", &GaussianDataOptions::dim, 1, 1 << 20, "dimension of the `gaussian` data");
  return schema;
}

namespace {

bool register_toys() {
  const std::map<std::string, std::string> descriptions = {
      {"checkerboard", "2-D checkerboard of 8 squares"},
      {"moons", "2-D two interleaving half circles"},
      {"8gaussians", "2-D, 8 modes on a circle, labelled by mode"},
      {"spirals", "2-D two interleaved spirals"},
      {"swissroll", "2-D swiss roll"},
      {"gaussian", "isotropic Gaussian N(0, sigma^2 I) of any dimension"}};
  for (const auto& name : toy_dataset_names()) {
    const bool gaussian = name == "gaussian";
    DatasetRegistry::instance().add(
        {"data", name, "", descriptions.at(name), gaussian ? GaussianDataOptions::schema().keys() : std::vector<KeySpec>{}},
        [gaussian](const Config& config, const std::string& chosen) {
          const auto options = gaussian ? GaussianDataOptions::schema().read(config) : GaussianDataOptions{};
          return make_toy_dataset(chosen, options.sigma, options.dim);
        });
  }
  return true;
}

[[maybe_unused]] const bool registered = register_toys();

}  // namespace

}  // namespace onestep
