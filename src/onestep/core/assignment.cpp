// Shortest-augmenting-path linear assignment (see assignment.h). Dual potentials v live on the
// columns; the potential of a matched row i is implicit, u_i = c(i, col(i)) - v(col(i)), and the
// invariant is c(i, k) - u_i - v_k >= 0 for every row i and column k, with equality on matched
// pairs. Each unmatched row then reaches a free column along a path of least reduced cost
// (Dijkstra over columns, distances non-negative by the invariant); the potentials of the
// columns settled before the free one are moved so that the invariant survives the flip of the
// path, which matches one more row. After n rows the matching is optimal by complementary
// slackness.
#include "onestep/core/assignment.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

namespace onestep {
namespace {

// The running choice of the next column to settle: least distance, among equals a free column
// (it ends the search).
struct Nearest {
  int64_t index = -1;
  double dist = std::numeric_limits<double>::infinity();
  bool free = false;

  void offer(int64_t candidate, double candidate_dist, int64_t candidate_row) {
    if (candidate_dist < dist || index == -1 || (candidate_dist == dist && !free && candidate_row == -1)) {
      index = candidate;
      dist = candidate_dist;
      free = candidate_row == -1;
    }
  }
};

}  // namespace

Assignment min_cost_assignment(const std::vector<double>& cost, int64_t n) {
  if (n < 0) throw std::invalid_argument("min_cost_assignment needs n >= 0, got " + std::to_string(n));
  const auto size = static_cast<size_t>(n);
  if (cost.size() != size * size) {
    throw std::invalid_argument("min_cost_assignment needs an n x n cost matrix (n = " + std::to_string(n) +
                                "), got " + std::to_string(cost.size()) + " entries");
  }
  for (const double c : cost) {
    if (!std::isfinite(c)) throw std::invalid_argument("min_cost_assignment needs finite costs");
  }
  const auto row = [&cost, size](int64_t i) { return cost.data() + static_cast<size_t>(i) * size; };

  std::vector<double> v(size);
  std::vector<int64_t> row_of_col(size, -1);
  std::vector<int64_t> col_of_row(size, -1);

  // 1. Column reduction: v_j = min_i c(i, j), so every reduced cost c(i, j) - v_j is >= 0 with
  // u = 0; column j is matched to its minimising row when that row is still free (a zero
  // reduced cost, as the invariant asks of matched pairs).
  // Row by row, for contiguous reads; ties go to the first row.
  std::vector<int64_t> argmin(size, 0);
  if (n > 0) std::copy(row(0), row(0) + n, v.begin());
  for (int64_t i = 1; i < n; ++i) {
    const double* c = row(i);
    for (int64_t j = 0; j < n; ++j) {
      if (c[j] < v[j]) {
        v[j] = c[j];
        argmin[j] = i;
      }
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    if (col_of_row[argmin[j]] == -1) {
      col_of_row[argmin[j]] = j;
      row_of_col[j] = argmin[j];
    }
  }

  // 2. Reduction transfer: lower v of each matched column by the least reduced cost of the
  // other columns of its row, which leaves that column the row's cheapest and makes the column
  // less attractive to every other row.
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j1 = col_of_row[i];
    if (j1 == -1) continue;
    const double* c = row(i);
    double least = std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < n; ++j) {
      if (j != j1) least = std::min(least, c[j] - v[j]);
    }
    if (std::isfinite(least)) v[j1] -= least;
  }

  std::vector<int64_t> free_rows;
  for (int64_t i = 0; i < n; ++i) {
    if (col_of_row[i] == -1) free_rows.push_back(i);
  }

  // 3. Augmenting row reduction, two passes: a free row takes its cheapest column j1, whose v
  // drops by the gap to the row's second-cheapest (so j1 stays the row's cheapest); j1's former
  // row becomes free and, when the gap was positive, continues at once. Each pass does at most
  // kReductionBudget * n steps, so rounding-level gaps cannot make it crawl; rows it leaves free
  // go to phase 4.
  constexpr int64_t kReductionBudget = 8;
  for (int pass = 0; pass < 2 && !free_rows.empty(); ++pass) {
    std::vector<int64_t> pending;
    pending.swap(free_rows);
    int64_t budget = kReductionBudget * n;
    size_t next = 0;
    while (next < pending.size()) {
      const int64_t i = pending[next++];
      if (budget-- <= 0) {
        free_rows.push_back(i);
        continue;
      }
      const double* c = row(i);
      double least = c[0] - v[0], second = std::numeric_limits<double>::infinity();
      int64_t j1 = 0, j2 = -1;
      for (int64_t j = 1; j < n; ++j) {
        const double h = c[j] - v[j];
        if (h < second) {
          if (h >= least) {
            second = h;
            j2 = j;
          } else {
            second = least;
            j2 = j1;
            least = h;
            j1 = j;
          }
        }
      }
      int64_t displaced = row_of_col[j1];
      const bool gap = j2 == -1 || least < second;
      if (gap) {
        if (j2 != -1) v[j1] -= second - least;
      } else if (displaced != -1) {
        // A tie: j2 is as cheap as j1 and may be free.
        j1 = j2;
        displaced = row_of_col[j1];
      }
      if (displaced != -1) col_of_row[displaced] = -1;
      col_of_row[i] = j1;
      row_of_col[j1] = i;
      if (displaced != -1) {
        if (gap) {
          pending[--next] = displaced;
        } else {
          free_rows.push_back(displaced);
        }
      }
    }
  }

  // 4. Shortest augmenting paths for the rows still free: Dijkstra over the columns. Its state
  // is kept by position, not by column, so that the inner loop reads contiguous memory:
  // position t holds column at[t] with its distance, predecessor row and potential;
  // positions [0, settled) hold the settled columns in settling order, [settled, n) the rest.
  std::vector<int64_t> at(size);
  std::vector<double> dist(size);
  std::vector<int64_t> pred(size);
  std::vector<double> potential(size);
  std::vector<int64_t> pred_of_col(size);
  for (const int64_t free_row : free_rows) {
    // Distances are reduced costs shifted by the constant -u(free_row), which needs no value.
    const double* c = row(free_row);
    Nearest best;
    for (int64_t j = 0; j < n; ++j) {
      at[j] = j;
      potential[j] = v[j];
      dist[j] = c[j] - v[j];
      pred[j] = free_row;
      best.offer(j, dist[j], row_of_col[j]);
    }
    int64_t settled = 0;
    int64_t sink = -1;
    double reach = 0.0;  // distance of the column settled last
    while (true) {
      // Settle the unsettled column of least distance.
      const int64_t s = settled++;
      std::swap(at[s], at[best.index]);
      std::swap(dist[s], dist[best.index]);
      std::swap(pred[s], pred[best.index]);
      std::swap(potential[s], potential[best.index]);
      const int64_t j = at[s];
      reach = dist[s];
      if (row_of_col[j] == -1) {
        sink = j;
        break;
      }
      // Relax the unsettled columns through j's row i: reaching k from i costs the reduced cost
      // c(i, k) - u_i - v_k on top of dist(j), with u_i = c(i, j) - v_j. The same pass finds
      // the next column to settle.
      const int64_t i = row_of_col[j];
      const double* ci = row(i);
      const double offset = reach - (ci[j] - potential[s]);
      best = Nearest();
      for (int64_t t = settled; t < n; ++t) {
        double d = dist[t];
        const double through = ci[at[t]] - potential[t] + offset;
        if (through < d) {
          d = through;
          dist[t] = d;
          pred[t] = i;
        }
        if (d <= best.dist) best.offer(t, d, row_of_col[at[t]]);
      }
    }
    // Potentials: every settled column k moves by dist(k) - reach <= 0, which keeps all reduced
    // costs non-negative and makes the path to the sink tight.
    for (int64_t t = 0; t < settled; ++t) {
      v[at[t]] += dist[t] - reach;
      pred_of_col[at[t]] = pred[t];
    }
    // Flip the path (settled columns only): each row on it takes the column it was reached
    // through.
    for (int64_t j = sink;;) {
      const int64_t i = pred_of_col[j];
      row_of_col[j] = i;
      std::swap(col_of_row[i], j);
      if (i == free_row) break;
    }
  }

  Assignment result;
  result.column_of_row = std::move(col_of_row);
  for (int64_t i = 0; i < n; ++i) result.cost += row(i)[result.column_of_row[i]];
  return result;
}

}  // namespace onestep
