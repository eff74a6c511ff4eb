// Linear assignment: a one-to-one matching of the n rows of an n x n cost matrix to its n
// columns with the least total cost, solved exactly by shortest augmenting paths (the
// Jonker-Volgenant scheme: column reduction, then one Dijkstra search with dual potentials per
// still-unmatched row), in float64, O(n^3) in the worst case and far less on typical inputs.
// Measured on one core for squared Euclidean costs of n = 2000 2-D points: 0.5 s between two
// checkerboard samples, 1.1 s between two Gaussian clouds whose means differ by 0.3. Used by
// the exact Wasserstein-2 distance of the point metrics and by the minibatch optimal-transport
// coupling of noise and data (methods/linear_path.h).
#pragma once

#include <cstdint>
#include <vector>

namespace onestep {

struct Assignment {
  std::vector<int64_t> column_of_row;  // row i is matched to column column_of_row[i]
  double cost = 0.0;                   // sum over i of cost(i, column_of_row[i])
};

// The minimum-cost perfect matching of `cost`, an n x n matrix stored row-major (cost[i * n + j]
// is the cost of matching row i to column j). Among several optimal matchings any one may be
// returned. Throws std::invalid_argument for n < 0, cost.size() != n * n or a non-finite entry;
// n = 0 gives an empty matching of cost 0.
Assignment min_cost_assignment(const std::vector<double>& cost, int64_t n);

}  // namespace onestep
