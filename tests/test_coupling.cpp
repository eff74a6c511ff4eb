// Tests for the pairing of noise and data (Coupling in methods/linear_path): `independent`
// keeps the draws; `minibatch-ot` returns a permutation of the noise rows whose total squared
// distance to the data is the least over all permutations (brute force on small batches), and
// with labels permutes only within each class.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <vector>

#include "onestep/methods/linear_path.h"

namespace onestep {
namespace {

// Least sum over i of |x_i - e_perm(i)|^2 over all permutations of the rows listed in `rows`.
double brute_force_cost(const torch::Tensor& x, const torch::Tensor& e, const std::vector<int64_t>& rows) {
  std::vector<int64_t> perm = rows;
  std::sort(perm.begin(), perm.end());
  double best = std::numeric_limits<double>::infinity();
  do {
    double total = 0.0;
    for (size_t i = 0; i < rows.size(); ++i) total += (x[rows[i]] - e[perm[i]]).pow(2).sum().item<double>();
    best = std::min(best, total);
  } while (std::next_permutation(perm.begin(), perm.end()));
  return best;
}

double paired_cost(const torch::Tensor& x, const torch::Tensor& e, const std::vector<int64_t>& rows) {
  double total = 0.0;
  for (const auto i : rows) total += (x[i] - e[i]).pow(2).sum().item<double>();
  return total;
}

// The row of `e` that `row` equals exactly, or -1.
int64_t source_row(const torch::Tensor& e, const torch::Tensor& row) {
  for (int64_t j = 0; j < e.size(0); ++j)
    if (torch::equal(e[j], row)) return j;
  return -1;
}

TEST(Coupling, IndependentKeepsTheDraws) {
  const auto x = torch::randn({6, 2}, torch::kDouble), e = torch::randn({6, 2}, torch::kDouble);
  EXPECT_TRUE(torch::equal(Coupling{}.pair(x, e, {}), e));
}

TEST(Coupling, MinibatchOtIsTheLeastCostPermutationOfTheDraws) {
  torch::manual_seed(3);
  const Coupling ot{"minibatch-ot"};
  for (int trial = 0; trial < 4; ++trial) {
    const auto x = torch::randn({7, 3}, torch::kDouble) * 2 + 1, e = torch::randn({7, 3}, torch::kDouble);
    const auto paired = ot.pair(x, e, {});
    std::vector<int64_t> sources;
    for (int64_t i = 0; i < 7; ++i) sources.push_back(source_row(e, paired[i]));
    std::sort(sources.begin(), sources.end());
    for (int64_t i = 0; i < 7; ++i) ASSERT_EQ(sources[i], i) << "not a permutation of the noise rows";
    std::vector<int64_t> all(7);
    std::iota(all.begin(), all.end(), 0);
    EXPECT_NEAR(paired_cost(x, paired, all), brute_force_cost(x, e, all), 1e-9);
    EXPECT_LT(paired_cost(x, paired, all), paired_cost(x, e, all) + 1e-12);
  }
}

TEST(Coupling, MinibatchOtPairsWithinEachClass) {
  torch::manual_seed(4);
  // Two interleaved classes, one shifted far away: a pairing across classes would hand the shifted
  // class whichever noise draws point its way.
  const auto labels = torch::tensor({0, 1, 1, 0, 1, 0, 0, 1}, torch::kLong);
  const auto x = torch::randn({8, 2}, torch::kDouble) + per_sample(labels.to(torch::kDouble), 2) * 10;
  const auto e = torch::randn({8, 2}, torch::kDouble);
  const auto paired = Coupling{"minibatch-ot"}.pair(x, e, labels);
  for (const int64_t cls : {0, 1}) {
    std::vector<int64_t> rows;
    for (int64_t i = 0; i < 8; ++i)
      if (labels[i].item<int64_t>() == cls) rows.push_back(i);
    std::vector<int64_t> sources;
    for (const auto i : rows) sources.push_back(source_row(e, paired[i]));
    std::sort(sources.begin(), sources.end());
    EXPECT_EQ(sources, rows) << "class " << cls << " took noise drawn for the other class";
    EXPECT_NEAR(paired_cost(x, paired, rows), brute_force_cost(x, e, rows), 1e-9) << "class " << cls;
  }
}

}  // namespace
}  // namespace onestep
