// Tests for the linear assignment solver in core/assignment: the least cost over all n!
// permutations (brute force) on small random matrices, with continuous costs, heavily tied
// integer costs and squared distances between point sets with duplicate points; the sorted
// matching, optimal for squared distances on a line, on large 1-D instances; argument checks.
#include "onestep/core/assignment.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

namespace onestep {
namespace {

// Least total cost over all permutations of 0..n-1 (n <= 8).
double brute_force_min_cost(const std::vector<double>& cost, int64_t n) {
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  double best = std::numeric_limits<double>::infinity();
  do {
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) total += cost[static_cast<size_t>(i * n + perm[i])];
    best = std::min(best, total);
  } while (std::next_permutation(perm.begin(), perm.end()));
  return n == 0 ? 0.0 : best;
}

// Checks that `a` is a permutation whose reported cost is the sum of its entries and equals the
// brute-force optimum.
void expect_optimal(const std::vector<double>& cost, int64_t n, const Assignment& a, const char* what) {
  ASSERT_EQ(a.column_of_row.size(), static_cast<size_t>(n)) << what;
  std::vector<int64_t> sorted = a.column_of_row;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(sorted[i], i) << what << ": not a permutation";
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += cost[static_cast<size_t>(i * n + a.column_of_row[i])];
  EXPECT_NEAR(a.cost, total, 1e-12 * (1.0 + std::abs(total))) << what;
  const double best = brute_force_min_cost(cost, n);
  EXPECT_NEAR(a.cost, best, 1e-9 * (1.0 + std::abs(best))) << what << ", n = " << n;
}

// Squared Euclidean distances between two 2-D point sets (x, y interleaved).
std::vector<double> squared_distances(const std::vector<double>& a, const std::vector<double>& b, int64_t n) {
  std::vector<double> cost(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const double dx = a[2 * i] - b[2 * j], dy = a[2 * i + 1] - b[2 * j + 1];
      cost[static_cast<size_t>(i * n + j)] = dx * dx + dy * dy;
    }
  }
  return cost;
}

TEST(Assignment, MatchesBruteForceOnRandomMatrices) {
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    std::mt19937_64 gen(seed);
    std::uniform_real_distribution<double> uniform(-5.0, 10.0);
    for (int64_t n = 0; n <= 7; ++n) {
      std::vector<double> cost(static_cast<size_t>(n * n));
      for (double& c : cost) c = uniform(gen);
      expect_optimal(cost, n, min_cost_assignment(cost, n), "uniform costs");
    }
  }
}

TEST(Assignment, MatchesBruteForceWithTiesAndDuplicatePoints) {
  for (uint64_t seed = 11; seed <= 16; ++seed) {
    std::mt19937_64 gen(seed);
    for (int64_t n = 1; n <= 7; ++n) {
      // Integer costs in 0..2: many optimal matchings and ties everywhere in the searches.
      std::uniform_int_distribution<int> small(0, 2);
      std::vector<double> tied(static_cast<size_t>(n * n));
      for (double& c : tied) c = small(gen);
      expect_optimal(tied, n, min_cost_assignment(tied, n), "tied integer costs");
      // Points on a 2 x 2 grid, so both sets repeat points: equal rows and equal columns.
      std::uniform_int_distribution<int> coord(0, 1);
      std::vector<double> a(static_cast<size_t>(2 * n)), b(static_cast<size_t>(2 * n));
      for (double& v : a) v = coord(gen);
      for (double& v : b) v = coord(gen) + 0.5;
      const std::vector<double> cost = squared_distances(a, b, n);
      expect_optimal(cost, n, min_cost_assignment(cost, n), "duplicate points");
    }
    // A constant matrix: every permutation is optimal.
    const std::vector<double> constant(49, 3.25);
    expect_optimal(constant, 7, min_cost_assignment(constant, 7), "constant costs");
  }
}

TEST(Assignment, MatchesSortedMatchingOfLargeOneDimensionalSets) {
  // For squared distances on a line, matching the sorted sets is optimal. Shuffled inputs and a
  // shift make the solver do real work.
  const int64_t n = 800;
  std::mt19937_64 gen(21);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> x(n), y(n);
  for (double& v : x) v = normal(gen);
  for (double& v : y) v = 1.5 * normal(gen) + 0.4;
  std::vector<double> cost(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) cost[static_cast<size_t>(i * n + j)] = (x[i] - y[j]) * (x[i] - y[j]);
  }
  std::vector<double> xs = x, ys = y;
  std::sort(xs.begin(), xs.end());
  std::sort(ys.begin(), ys.end());
  double sorted_cost = 0.0;
  for (int64_t i = 0; i < n; ++i) sorted_cost += (xs[i] - ys[i]) * (xs[i] - ys[i]);
  const Assignment a = min_cost_assignment(cost, n);
  EXPECT_NEAR(a.cost, sorted_cost, 1e-9 * sorted_cost);
}

TEST(Assignment, RejectsMalformedInputs) {
  EXPECT_THROW(min_cost_assignment({1.0, 2.0, 3.0}, 2), std::invalid_argument);
  EXPECT_THROW(min_cost_assignment({}, -1), std::invalid_argument);
  EXPECT_THROW(min_cost_assignment({1.0, std::nan(""), 0.0, 1.0}, 2), std::invalid_argument);
  EXPECT_THROW(min_cost_assignment({1.0, std::numeric_limits<double>::infinity(), 0.0, 1.0}, 2),
               std::invalid_argument);
  const Assignment empty = min_cost_assignment({}, 0);
  EXPECT_TRUE(empty.column_of_row.empty());
  EXPECT_EQ(empty.cost, 0.0);
}

}  // namespace
}  // namespace onestep
