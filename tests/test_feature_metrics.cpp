// Tests for the feature-set metrics in eval/feature_metrics: the Frechet distance against a
// Denman-Beavers matrix square root of S1 S2 and the closed form for diagonal covariances, KID
// and k-NN precision/recall (also on 4000 x 4000 2-D points with duplicates, as the point
// metrics use it) against plain nested-loop float64 references, and sanity
// properties (self-distance, symmetry, shifts, same vs different distributions, mode collapse).
#include "onestep/eval/feature_metrics.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace onestep {
namespace {

using Points = std::vector<std::vector<double>>;

torch::Tensor randn(int64_t rows, int64_t dims, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::randn({rows, dims}, gen, torch::TensorOptions().dtype(torch::kFloat64));
}

torch::Tensor uniform(int64_t size, double lo, double hi, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::rand({size}, gen, torch::TensorOptions().dtype(torch::kFloat64)) * (hi - lo) + lo;
}

// Correlated features: standard normal rows times a random mixing matrix, plus an offset.
torch::Tensor mixed_features(int64_t rows, int64_t dims, uint64_t seed, double offset) {
  return randn(rows, dims, seed).mm(randn(dims, dims, seed + 1000)) + offset;
}

Points to_points(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kFloat64).contiguous();
  const auto acc = c.accessor<double, 2>();
  Points p(c.size(0), std::vector<double>(c.size(1)));
  for (int64_t i = 0; i < c.size(0); ++i) {
    for (int64_t j = 0; j < c.size(1); ++j) p[i][j] = acc[i][j];
  }
  return p;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t j = 0; j < a.size(); ++j) s += a[j] * b[j];
  return s;
}

double dist(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t j = 0; j < a.size(); ++j) s += (a[j] - b[j]) * (a[j] - b[j]);
  return std::sqrt(s);
}

void expect_rel_near(double actual, double expected, double rel) {
  EXPECT_NEAR(actual, expected, rel * std::abs(expected)) << "expected " << expected;
}

// Trace of the principal square root of m (a general real matrix with positive real
// eigenvalues, here S1 S2) by the Denman-Beavers iteration Y <- (Y + Z^-1) / 2,
// Z <- (Z + Y^-1) / 2 from Y = m, Z = I, which converges quadratically to Y = m^(1/2).
double trace_sqrt_denman_beavers(const torch::Tensor& m) {
  torch::Tensor y = m.clone();
  torch::Tensor z = torch::eye(m.size(0), m.options());
  for (int iter = 0; iter < 100; ++iter) {
    const torch::Tensor y_next = 0.5 * (y + torch::inverse(z));
    z = 0.5 * (z + torch::inverse(y));
    const double change = (y_next - y).norm().item<double>();
    y = y_next;
    if (change <= 1e-15 * y.norm().item<double>()) break;
  }
  return y.trace().item<double>();
}

double ref_frechet(const FeatureStatistics& a, const FeatureStatistics& b) {
  return (a.mean - b.mean).square().sum().item<double>() + a.covariance.trace().item<double>() +
         b.covariance.trace().item<double>() -
         2.0 * trace_sqrt_denman_beavers(a.covariance.mm(b.covariance));
}

// Unbiased MMD^2 with kernel (a.b / D + 1)^3 over all rows of two equal-size sets.
double ref_kid(const Points& x, const Points& y) {
  const double dims = static_cast<double>(x[0].size());
  const auto k = [dims](const std::vector<double>& a, const std::vector<double>& b) {
    return std::pow(dot(a, b) / dims + 1.0, 3);
  };
  const double m = static_cast<double>(x.size());
  double within = 0.0, cross = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    for (size_t j = 0; j < x.size(); ++j) {
      if (i != j) within += k(x[i], x[j]) + k(y[i], y[j]);
      cross += k(x[i], y[j]);
    }
  }
  return within / (m * (m - 1.0)) - 2.0 * cross / (m * m);
}

// Distance from each point to its k-th nearest other point of the same set.
std::vector<double> ref_radii(const Points& p, int64_t k) {
  std::vector<double> radii;
  for (size_t i = 0; i < p.size(); ++i) {
    std::vector<double> d;
    for (size_t j = 0; j < p.size(); ++j) {
      if (j != i) d.push_back(dist(p[i], p[j]));
    }
    std::nth_element(d.begin(), d.begin() + (k - 1), d.end());
    radii.push_back(d[k - 1]);
  }
  return radii;
}

// Share of the points of `query` within the ball of some point of `support`.
double ref_coverage(const Points& query, const Points& support, const std::vector<double>& radii) {
  int64_t inside = 0;
  for (const auto& q : query) {
    for (size_t i = 0; i < support.size(); ++i) {
      if (dist(q, support[i]) <= radii[i]) {
        ++inside;
        break;
      }
    }
  }
  return static_cast<double>(inside) / static_cast<double>(query.size());
}

TEST(FeatureMetrics, StatisticsMatchLoopReference) {
  const torch::Tensor x = mixed_features(50, 4, 1, 0.5);
  const FeatureStatistics s = feature_statistics(x.to(torch::kFloat32));
  EXPECT_EQ(s.count, 50);
  ASSERT_EQ(s.mean.scalar_type(), torch::kFloat64);
  const Points fp = to_points(x.to(torch::kFloat32));
  std::vector<double> mean(4, 0.0);
  for (const auto& row : fp) {
    for (size_t j = 0; j < 4; ++j) mean[j] += row[j] / 50.0;
  }
  for (int64_t j = 0; j < 4; ++j) {
    EXPECT_NEAR(s.mean[j].item<double>(), mean[j], 1e-12);
    for (int64_t l = 0; l < 4; ++l) {
      double c = 0.0;
      for (const auto& row : fp) c += (row[j] - mean[j]) * (row[l] - mean[l]) / 49.0;
      EXPECT_NEAR(s.covariance[j][l].item<double>(), c, 1e-12 * (1.0 + std::abs(c)));
    }
  }
}

TEST(FeatureMetrics, FrechetMatchesDenmanBeaversReference) {
  for (uint64_t seed : {11u, 12u, 13u}) {
    const int64_t dims = 8 + 8 * static_cast<int64_t>(seed - 11);
    const FeatureStatistics a = feature_statistics(mixed_features(400, dims, seed, 0.0));
    const FeatureStatistics b = feature_statistics(mixed_features(300, dims, seed + 50, 0.3) * 0.7);
    const double fd = frechet_distance(a, b);
    expect_rel_near(fd, ref_frechet(a, b), 1e-8);
    EXPECT_GT(fd, 0.0);
  }
}

TEST(FeatureMetrics, FrechetMatchesClosedFormForDiagonalCovariances) {
  const int64_t dims = 10;
  const torch::Tensor var_a = uniform(dims, 0.1, 3.0, 21);
  const torch::Tensor var_b = uniform(dims, 0.1, 3.0, 22);
  const FeatureStatistics a{uniform(dims, -1.0, 1.0, 23), torch::diag(var_a), 100};
  const FeatureStatistics b{uniform(dims, -1.0, 1.0, 24), torch::diag(var_b), 100};
  const double exact = ((a.mean - b.mean).square().sum() +
                        (var_a.sqrt() - var_b.sqrt()).square().sum())
                           .item<double>();
  expect_rel_near(frechet_distance(a, b), exact, 1e-10);
}

TEST(FeatureMetrics, FrechetSelfSymmetryAndShift) {
  const FeatureStatistics a = feature_statistics(mixed_features(500, 64, 31, 1.0));
  const FeatureStatistics b = feature_statistics(mixed_features(500, 64, 32, -1.0) * 1.3);
  const double trace = a.covariance.trace().item<double>();
  EXPECT_LT(std::abs(frechet_distance(a, a)), 1e-8 * trace);
  expect_rel_near(frechet_distance(b, a), frechet_distance(a, b), 1e-10);
  // Equal covariances: the covariance terms cancel and only |shift|^2 remains.
  const torch::Tensor shift = uniform(64, -0.5, 0.5, 33);
  const FeatureStatistics shifted{a.mean + shift, a.covariance, a.count};
  const double shift_sq = shift.square().sum().item<double>();
  EXPECT_NEAR(frechet_distance(a, shifted), shift_sq, 1e-8 * trace);
}

TEST(FeatureMetrics, KidMatchesLoopReferenceOnTinySets) {
  const torch::Tensor x = randn(7, 3, 41);
  const torch::Tensor y = randn(7, 3, 42) * 1.5 + 0.2;
  const double expected = ref_kid(to_points(x), to_points(y));
  // With subset_size = N every subset is a permutation of the full sets, which MMD^2 ignores;
  // larger subset sizes are capped at N.
  expect_rel_near(kernel_inception_distance(x, y, 1, 7), expected, 1e-10);
  expect_rel_near(kernel_inception_distance(x, y, 3, 1000, 5), expected, 1e-10);
  expect_rel_near(kernel_inception_distance(x.to(torch::kFloat32), y.to(torch::kFloat32), 1, 7),
                  ref_kid(to_points(x.to(torch::kFloat32)), to_points(y.to(torch::kFloat32))),
                  1e-10);
}

TEST(FeatureMetrics, KidNearZeroForSameDistributionAndPositiveForDifferent) {
  // 20 independent pairs of 200 x 16 standard normal samples, each scored on the full sets.
  // The estimator is unbiased, so the mean of the 20 replicates must lie within a few of its
  // standard errors (sample sd / sqrt(20)) of 0; 5 standard errors leaves a 1-in-10^6 chance
  // for a normal mean and covers the heavier tails of the degenerate U-statistic. (The sd of
  // one replicate is 0.013 by 200 replications; these 20 give 0.017.)
  const int reps = 20;
  std::vector<double> null_values;
  for (int r = 0; r < reps; ++r) {
    null_values.push_back(
        kernel_inception_distance(randn(200, 16, 100 + r), randn(200, 16, 200 + r), 1, 200));
  }
  double mean = 0.0;
  for (double v : null_values) mean += v / reps;
  double var = 0.0;
  for (double v : null_values) var += (v - mean) * (v - mean) / (reps - 1);
  const double sd = std::sqrt(var);
  EXPECT_LT(std::abs(mean), 5.0 * sd / std::sqrt(static_cast<double>(reps)));
  // A mean shift of 0.5 in every coordinate (KID 0.98 here) and a scale of 1.5 (0.33) lie
  // 20 or more null standard deviations from 0; require 10.
  const double shifted = kernel_inception_distance(randn(200, 16, 300), randn(200, 16, 301) + 0.5,
                                                   1, 200);
  EXPECT_GT(shifted, 10.0 * sd);
  // The default subset settings (capped at the 200 rows) behave the same way.
  const torch::Tensor x = randn(200, 16, 302);
  EXPECT_LT(std::abs(kernel_inception_distance(x, randn(200, 16, 303))), 5.0 * sd);
  EXPECT_GT(kernel_inception_distance(x, randn(200, 16, 304) * 1.5), 10.0 * sd);
}

TEST(FeatureMetrics, KidIsDeterministicPerSeed) {
  const torch::Tensor x = randn(300, 8, 51);
  const torch::Tensor y = randn(250, 8, 52) + 0.1;
  EXPECT_EQ(kernel_inception_distance(x, y, 5, 100, 9), kernel_inception_distance(x, y, 5, 100, 9));
  EXPECT_NE(kernel_inception_distance(x, y, 5, 100, 9),
            kernel_inception_distance(x, y, 5, 100, 10));
}

TEST(FeatureMetrics, PrecisionRecallMatchLoopReference) {
  const torch::Tensor real = randn(40, 4, 61);
  const torch::Tensor fake = randn(30, 4, 62) * 0.8 + 0.3;
  const Points pr = to_points(real);
  const Points pf = to_points(fake);
  for (int64_t k : {1, 3, 5}) {
    const PrecisionRecall got = precision_recall(real, fake, k);
    EXPECT_DOUBLE_EQ(got.precision, ref_coverage(pf, pr, ref_radii(pr, k))) << "k = " << k;
    EXPECT_DOUBLE_EQ(got.recall, ref_coverage(pr, pf, ref_radii(pf, k))) << "k = " << k;
  }
}

TEST(FeatureMetrics, PrecisionRecallMatchLoopReferenceAcrossRowBlocks) {
  // 2100 x 2100 distances span one block per 1997 rows, so both the radii and the coverage run
  // over two blocks, including the diagonal exclusion in the second.
  const torch::Tensor real = randn(2100, 3, 63);
  const torch::Tensor fake = randn(2100, 3, 64) * 1.2 + 0.2;
  const Points pr = to_points(real);
  const Points pf = to_points(fake);
  const PrecisionRecall got = precision_recall(real, fake, 3);
  EXPECT_DOUBLE_EQ(got.precision, ref_coverage(pf, pr, ref_radii(pr, 3)));
  EXPECT_DOUBLE_EQ(got.recall, ref_coverage(pr, pf, ref_radii(pf, 3)));
}

TEST(FeatureMetrics, PrecisionRecallOf4000By4000PointsMatchLoopReference) {
  // Point data as `eval` scores it: 4000 2-D rows per set (four row blocks), with duplicates: 100
  // real rows appear four times (k = 3 radius 0) and 50 fakes are exact copies of them, which a
  // closed ball of radius 0 holds.
  torch::Tensor real = randn(4000, 2, 65);
  for (int64_t copy = 1; copy <= 3; ++copy) real.narrow(0, 100 * copy, 100).copy_(real.narrow(0, 0, 100));
  torch::Tensor fake = randn(4000, 2, 66) * 1.1 + 0.1;
  fake.narrow(0, 0, 50).copy_(real.narrow(0, 0, 50));
  const Points pr = to_points(real);
  const Points pf = to_points(fake);
  const PrecisionRecall got = precision_recall(real, fake, 3);
  EXPECT_DOUBLE_EQ(got.precision, ref_coverage(pf, pr, ref_radii(pr, 3)));
  EXPECT_DOUBLE_EQ(got.recall, ref_coverage(pr, pf, ref_radii(pf, 3)));
  // Exact copies of real rows lie in the real manifold (at distance 0 of their own row).
  const PrecisionRecall copies = precision_recall(real, fake.narrow(0, 0, 50).repeat({2, 1}).contiguous(), 3);
  EXPECT_EQ(copies.precision, 1.0);
}

TEST(FeatureMetrics, PrecisionRecallLimitingCases) {
  const torch::Tensor real = randn(500, 16, 71);
  const PrecisionRecall same = precision_recall(real, real);
  EXPECT_EQ(same.precision, 1.0);
  EXPECT_EQ(same.recall, 1.0);
  const PrecisionRecall apart = precision_recall(real, randn(400, 16, 72) + 100.0);
  EXPECT_EQ(apart.precision, 0.0);
  EXPECT_EQ(apart.recall, 0.0);
  // Mode collapse: all fakes in a tiny cluster around one real point, well inside that point's
  // ball, whose own tiny balls can hold at most a handful of real points.
  const torch::Tensor collapsed = real[0] + 0.01 * randn(200, 16, 73);
  const PrecisionRecall collapse = precision_recall(real, collapsed);
  EXPECT_EQ(collapse.precision, 1.0);
  EXPECT_LT(collapse.recall, 0.01);
}

TEST(FeatureMetrics, ClassAccuracyCountsArgmaxHits) {
  const torch::Tensor logits = torch::tensor({{0.1, 2.0, -1.0},
                                              {3.0, 0.0, 0.5},
                                              {0.0, 0.2, 0.9},
                                              {1.0, 0.0, 0.0}});
  EXPECT_DOUBLE_EQ(class_accuracy(logits, torch::tensor({1, 0, 2, 2}, torch::kLong)), 0.75);
  EXPECT_DOUBLE_EQ(class_accuracy(logits, torch::tensor({1, 0, 2, 0}, torch::kInt)), 1.0);
  EXPECT_DOUBLE_EQ(class_accuracy(logits, torch::tensor({0, 1, 0, 1}, torch::kLong)), 0.0);
}

TEST(FeatureMetrics, RejectsMalformedInputs) {
  const torch::Tensor x = randn(10, 4, 81);
  const torch::Tensor other_dims = randn(10, 3, 82);
  EXPECT_THROW(feature_statistics(randn(1, 4, 83)), std::invalid_argument);
  EXPECT_THROW(feature_statistics(torch::zeros({10})), std::invalid_argument);
  EXPECT_THROW(feature_statistics(torch::ones({10, 4}, torch::kLong)), std::invalid_argument);
  EXPECT_THROW(frechet_distance(feature_statistics(x), feature_statistics(other_dims)),
               std::invalid_argument);
  EXPECT_THROW(frechet_distance(feature_statistics(x), FeatureStatistics{}),
               std::invalid_argument);
  const FeatureStatistics bad_cov{torch::zeros({4}, torch::kFloat64),
                                  torch::eye(3, torch::kFloat64), 10};
  EXPECT_THROW(frechet_distance(feature_statistics(x), bad_cov), std::invalid_argument);
  EXPECT_THROW(kernel_inception_distance(x, other_dims), std::invalid_argument);
  EXPECT_THROW(kernel_inception_distance(x, x, 0), std::invalid_argument);
  EXPECT_THROW(kernel_inception_distance(x, x, 10, 1), std::invalid_argument);
  EXPECT_THROW(precision_recall(x, other_dims), std::invalid_argument);
  EXPECT_THROW(precision_recall(x, x, 0), std::invalid_argument);
  EXPECT_THROW(precision_recall(x, randn(3, 4, 84), 3), std::invalid_argument);
  EXPECT_THROW(class_accuracy(torch::zeros({4, 3}), torch::zeros({3}, torch::kLong)),
               std::invalid_argument);
  EXPECT_THROW(class_accuracy(torch::zeros({4, 3}), torch::zeros({4})), std::invalid_argument);
  EXPECT_THROW(class_accuracy(torch::zeros({4}), torch::zeros({4}, torch::kLong)),
               std::invalid_argument);
}

}  // namespace
}  // namespace onestep
