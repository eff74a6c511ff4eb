// Point-set distances (energy distance, sliced Wasserstein-2, unbiased RBF MMD^2, exact W2,
// mode coverage) declared in point_metrics.h. Pairwise terms are computed with exact (non
// matrix-multiply) torch::cdist in float64, one block of rows at a time, so memory stays
// bounded for sets of tens of thousands.
#include "onestep/eval/point_metrics.h"

#include "onestep/core/assignment.h"
#include "onestep/eval/row_sets.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace onestep {
namespace {

// torch::cdist compute_mode that forbids the fast but cancellation-prone |a|^2 + |b|^2 - 2ab form.
constexpr int64_t kExactEuclidean = 2;
// Upper bound on the elements of one distance block (32 MiB of float64).
constexpr int64_t kBlockElements = int64_t{1} << 22;
// mmd_rbf's bandwidth looks at no more than this many leading rows of the reference set.
constexpr int64_t kMedianMaxRows = 2000;
// mode_coverage counts a mode as covered from 1 / kFairShareDivisor of its fair share on.
constexpr int64_t kFairShareDivisor = 5;

// Sum over all pairs (i, j) of f(|a_i - b_j|), where f maps a block of distances to values in
// place. With `skip_diagonal` (a and b are the same set) the i == j terms are left out.
double pair_sum(const torch::Tensor& a, const torch::Tensor& b, bool skip_diagonal,
                const std::function<void(torch::Tensor&)>& f) {
  const int64_t n = a.size(0);
  const int64_t block_rows = std::max<int64_t>(1, kBlockElements / b.size(0));
  double total = 0.0;
  for (int64_t start = 0; start < n; start += block_rows) {
    const int64_t rows = std::min(block_rows, n - start);
    torch::Tensor d = torch::cdist(a.narrow(0, start, rows), b, 2.0, kExactEuclidean);
    f(d);
    if (skip_diagonal) {
      d.diagonal(start).zero_();
    }
    total += d.sum().item<double>();
  }
  return total;
}

void keep_distance(torch::Tensor&) {}

double mean_cross_distance(const torch::Tensor& x, const torch::Tensor& y) {
  return pair_sum(x, y, false, keep_distance) / (static_cast<double>(x.size(0)) * y.size(0));
}

double mean_within_distance(const torch::Tensor& x) {
  const double n = static_cast<double>(x.size(0));
  return pair_sum(x, x, true, keep_distance) / (n * n);
}

// Linear interpolation of the quantile function of the sorted columns of `sorted` (n x K) at
// levels (k + 0.5) / levels, k = 0..levels-1, with sample i sitting at level (i + 0.5) / n;
// levels outside [0.5 / n, 1 - 0.5 / n] take the extreme values.
torch::Tensor quantiles_on_grid(const torch::Tensor& sorted, int64_t levels) {
  const int64_t n = sorted.size(0);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  torch::Tensor pos = ((torch::arange(levels, f64) + 0.5) * (static_cast<double>(n) / levels) - 0.5)
                          .clamp(0.0, static_cast<double>(n - 1));
  torch::Tensor lo = pos.floor();
  torch::Tensor w = (pos - lo).unsqueeze(1);
  torch::Tensor lo_idx = lo.to(torch::kLong);
  torch::Tensor hi_idx = (lo_idx + 1).clamp_max(n - 1);
  return sorted.index_select(0, lo_idx) * (1.0 - w) + sorted.index_select(0, hi_idx) * w;
}

// `labels` checked as one integer class >= 0 per row of a set of `rows` rows, as int64.
torch::Tensor checked_labels(const torch::Tensor& labels, int64_t rows) {
  if (!labels.defined() || labels.dim() != 1 || labels.size(0) != rows) {
    throw std::invalid_argument("labels must be a 1-D tensor with one entry per reference row (" +
                                std::to_string(rows) + ")");
  }
  if (labels.is_floating_point() || labels.is_complex() || labels.scalar_type() == torch::kBool) {
    throw std::invalid_argument("labels must have an integer dtype");
  }
  const torch::Tensor out = labels.detach().to(torch::kCPU, torch::kLong).contiguous();
  if (out.min().item<int64_t>() < 0) throw std::invalid_argument("labels must be >= 0");
  return out;
}

}  // namespace

double energy_distance(const torch::Tensor& x, const torch::Tensor& y) {
  torch::NoGradGuard no_grad;
  const torch::Tensor a = as_float64_rows(x, "x", 2);
  const torch::Tensor b = as_float64_rows(y, "y", 2);
  check_same_columns(a, b, "point sets");
  return 2.0 * mean_cross_distance(a, b) - mean_within_distance(a) - mean_within_distance(b);
}

double sliced_w2(const torch::Tensor& x, const torch::Tensor& y, int64_t num_directions,
                 uint64_t seed) {
  torch::NoGradGuard no_grad;
  const torch::Tensor a = as_float64_rows(x, "x", 2);
  const torch::Tensor b = as_float64_rows(y, "y", 2);
  check_same_columns(a, b, "point sets");
  const int64_t dims = a.size(1);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  torch::Tensor directions;
  if (dims == 1) {
    directions = torch::ones({1, 1}, f64);
  } else {
    if (num_directions < 1) {
      throw std::invalid_argument("sliced_w2 needs num_directions >= 1, got " +
                                  std::to_string(num_directions));
    }
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    directions = torch::randn({num_directions, dims}, gen, f64);
    directions = directions / directions.norm(2, {1}, true);
  }
  torch::Tensor pa = std::get<0>(a.matmul(directions.t()).sort(0));
  torch::Tensor pb = std::get<0>(b.matmul(directions.t()).sort(0));
  if (pa.size(0) != pb.size(0)) {
    const int64_t levels = std::max(pa.size(0), pb.size(0));
    pa = quantiles_on_grid(pa, levels);
    pb = quantiles_on_grid(pb, levels);
  }
  return std::sqrt((pa - pb).square().mean().item<double>());
}

double median_distance(const torch::Tensor& y) {
  torch::NoGradGuard no_grad;
  const torch::Tensor b = as_float64_rows(y, "y", 2);
  const torch::Tensor head = b.narrow(0, 0, std::min(b.size(0), kMedianMaxRows));
  const int64_t m = head.size(0);
  const torch::Tensor upper = torch::triu_indices(m, m, 1);
  const torch::Tensor d = torch::cdist(head, head, 2.0, kExactEuclidean)
                              .index({upper[0], upper[1]});
  const torch::Tensor sorted = std::get<0>(d.sort());
  const int64_t count = sorted.size(0);
  const double upper_mid = sorted[count / 2].item<double>();
  return count % 2 == 1 ? upper_mid : 0.5 * (upper_mid + sorted[count / 2 - 1].item<double>());
}

double mmd_rbf(const torch::Tensor& x, const torch::Tensor& y) {
  return mmd_rbf(x, y, median_distance(y));
}

double mmd_rbf(const torch::Tensor& x, const torch::Tensor& y, double bandwidth) {
  torch::NoGradGuard no_grad;
  if (!(bandwidth > 0.0) || !std::isfinite(bandwidth)) {
    throw std::invalid_argument("mmd_rbf needs a positive finite bandwidth, got " +
                                std::to_string(bandwidth));
  }
  const torch::Tensor a = as_float64_rows(x, "x", 2);
  const torch::Tensor b = as_float64_rows(y, "y", 2);
  check_same_columns(a, b, "point sets");
  const double scale = -0.5 / (bandwidth * bandwidth);
  const auto kernel = [scale](torch::Tensor& d) { d.square_().mul_(scale).exp_(); };
  const double n = static_cast<double>(a.size(0));
  const double m = static_cast<double>(b.size(0));
  return pair_sum(a, a, true, kernel) / (n * (n - 1.0)) +
         pair_sum(b, b, true, kernel) / (m * (m - 1.0)) -
         2.0 * pair_sum(a, b, false, kernel) / (n * m);
}

double exact_w2(const torch::Tensor& x, const torch::Tensor& y, int64_t max_rows) {
  torch::NoGradGuard no_grad;
  if (max_rows < 1) {
    throw std::invalid_argument("exact_w2 needs max_rows >= 1, got " + std::to_string(max_rows));
  }
  const torch::Tensor a = as_float64_rows(x, "x", 1);
  const torch::Tensor b = as_float64_rows(y, "y", 1);
  check_same_columns(a, b, "point sets");
  const int64_t m = std::min({a.size(0), b.size(0), max_rows});
  const torch::Tensor head_b = b.narrow(0, 0, m).unsqueeze(0);
  // Squared distances from coordinate differences (no |a|^2 + |b|^2 - 2ab cancellation), one
  // block of rows at a time, into the row-major matrix the solver takes.
  std::vector<double> cost(static_cast<size_t>(m) * static_cast<size_t>(m));
  const int64_t block_rows = std::max<int64_t>(1, kBlockElements / (m * a.size(1)));
  for (int64_t start = 0; start < m; start += block_rows) {
    const int64_t rows = std::min(block_rows, m - start);
    const torch::Tensor d = (a.narrow(0, start, rows).unsqueeze(1) - head_b).square_().sum(2).contiguous();
    std::copy(d.data_ptr<double>(), d.data_ptr<double>() + rows * m,
              cost.begin() + static_cast<std::ptrdiff_t>(start * m));
  }
  const double total = min_cost_assignment(cost, m).cost;
  return std::sqrt(std::max(0.0, total) / static_cast<double>(m));
}

torch::Tensor nearest_labels(const torch::Tensor& x, const torch::Tensor& reference,
                             const torch::Tensor& labels) {
  torch::NoGradGuard no_grad;
  const torch::Tensor a = as_float64_rows(x, "x", 1);
  const torch::Tensor r = as_float64_rows(reference, "reference", 1);
  check_same_columns(a, r, "point sets");
  const torch::Tensor classes = checked_labels(labels, r.size(0));
  const int64_t n = a.size(0);
  const int64_t block_rows = std::max<int64_t>(1, kBlockElements / r.size(0));
  torch::Tensor nearest = torch::empty({n}, torch::kLong);
  for (int64_t start = 0; start < n; start += block_rows) {
    const int64_t rows = std::min(block_rows, n - start);
    // argmin returns the first of equal minima.
    nearest.narrow(0, start, rows)
        .copy_(torch::cdist(a.narrow(0, start, rows), r, 2.0, kExactEuclidean).argmin(1));
  }
  return classes.index_select(0, nearest);
}

double mode_coverage(const torch::Tensor& x, const torch::Tensor& reference, const torch::Tensor& labels) {
  torch::NoGradGuard no_grad;
  const torch::Tensor assigned = nearest_labels(x, reference, labels);
  const torch::Tensor classes = labels.detach().to(torch::kCPU, torch::kLong);
  const int64_t num_classes = classes.max().item<int64_t>() + 1;
  const torch::Tensor ref_counts = torch::bincount(classes, {}, num_classes);
  const torch::Tensor x_counts = torch::bincount(assigned, {}, num_classes);
  const int64_t n = assigned.size(0);
  const int64_t m = classes.size(0);
  int64_t modes = 0, covered = 0;
  for (int64_t c = 0; c < num_classes; ++c) {
    const int64_t ref_count = ref_counts[c].item<int64_t>();
    if (ref_count == 0) continue;
    ++modes;
    // count_x / n >= (1/5) ref_count / m, in exact integer arithmetic.
    if (kFairShareDivisor * x_counts[c].item<int64_t>() * m >= ref_count * n) ++covered;
  }
  return static_cast<double>(covered) / static_cast<double>(modes);
}

}  // namespace onestep
