// Distances between two point sets (N x D and M x D, D >= 1), used to score samples of
// low-dimensional data against held-out data:
//  - energy_distance: 2 E|X-Y| - E|X-X'| - E|Y-Y'| with every mean over all pairs (the
//    V-statistic: the energy distance between the two empirical measures, >= 0, 0 for identical
//    sets; two independent samples of one distribution sit at about E|X-X'| (1/N + 1/M));
//  - sliced_w2: sqrt of the mean over random unit directions of the squared 1-D Wasserstein-2
//    distance between the projections (quantile matching; exact in 1-D);
//  - mmd_rbf: unbiased squared MMD with a Gaussian kernel exp(-|a-b|^2 / (2 bw^2)), bandwidth bw
//    the median distance within the reference set Y (fixed per reference set);
//  - exact_w2: the exact Wasserstein-2 distance between equal-size sets, sqrt of the least mean
//    squared Euclidean distance over one-to-one matchings (an assignment problem, solved
//    exactly; core/assignment.h);
//  - mode_coverage: for class-labelled reference data, the share of classes (modes) that
//    receive at least a fifth of their fair share of X, each row of X counting for the class of
//    its nearest reference row.
// k-NN precision and recall, the remaining point metrics of `eval`, are the feature metrics'
// precision_recall applied to raw coordinates (feature_metrics.h).
// All accumulate in float64.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace onestep {

double energy_distance(const torch::Tensor& x, const torch::Tensor& y);
double sliced_w2(const torch::Tensor& x, const torch::Tensor& y, int64_t num_directions = 256,
                 uint64_t seed = 0);
double mmd_rbf(const torch::Tensor& x, const torch::Tensor& y);
// The bandwidth mmd_rbf uses for reference set y.
double median_distance(const torch::Tensor& y);
double mmd_rbf(const torch::Tensor& x, const torch::Tensor& y, double bandwidth);

// The number of leading rows of each set `exact_w2` matches by default: the assignment costs
// up to O(n^3) time and n^2 float64 of memory (32 MiB and about a second for 2000 2-D points).
constexpr int64_t kExactW2MaxRows = 2000;
// Exact W2 between the first m = min(N, M, max_rows) rows of x and of y:
// sqrt(min over permutations s of (1/m) sum_i |x_i - y_s(i)|^2).
double exact_w2(const torch::Tensor& x, const torch::Tensor& y, int64_t max_rows = kExactW2MaxRows);

// Class of the nearest row of `reference` (exact Euclidean distance; among equally near rows
// the first) for each row of x; `labels` holds one integer class >= 0 per reference row.
torch::Tensor nearest_labels(const torch::Tensor& x, const torch::Tensor& reference,
                             const torch::Tensor& labels);
// Share of the classes present in `labels` (the modes) that hold at least a fifth of their
// fair share of the rows of x, fair share being the class's share of the reference rows: class
// c is covered when count_x(c) / N >= (1/5) count_ref(c) / M, with rows of x assigned by
// nearest_labels. 1 when every mode gets samples in about the right amount, k/C when the
// samples sit on k of C equally likely modes.
double mode_coverage(const torch::Tensor& x, const torch::Tensor& reference, const torch::Tensor& labels);

}  // namespace onestep
