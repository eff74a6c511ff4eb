// The shared convention of spec §0 (see linear_path.h).
#include "onestep/methods/linear_path.h"

#include "onestep/core/assignment.h"
#include "onestep/core/config.h"

#include <cmath>
#include <map>

namespace onestep {

const OptionSchema<TimeSampler>& TimeSampler::schema() {
  static const auto schema =
      OptionSchema<TimeSampler>("method")
          .add("time_sampler", &TimeSampler::kind, {"logit-normal", "uniform"}, "distribution of t")
          .add("time_mu", &TimeSampler::mu, -10, 10, "mean of the logit-normal time sampler")
          .add("time_sigma", &TimeSampler::sigma, 1e-3, 10, "std of the logit-normal time sampler");
  return schema;
}

torch::Tensor TimeSampler::draw(int64_t n, torch::Generator& gen) const {
  if (kind == "uniform") return torch::rand({n}, gen);
  return torch::sigmoid(torch::randn({n}, gen) * sigma + mu);
}

torch::Tensor TimeSampler::draw_below(const torch::Tensor& upper, torch::Generator& gen) const {
  const auto u = torch::rand(upper.sizes(), gen);
  if (kind == "uniform") return u * upper;
  // logit(t) ~ N(mu, sigma): P(t <= upper) = Phi((logit(upper) - mu) / sigma); invert u * that.
  const auto normal_cdf = [](const torch::Tensor& x) { return 0.5 * (1 + torch::erf(x / std::sqrt(2.0))); };
  const auto bound = normal_cdf((torch::logit(upper.to(torch::kDouble)) - mu) / sigma);
  const auto p = (u.to(torch::kDouble) * bound).clamp(1e-12, 1 - 1e-12);
  const auto n = std::sqrt(2.0) * torch::erfinv(2 * p - 1);
  return torch::minimum(torch::sigmoid(n * sigma + mu), upper.to(torch::kDouble)).to(torch::kFloat);
}

torch::Tensor draw_noise(torch::IntArrayRef shape, torch::Generator& gen, const torch::Device& device) {
  return torch::randn(shape, gen).to(device);
}

torch::Tensor interpolate(const torch::Tensor& x, const torch::Tensor& e, const torch::Tensor& t) {
  const auto tb = per_sample(t, x.dim());
  return (1 - tb) * x + tb * e;
}

const OptionSchema<Coupling>& Coupling::schema() {
  static const auto schema = OptionSchema<Coupling>("method").add(
      "coupling", &Coupling::kind, {"independent", "minibatch-ot"},
      "pairing of noise and data in a batch: as drawn, or the exact minibatch optimal-transport assignment "
      "(within classes)");
  return schema;
}

torch::Tensor Coupling::pair(const torch::Tensor& x, const torch::Tensor& e, const torch::Tensor& labels) const {
  if (kind == "independent") return e;
  torch::NoGradGuard no_grad;
  const int64_t n = x.size(0);
  const auto xs = x.detach().to(torch::kCPU, torch::kDouble).reshape({n, -1});
  const auto es = e.detach().to(torch::kCPU, torch::kDouble).reshape({n, -1});
  // Index groups: one per class (in order of first appearance), or the whole batch.
  std::vector<std::vector<int64_t>> groups;
  if (labels.defined()) {
    const auto y = labels.to(torch::kCPU, torch::kLong).contiguous();
    std::map<int64_t, size_t> group_of;
    for (int64_t i = 0; i < n; ++i) {
      const auto [it, fresh] = group_of.emplace(y.data_ptr<int64_t>()[i], groups.size());
      if (fresh) groups.emplace_back();
      groups[it->second].push_back(i);
    }
  } else {
    groups.emplace_back(n);
    for (int64_t i = 0; i < n; ++i) groups[0][i] = i;
  }
  std::vector<int64_t> source(n);  // row i of the result is row source[i] of e
  for (const auto& group : groups) {
    const auto index = torch::tensor(group, torch::kLong);
    const auto cost = torch::cdist(xs.index_select(0, index), es.index_select(0, index)).pow(2).contiguous();
    const auto m = static_cast<int64_t>(group.size());
    const std::vector<double> flat(cost.data_ptr<double>(), cost.data_ptr<double>() + m * m);
    const auto matching = min_cost_assignment(flat, m);
    for (int64_t i = 0; i < m; ++i) source[group[i]] = group[matching.column_of_row[i]];
  }
  return e.index_select(0, torch::tensor(source, torch::kLong).to(e.device()));
}

PathPoint draw_path_point(const torch::Tensor& x, const torch::Tensor& t, torch::Generator& gen,
                          const Coupling& coupling, const torch::Tensor& labels) {
  return path_point(x, t, coupling.pair(x, draw_noise(x.sizes(), gen, x.device()), labels));
}

PathPoint path_point(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& e) {
  return {t, e, interpolate(x, e, t), e - x};
}

const OptionSchema<LabelDropout>& LabelDropout::schema() {
  static const auto schema = OptionSchema<LabelDropout>("method").add(
      "label_dropout", &LabelDropout::p, 0, 1,
      "probability of replacing the class by the null label (conditional data)");
  return schema;
}

torch::Tensor drop_labels(const torch::Tensor& labels, int64_t num_classes, double p, torch::Generator& gen) {
  return drop_labels(labels, num_classes, draw_label_drop(labels, p, gen));
}

torch::Tensor draw_label_drop(const torch::Tensor& labels, double p, torch::Generator& gen) {
  if (!labels.defined()) return {};
  return torch::rand({labels.size(0)}, gen) < p;
}

torch::Tensor drop_labels(const torch::Tensor& labels, int64_t num_classes, const torch::Tensor& drop) {
  if (!labels.defined()) return labels;
  return torch::where(drop.to(labels.device()), torch::full_like(labels, num_classes), labels);
}

std::pair<torch::Tensor, torch::Tensor> conditional_and_unconditional(NetworkImpl& net, const NetInput& input) {
  const int64_t n = input.z.size(0);
  const auto twice = [](const torch::Tensor& a) { return a.defined() ? torch::cat({a, a}) : a; };
  const auto null = torch::full({n}, net.null_label(), torch::TensorOptions().dtype(torch::kLong).device(input.z.device()));
  const auto both = net.forward({twice(input.z), twice(input.t), twice(input.h), torch::cat({input.c, null}),
                                 twice(input.extra), twice(input.context)});
  return {both.slice(0, 0, n), both.slice(0, n, 2 * n)};
}

std::vector<double> uniform_time_grid(int64_t steps) {
  std::vector<double> grid(steps + 1);
  for (int64_t i = 0; i <= steps; ++i) grid[i] = 1.0 - static_cast<double>(i) / static_cast<double>(steps);
  grid[steps] = 0.0;
  return grid;
}

torch::Tensor per_sample(const torch::Tensor& value, int64_t rank) {
  std::vector<int64_t> shape(rank, 1);
  shape[0] = value.size(0);
  return value.reshape(shape);
}

torch::Tensor filled(int64_t n, double value, const torch::Tensor& like) {
  return torch::full({n}, value, torch::TensorOptions().dtype(like.dtype()).device(like.device()));
}

}  // namespace onestep
