// Tests for the point-set distances in eval/point_metrics: plain nested-loop float64 references
// on small sets, closed forms for 1-D Gaussians on large samples, exact W2 against all
// permutations, the sorted matching in 1-D and shifted copies, nearest-label assignment and mode
// coverage against loops and hand-counted cases, and sanity properties (symmetry, shift
// behaviour, seeding, argument checks).
#include "onestep/eval/point_metrics.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <vector>

namespace onestep {
namespace {

using Points = std::vector<std::vector<double>>;

const double kPi = std::acos(-1.0);

torch::Tensor randn(int64_t rows, int64_t dims, uint64_t seed,
                    torch::Dtype dtype = torch::kFloat64) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::randn({rows, dims}, gen, torch::TensorOptions().dtype(torch::kFloat64)).to(dtype);
}

Points to_points(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kFloat64).contiguous();
  const auto acc = c.accessor<double, 2>();
  Points p(c.size(0), std::vector<double>(c.size(1)));
  for (int64_t i = 0; i < c.size(0); ++i) {
    for (int64_t k = 0; k < c.size(1); ++k) p[i][k] = acc[i][k];
  }
  return p;
}

double dist(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t k = 0; k < a.size(); ++k) s += (a[k] - b[k]) * (a[k] - b[k]);
  return std::sqrt(s);
}

// Mean of f(|a_i - b_j|) over all pairs, or over i != j when `distinct` (a and b the same set).
template <typename F>
double ref_pair_mean(const Points& a, const Points& b, bool distinct, F f) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    for (size_t j = 0; j < b.size(); ++j) {
      if (!distinct || i != j) s += f(dist(a[i], b[j]));
    }
  }
  const double pairs = distinct ? a.size() * (a.size() - 1.0) : 1.0 * a.size() * b.size();
  return s / pairs;
}

// The V-statistic: every term a mean over all pairs, i = j included.
double ref_energy(const Points& x, const Points& y) {
  const auto id = [](double d) { return d; };
  return 2.0 * ref_pair_mean(x, y, false, id) - ref_pair_mean(x, x, false, id) -
         ref_pair_mean(y, y, false, id);
}

double ref_mmd(const Points& x, const Points& y, double bw) {
  const auto k = [bw](double d) { return std::exp(-d * d / (2.0 * bw * bw)); };
  return ref_pair_mean(x, x, true, k) + ref_pair_mean(y, y, true, k) -
         2.0 * ref_pair_mean(x, y, false, k);
}

double ref_median_distance(const Points& y) {
  std::vector<double> d;
  for (size_t i = 0; i < y.size(); ++i) {
    for (size_t j = i + 1; j < y.size(); ++j) d.push_back(dist(y[i], y[j]));
  }
  std::sort(d.begin(), d.end());
  const size_t n = d.size();
  return n % 2 == 1 ? d[n / 2] : 0.5 * (d[n / 2 - 1] + d[n / 2]);
}

// Quantile function of sorted sample `s` at level t, sample i at level (i + 0.5) / n, linear
// in between, constant beyond the extremes.
double ref_quantile(const std::vector<double>& s, double t) {
  const double n = static_cast<double>(s.size());
  const double pos = std::clamp(t * n - 0.5, 0.0, n - 1.0);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, s.size() - 1);
  const double w = pos - lo;
  return s[lo] * (1.0 - w) + s[hi] * w;
}

// Squared 1-D W2 between two samples: sorted matching for equal sizes, otherwise quantile
// functions compared on max(n, m) levels (k + 0.5) / max(n, m).
double ref_w2_squared_1d(std::vector<double> a, std::vector<double> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  const size_t levels = std::max(a.size(), b.size());
  double s = 0.0;
  for (size_t k = 0; k < levels; ++k) {
    const double t = (k + 0.5) / levels;
    const double diff = a.size() == b.size() ? a[k] - b[k] : ref_quantile(a, t) - ref_quantile(b, t);
    s += diff * diff;
  }
  return s / levels;
}

std::vector<double> project(const Points& p, const std::vector<double>& u) {
  std::vector<double> out;
  for (const auto& row : p) {
    double s = 0.0;
    for (size_t k = 0; k < u.size(); ++k) s += row[k] * u[k];
    out.push_back(s);
  }
  return out;
}

// Directions as the header's contract fixes them: standard normal rows (float64, CPU generator
// seeded with `seed`) scaled to unit length.
double ref_sliced_w2(const Points& x, const Points& y, int64_t num_directions, uint64_t seed) {
  const Points raw = to_points(randn(num_directions, x[0].size(), seed));
  double s = 0.0;
  for (std::vector<double> u : raw) {
    double norm = 0.0;
    for (double v : u) norm += v * v;
    for (double& v : u) v /= std::sqrt(norm);
    s += ref_w2_squared_1d(project(x, u), project(y, u));
  }
  return std::sqrt(s / num_directions);
}

void expect_rel_near(double actual, double expected, double rel) {
  EXPECT_NEAR(actual, expected, rel * std::abs(expected)) << "expected " << expected;
}

// Standard normal CDF.
double phi_cdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

// E|Z| for Z ~ N(d, c^2).
double mean_abs_normal(double d, double c) {
  return c * std::sqrt(2.0 / kPi) * std::exp(-d * d / (2.0 * c * c)) +
         d * (1.0 - 2.0 * phi_cdf(-d / c));
}

TEST(PointMetrics, EnergyOfSetWithItselfMatchesLoopReference) {
  const torch::Tensor x = randn(17, 2, 1);
  const Points p = to_points(x);
  const double ed = energy_distance(x, x);
  // The V-statistic is the energy distance between the two empirical measures: 0 for X vs X.
  EXPECT_NEAR(ed, 0.0, 1e-12);
  EXPECT_NEAR(ref_energy(p, p), 0.0, 1e-12);
}

TEST(PointMetrics, AllMetricsMatchLoopReferencesOnSmallSets) {
  const torch::Tensor x = randn(37, 3, 2) * 1.5 + 0.3;
  const torch::Tensor y = randn(53, 3, 3);
  const Points px = to_points(x);
  const Points py = to_points(y);
  expect_rel_near(energy_distance(x, y), ref_energy(px, py), 1e-9);
  expect_rel_near(mmd_rbf(x, y, 0.7), ref_mmd(px, py, 0.7), 1e-9);
  const double bw = ref_median_distance(py);
  expect_rel_near(median_distance(y), bw, 1e-12);
  expect_rel_near(mmd_rbf(x, y), ref_mmd(px, py, bw), 1e-9);
  // Unequal sizes take the quantile-grid path, equal sizes the sorted matching.
  expect_rel_near(sliced_w2(x, y, 16, 5), ref_sliced_w2(px, py, 16, 5), 1e-9);
  const torch::Tensor y_same_size = y.narrow(0, 0, 37);
  expect_rel_near(sliced_w2(x, y_same_size, 16, 5),
                  ref_sliced_w2(px, to_points(y_same_size), 16, 5), 1e-9);
}

TEST(PointMetrics, PairwiseMetricsMatchLoopReferencesAcrossRowBlocks) {
  // Large enough that the pairwise sums run over several row blocks, including the diagonal
  // exclusion of the within-set terms.
  const torch::Tensor x = randn(3000, 2, 91);
  const torch::Tensor y = randn(2000, 2, 92) * 0.8 + 0.4;
  const Points px = to_points(x);
  const Points py = to_points(y);
  const double ed = energy_distance(x, y);
  expect_rel_near(ed, ref_energy(px, py), 1e-9);
  expect_rel_near(energy_distance(y, x), ed, 1e-12);
  const double mmd = mmd_rbf(x, y, 0.9);
  expect_rel_near(mmd, ref_mmd(px, py, 0.9), 1e-9);
  expect_rel_near(mmd_rbf(y, x, 0.9), mmd, 1e-12);
}

TEST(PointMetrics, Float32InputsAreAccumulatedInFloat64) {
  const torch::Tensor x = randn(40, 2, 4, torch::kFloat32);
  const torch::Tensor y = randn(31, 2, 6, torch::kFloat32) + 0.5;
  const Points px = to_points(x);
  const Points py = to_points(y);
  expect_rel_near(energy_distance(x, y), ref_energy(px, py), 1e-9);
  expect_rel_near(mmd_rbf(x, y, 1.3), ref_mmd(px, py, 1.3), 1e-9);
  expect_rel_near(sliced_w2(x, y, 8, 9), ref_sliced_w2(px, py, 8, 9), 1e-9);
}

TEST(PointMetrics, OneDimensionalSlicedW2IsExactW2) {
  const torch::Tensor x = randn(29, 1, 7);
  const torch::Tensor y = randn(41, 1, 8) * 2.0 - 1.0;
  const double w2 = std::sqrt(ref_w2_squared_1d(project(to_points(x), {1.0}),
                                                project(to_points(y), {1.0})));
  // In 1-D the direction count and seed are irrelevant.
  expect_rel_near(sliced_w2(x, y, 3, 11), w2, 1e-9);
  expect_rel_near(sliced_w2(x, y, 100, 12), w2, 1e-9);
}

TEST(PointMetrics, MedianDistanceUsesFirst2000RowsOnly) {
  // 100 trailing far-away rows would dominate the median if they were included.
  const torch::Tensor head = randn(2000, 2, 13);
  const torch::Tensor y = torch::cat({head, randn(100, 2, 14) + 1e6});
  expect_rel_near(median_distance(y), ref_median_distance(to_points(head)), 1e-12);
}

TEST(PointMetrics, EnergyNearZeroForSameDistributionAndPositiveForShift) {
  const int64_t n = 4000;
  const torch::Tensor x = randn(n, 2, 21);
  const torch::Tensor y = randn(n, 2, 22);
  const torch::Tensor shift = torch::tensor({1.0, 0.0}, torch::kFloat64);
  // For equal distributions the V-statistic sits at its floor E|X - X'| (1/n + 1/m) = 0.00089
  // (E|X - X'| = sqrt(pi) = 1.77 for 2-D standard normals) with a spread of 6e-4 by replication.
  const double floor = std::sqrt(kPi) * 2.0 / n;
  EXPECT_LT(std::abs(energy_distance(x, y) - floor), 0.004);
  // A unit mean shift between 2-D standard normals gives ED of about 0.43 (standard deviation
  // 0.02 by replication); half of it is far beyond the noise.
  EXPECT_GT(energy_distance(x, y + shift), 0.2);
}

TEST(PointMetrics, EnergyMatchesClosedFormFor1DGaussians) {
  const int64_t n = 10000;
  const double m1 = 0.0, m2 = 1.0, s = 1.0;
  const torch::Tensor x = randn(n, 1, 31) * s + m1;
  const torch::Tensor y = randn(n, 1, 32) * s + m2;
  // X - Y ~ N(m1 - m2, 2 s^2) and E|X - X'| = 2 s / sqrt(pi); ED = 0.5418 here.
  const double exact = 2.0 * mean_abs_normal(m1 - m2, s * std::sqrt(2.0)) -
                       2.0 * (2.0 * s / std::sqrt(kPi));
  // Standard deviation c / sqrt(n), c = 1.44 by replication for these parameters (0.014 at
  // n = 10000), far above the V-statistic's bias of 2 E|X - X'| / n = 2.3e-4; allow 5 of them.
  EXPECT_NEAR(energy_distance(x, y), exact, 5.0 * 1.44 / std::sqrt(static_cast<double>(n)));
}

TEST(PointMetrics, SlicedW2MatchesClosedFormFor1DGaussians) {
  const int64_t n = 20000, m = 15000;
  const double m1 = 0.0, s1 = 1.0, m2 = 1.0, s2 = 2.0;
  const torch::Tensor x = randn(n, 1, 41) * s1 + m1;
  const torch::Tensor y = randn(m, 1, 42) * s2 + m2;
  const double exact_sq = (m1 - m2) * (m1 - m2) + (s1 - s2) * (s1 - s2);
  // To first order the estimate of W2^2 moves by 2 (m1 - m2) times the error of the sample mean
  // difference plus 2 (s1 - s2) times that of the sample standard deviation difference; the
  // sum of their standard deviations bounds its spread (0.061 here, 0.050 by replication).
  const double sd = 2.0 * std::abs(m1 - m2) * std::sqrt(s1 * s1 / n + s2 * s2 / m) +
                    2.0 * std::abs(s1 - s2) * std::sqrt(s1 * s1 / (2.0 * n) + s2 * s2 / (2.0 * m));
  const double w2 = sliced_w2(x, y);
  EXPECT_NEAR(w2 * w2, exact_sq, 5.0 * sd);
}

TEST(PointMetrics, MmdMatchesClosedFormFor1DGaussians) {
  const int64_t n = 5000;
  const double m1 = 0.0, m2 = 1.0, s = 1.0, b = 1.0;
  const torch::Tensor x = randn(n, 1, 51) * s + m1;
  const torch::Tensor y = randn(n, 1, 52) * s + m2;
  const double v = b * b + 2.0 * s * s;
  const double d = m1 - m2;
  const double exact = 2.0 * b / std::sqrt(v) * (1.0 - std::exp(-d * d / (2.0 * v)));  // 0.1773
  // Unbiased estimator with standard deviation c / sqrt(n), c = 0.50 by replication for these
  // parameters (0.0071 at n = 5000); allow 5 standard deviations.
  EXPECT_NEAR(mmd_rbf(x, y, b), exact, 5.0 * 0.50 / std::sqrt(static_cast<double>(n)));
}

TEST(PointMetrics, SlicedW2OfShiftedCopyAveragesSquaredProjectedShift) {
  // Every projection of X + v is that of X shifted by <u, v>, so its W2 is |<u, v>| exactly and
  // sliced_w2^2 is the mean of <u, v>^2 over directions: |v|^2 / D in expectation. For D = 2,
  // <u, v>^2 = |v|^2 cos^2(theta) has standard deviation |v|^2 / sqrt(8), so with 1024
  // directions the mean has standard deviation 0.011 |v|^2; allow 5 of them.
  const torch::Tensor x = randn(500, 2, 61);
  const torch::Tensor v = torch::tensor({0.6, -0.8}, torch::kFloat64);  // |v| = 1
  const double w2 = sliced_w2(x, x + v, 1024, 3);
  EXPECT_NEAR(w2 * w2, 0.5, 5.0 / (std::sqrt(8.0) * 32.0));
  EXPECT_NEAR(sliced_w2(x, x, 64, 3), 0.0, 1e-12);
}

TEST(PointMetrics, SlicedW2IsDeterministicPerSeed) {
  const torch::Tensor x = randn(300, 3, 71);
  const torch::Tensor y = randn(250, 3, 72) + 0.2;
  EXPECT_EQ(sliced_w2(x, y, 32, 9), sliced_w2(x, y, 32, 9));
  EXPECT_NE(sliced_w2(x, y, 32, 9), sliced_w2(x, y, 32, 10));
}

// sqrt of the least mean squared distance over all one-to-one matchings (n <= 8).
double ref_exact_w2(const Points& x, const Points& y) {
  std::vector<size_t> perm(x.size());
  std::iota(perm.begin(), perm.end(), 0);
  double best = std::numeric_limits<double>::infinity();
  do {
    double total = 0.0;
    for (size_t i = 0; i < x.size(); ++i) total += dist(x[i], y[perm[i]]) * dist(x[i], y[perm[i]]);
    best = std::min(best, total);
  } while (std::next_permutation(perm.begin(), perm.end()));
  return std::sqrt(best / x.size());
}

// W2 of two equal-size 1-D samples: the sorted matching is optimal on a line.
double ref_w2_1d(std::vector<double> a, std::vector<double> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(s / a.size());
}

TEST(PointMetrics, ExactW2MatchesAllPermutationsOnTinySets) {
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    for (int64_t n = 1; n <= 7; ++n) {
      const torch::Tensor x = randn(n, 2, 100 * seed + n);
      const torch::Tensor y = randn(n, 2, 100 * seed + n + 50) * 1.3 + 0.2;
      expect_rel_near(exact_w2(x, y), ref_exact_w2(to_points(x), to_points(y)), 1e-12);
      // Rounded to a coarse grid: duplicate points within and across the sets.
      const torch::Tensor gx = (x * 0.7).round();
      const torch::Tensor gy = (y * 0.7).round();
      EXPECT_NEAR(exact_w2(gx, gy), ref_exact_w2(to_points(gx), to_points(gy)), 1e-12) << "n = " << n;
    }
  }
}

TEST(PointMetrics, ExactW2OfShiftedOrShuffledCopyIsTheShiftLength) {
  // Against X + d every matching costs its cost against X plus |d|^2 (the cross term sums to 0
  // over a permutation), so the identity is optimal and W2 = |d|, on 2000 points, the default
  // maximum.
  const torch::Tensor x = randn(2000, 2, 101);
  const torch::Tensor d = torch::tensor({0.3, -0.4}, torch::kFloat64);  // |d| = 0.5
  EXPECT_NEAR(exact_w2(x, x + d), 0.5, 1e-9);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(102);
  const torch::Tensor shuffled = x.index_select(0, torch::randperm(2000, gen));
  EXPECT_NEAR(exact_w2(x, shuffled), 0.0, 1e-12);
  EXPECT_NEAR(exact_w2(shuffled + d, x), 0.5, 1e-9);
}

TEST(PointMetrics, ExactW2MatchesSortedMatchingIn1DOnLeadingRows) {
  // Unequal sizes: only the first min(N, M, max_rows) rows of each set take part.
  const torch::Tensor x = randn(700, 1, 111);
  const torch::Tensor y = randn(650, 1, 112) * 1.5 + 0.4;
  const std::vector<double> px = project(to_points(x), {1.0});
  const std::vector<double> py = project(to_points(y), {1.0});
  const auto head = [](const std::vector<double>& v, size_t m) { return std::vector<double>(v.begin(), v.begin() + m); };
  expect_rel_near(exact_w2(x, y), ref_w2_1d(head(px, 650), py), 1e-9);
  expect_rel_near(exact_w2(x, y, 300), ref_w2_1d(head(px, 300), head(py, 300)), 1e-9);
  // Float32 input gives the same as its float64 copy.
  EXPECT_DOUBLE_EQ(exact_w2(x.to(torch::kFloat32), y, 300), exact_w2(x.to(torch::kFloat32).to(torch::kFloat64), y, 300));
}

TEST(PointMetrics, NearestLabelsMatchLoopReference) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(121);
  torch::Tensor reference = randn(300, 2, 122);
  torch::Tensor labels = torch::randint(0, 5, {300}, gen, torch::kLong);
  // Row 9 duplicates row 4 with another label: the first of equally near rows decides.
  reference[9] = reference[4];
  labels[9] = (labels[4] + 1) % 5;
  torch::Tensor x = randn(2500, 2, 123) * 1.2;
  x[0] = reference[4];
  const Points pr = to_points(reference);
  const Points px = to_points(x);
  const torch::Tensor got = nearest_labels(x, reference, labels);
  ASSERT_EQ(got.size(0), 2500);
  int64_t mismatches = 0;
  for (size_t i = 0; i < px.size(); ++i) {
    size_t best = 0;
    for (size_t j = 1; j < pr.size(); ++j) {
      if (dist(px[i], pr[j]) < dist(px[i], pr[best])) best = j;
    }
    mismatches += got[i].item<int64_t>() != labels[best].item<int64_t>();
  }
  EXPECT_EQ(mismatches, 0);
  EXPECT_EQ(got[0].item<int64_t>(), labels[4].item<int64_t>());
}

TEST(PointMetrics, ModeCoverageCountsModesWithAFifthOfTheirFairShare) {
  // Modes with labels 0, 1, 2 and 4 (label 3 absent: not a mode) at (10 c, 0), held out 10, 10,
  // 20 and 40 times of 80; fair shares of 80 samples are 10, 10, 20 and 40, a fifth of them 2,
  // 2, 4 and 8 samples.
  const std::vector<int64_t> mode_labels = {0, 1, 2, 4};
  const auto cluster = [](int64_t label, int64_t count, uint64_t seed) {
    return randn(count, 2, seed) * 0.1 + torch::tensor({10.0 * label, 0.0}, torch::kFloat64);
  };
  const auto make = [&](const std::vector<int64_t>& counts, uint64_t seed) {
    std::vector<torch::Tensor> parts;
    for (size_t c = 0; c < counts.size(); ++c) parts.push_back(cluster(mode_labels[c], counts[c], seed + c));
    return torch::cat(parts);
  };
  const std::vector<int64_t> ref_counts = {10, 10, 20, 40};
  const torch::Tensor reference = make(ref_counts, 131);
  std::vector<torch::Tensor> label_parts;
  for (size_t c = 0; c < ref_counts.size(); ++c) {
    label_parts.push_back(torch::full({ref_counts[c]}, mode_labels[c], torch::kLong));
  }
  const torch::Tensor labels = torch::cat(label_parts);
  // Exactly a fifth counts; one sample fewer does not.
  EXPECT_EQ(mode_coverage(make({2, 2, 4, 72}, 141), reference, labels), 1.0);
  EXPECT_EQ(mode_coverage(make({2, 1, 3, 74}, 151), reference, labels), 0.5);
  EXPECT_EQ(mode_coverage(make({0, 0, 0, 80}, 161), reference, labels), 0.25);
  EXPECT_EQ(mode_coverage(make({8, 8, 16, 1}, 171), reference, labels), 0.75);  // 1 of 33 < 3.3
}

TEST(PointMetrics, RejectsMalformedInputs) {
  const torch::Tensor x = randn(10, 2, 81);
  EXPECT_THROW(energy_distance(x, randn(10, 3, 82)), std::invalid_argument);
  EXPECT_THROW(sliced_w2(x, randn(10, 3, 82)), std::invalid_argument);
  EXPECT_THROW(mmd_rbf(x, randn(10, 3, 82)), std::invalid_argument);
  EXPECT_THROW(energy_distance(x, torch::zeros({10}, torch::kFloat64)), std::invalid_argument);
  EXPECT_THROW(energy_distance(torch::zeros({4, 2, 1}), x), std::invalid_argument);
  EXPECT_THROW(mmd_rbf(randn(1, 2, 83), x), std::invalid_argument);
  EXPECT_THROW(median_distance(randn(1, 2, 84)), std::invalid_argument);
  EXPECT_THROW(energy_distance(x, torch::ones({10, 2}, torch::kLong)), std::invalid_argument);
  EXPECT_THROW(mmd_rbf(x, x, 0.0), std::invalid_argument);
  EXPECT_THROW(sliced_w2(x, x, 0), std::invalid_argument);
  EXPECT_THROW(exact_w2(x, randn(10, 3, 82)), std::invalid_argument);
  EXPECT_THROW(exact_w2(x, x, 0), std::invalid_argument);
  EXPECT_THROW(exact_w2(x, torch::zeros({0, 2}, torch::kFloat64)), std::invalid_argument);
  const torch::Tensor labels = torch::zeros({10}, torch::kLong);
  EXPECT_THROW(mode_coverage(x, x, torch::zeros({9}, torch::kLong)), std::invalid_argument);
  EXPECT_THROW(mode_coverage(x, x, torch::zeros({10}, torch::kFloat32)), std::invalid_argument);
  EXPECT_THROW(mode_coverage(x, x, labels - 1), std::invalid_argument);
  EXPECT_THROW(mode_coverage(x, randn(10, 3, 82), labels), std::invalid_argument);
  EXPECT_THROW(nearest_labels(x, x, torch::Tensor()), std::invalid_argument);
}

}  // namespace
}  // namespace onestep
