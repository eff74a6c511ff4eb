// Feature-set metrics declared in feature_metrics.h (Frechet distance, KID, k-NN precision and
// recall, class accuracy). Everything runs in float64 on the CPU; pairwise distances are
// computed one block of rows at a time so that 10000 x 10000 comparisons stay within a few tens
// of MiB.
#include "onestep/eval/feature_metrics.h"

#include "onestep/eval/row_sets.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

namespace onestep {
namespace {

// torch::cdist compute_mode using the matrix-multiply form |a|^2 + |b|^2 - 2 a.b: an order of
// magnitude faster than the exact form for D in the hundreds, and in float64 its rounding error
// (~1e-16 |a|^2) is far below any neighbour radius it is compared with.
constexpr int64_t kMatmulEuclidean = 1;
// torch::cdist compute_mode summing squared coordinate differences: faster for 2 columns and at
// most 2x slower up to 8 (measured, 1000 x 4000 float64 blocks), and exactly 0 between
// duplicate rows, so that a radius-0 ball (a row with k duplicates) still holds them.
constexpr int64_t kExactEuclidean = 2;
// Sets with at most this many columns use the exact form.
constexpr int64_t kExactMaxColumns = 8;

torch::Tensor block_distances(const torch::Tensor& rows, const torch::Tensor& all) {
  return torch::cdist(rows, all, 2.0, all.size(1) <= kExactMaxColumns ? kExactEuclidean : kMatmulEuclidean);
}
// Upper bound on the elements of one distance block (32 MiB of float64).
constexpr int64_t kBlockElements = int64_t{1} << 22;

// Mean and covariance of one FeatureStatistics, checked for shape and moved to float64.
void checked_moments(const FeatureStatistics& s, const char* name, torch::Tensor& mean,
                     torch::Tensor& covariance) {
  if (!s.mean.defined() || !s.covariance.defined() || s.mean.dim() != 1 ||
      s.covariance.dim() != 2 || s.mean.size(0) < 1 || s.covariance.size(0) != s.mean.size(0) ||
      s.covariance.size(1) != s.mean.size(0)) {
    throw std::invalid_argument(std::string(name) +
                                " needs a mean of size D and a D x D covariance");
  }
  if (!s.mean.is_floating_point() || !s.covariance.is_floating_point()) {
    throw std::invalid_argument(std::string(name) + " must hold floating-point tensors");
  }
  mean = s.mean.detach().to(torch::kCPU, torch::kFloat64);
  covariance = s.covariance.detach().to(torch::kCPU, torch::kFloat64);
}

torch::Tensor symmetrised(const torch::Tensor& m) { return 0.5 * (m + m.t()); }

// Non-negative eigenvalues of a symmetric positive semi-definite matrix (negatives, which can
// only come from rounding, become 0).
torch::Tensor psd_eigenvalues(const torch::Tensor& m) {
  return torch::linalg_eigvalsh(symmetrised(m)).clamp_min(0.0);
}

// Symmetric square root of a symmetric positive semi-definite matrix.
torch::Tensor psd_sqrt(const torch::Tensor& m) {
  const auto [values, vectors] = torch::linalg_eigh(symmetrised(m));
  return (vectors * values.clamp_min(0.0).sqrt()).mm(vectors.t());
}

// sum_ij (a_i . b_j / dims + 1)^3, leaving out i == j when a and b are the same set.
double polynomial_kernel_sum(const torch::Tensor& a, const torch::Tensor& b, bool skip_diagonal) {
  const torch::Tensor k = a.mm(b.t()).div_(static_cast<double>(a.size(1))).add_(1.0).pow_(3);
  const double total = k.sum().item<double>();
  return skip_diagonal ? total - k.trace().item<double>() : total;
}

// Distance from each row of x to its k-th nearest other row of x.
torch::Tensor kth_neighbour_radii(const torch::Tensor& x, int64_t k) {
  const int64_t n = x.size(0);
  const int64_t block_rows = std::max<int64_t>(1, kBlockElements / n);
  torch::Tensor radii = torch::empty({n}, x.options());
  for (int64_t start = 0; start < n; start += block_rows) {
    const int64_t rows = std::min(block_rows, n - start);
    torch::Tensor d = block_distances(x.narrow(0, start, rows), x);
    d.diagonal(start).fill_(std::numeric_limits<double>::infinity());
    radii.narrow(0, start, rows)
        .copy_(std::get<0>(d.topk(k, 1, /*largest=*/false, /*sorted=*/true)).select(1, k - 1));
  }
  return radii;
}

}  // namespace

FeatureStatistics feature_statistics(const torch::Tensor& features) {
  torch::NoGradGuard no_grad;
  const torch::Tensor x = as_float64_rows(features, "features", 2);
  const int64_t n = x.size(0);
  const torch::Tensor mean = x.mean(0);
  const torch::Tensor centred = x - mean;
  const torch::Tensor covariance = centred.t().mm(centred).div_(static_cast<double>(n - 1));
  return {mean, covariance, n};
}

double frechet_distance(const FeatureStatistics& a, const FeatureStatistics& b) {
  torch::NoGradGuard no_grad;
  torch::Tensor mean_a, cov_a, mean_b, cov_b;
  checked_moments(a, "first statistics", mean_a, cov_a);
  checked_moments(b, "second statistics", mean_b, cov_b);
  if (mean_a.size(0) != mean_b.size(0)) {
    throw std::invalid_argument("feature statistics differ in dimension: " +
                                std::to_string(mean_a.size(0)) + " vs " +
                                std::to_string(mean_b.size(0)));
  }
  const torch::Tensor root_a = psd_sqrt(cov_a);
  const double trace_sqrt_product = psd_eigenvalues(root_a.mm(cov_b).mm(root_a)).sqrt().sum()
                                        .item<double>();
  return (mean_a - mean_b).square().sum().item<double>() + cov_a.trace().item<double>() +
         cov_b.trace().item<double>() - 2.0 * trace_sqrt_product;
}

double kernel_inception_distance(const torch::Tensor& x, const torch::Tensor& y, int64_t subsets,
                                 int64_t subset_size, uint64_t seed) {
  torch::NoGradGuard no_grad;
  const torch::Tensor a = as_float64_rows(x, "x", 2);
  const torch::Tensor b = as_float64_rows(y, "y", 2);
  check_same_columns(a, b, "feature sets");
  if (subsets < 1) {
    throw std::invalid_argument("kernel_inception_distance needs subsets >= 1, got " +
                                std::to_string(subsets));
  }
  if (subset_size < 2) {
    throw std::invalid_argument("kernel_inception_distance needs subset_size >= 2, got " +
                                std::to_string(subset_size));
  }
  const int64_t m = std::min({subset_size, a.size(0), b.size(0)});
  const double md = static_cast<double>(m);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  double total = 0.0;
  for (int64_t s = 0; s < subsets; ++s) {
    const torch::Tensor xs = a.index_select(0, torch::randperm(a.size(0), gen).narrow(0, 0, m));
    const torch::Tensor ys = b.index_select(0, torch::randperm(b.size(0), gen).narrow(0, 0, m));
    total += (polynomial_kernel_sum(xs, xs, true) + polynomial_kernel_sum(ys, ys, true)) /
                 (md * (md - 1.0)) -
             2.0 * polynomial_kernel_sum(xs, ys, false) / (md * md);
  }
  return total / static_cast<double>(subsets);
}

PrecisionRecall precision_recall(const torch::Tensor& real, const torch::Tensor& fake, int64_t k) {
  torch::NoGradGuard no_grad;
  const torch::Tensor r = as_float64_rows(real, "real", 2);
  const torch::Tensor f = as_float64_rows(fake, "fake", 2);
  check_same_columns(r, f, "feature sets");
  if (k < 1 || k >= r.size(0) || k >= f.size(0)) {
    throw std::invalid_argument("precision_recall needs 1 <= k < rows of each set, got k = " +
                                std::to_string(k));
  }
  const torch::Tensor real_radii = kth_neighbour_radii(r, k);
  const torch::Tensor fake_radii = kth_neighbour_radii(f, k).unsqueeze(0);
  const int64_t n = r.size(0);
  const int64_t block_rows = std::max<int64_t>(1, kBlockElements / f.size(0));
  torch::Tensor fake_covered = torch::zeros({f.size(0)}, torch::kBool);
  int64_t real_covered = 0;
  for (int64_t start = 0; start < n; start += block_rows) {
    const int64_t rows = std::min(block_rows, n - start);
    const torch::Tensor d = block_distances(r.narrow(0, start, rows), f);
    real_covered += d.le(fake_radii).any(1).sum().item<int64_t>();
    fake_covered.logical_or_(d.le(real_radii.narrow(0, start, rows).unsqueeze(1)).any(0));
  }
  return {fake_covered.sum().item<double>() / static_cast<double>(f.size(0)),
          static_cast<double>(real_covered) / static_cast<double>(n)};
}

double class_accuracy(const torch::Tensor& logits, const torch::Tensor& labels) {
  torch::NoGradGuard no_grad;
  if (!logits.defined() || logits.dim() != 2 || logits.size(0) < 1 || logits.size(1) < 1) {
    throw std::invalid_argument("logits must be a non-empty 2-D (rows x classes) tensor");
  }
  if (!labels.defined() || labels.dim() != 1 || labels.size(0) != logits.size(0)) {
    throw std::invalid_argument("labels must be a 1-D tensor with one entry per logits row");
  }
  if (labels.is_floating_point() || labels.is_complex() || labels.scalar_type() == torch::kBool) {
    throw std::invalid_argument("labels must have an integer dtype");
  }
  const torch::Tensor predicted = logits.detach().to(torch::kCPU).argmax(1);
  const torch::Tensor hits = predicted.eq(labels.detach().to(torch::kCPU, torch::kLong));
  return hits.sum().item<double>() / static_cast<double>(logits.size(0));
}

}  // namespace onestep
