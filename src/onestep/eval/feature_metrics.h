// Metrics between two sets of feature vectors (N x D and M x D, e.g. an evaluator network's
// penultimate-layer activations for real and generated images), all computed in float64:
//  - frechet_distance (FID when the features come from Inception): |mu1 - mu2|^2 + tr(S1) +
//    tr(S2) - 2 tr sqrt(S1 S2) between Gaussian fits given by feature_statistics;
//  - kernel_inception_distance (KID): unbiased MMD^2 with the cubic polynomial kernel
//    k(a, b) = (a.b / D + 1)^3, averaged over random equal-size subsets of the two sets;
//  - precision_recall: the k-nearest-neighbour manifold precision and recall of Kynkaanniemi et
//    al. (2019), also the precision and recall of point data (raw coordinates);
//  - class_accuracy: the share of rows whose argmax logit is the label.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace onestep {

// Gaussian fit of a feature set: mean (D), unbiased covariance (D x D, divided by N - 1), and
// the number of rows it came from. Both tensors are float64 on the CPU.
struct FeatureStatistics {
  torch::Tensor mean;
  torch::Tensor covariance;
  int64_t count;
};

// Needs an N x D floating-point tensor with N >= 2.
FeatureStatistics feature_statistics(const torch::Tensor& features);

// Frechet distance between the Gaussians N(a.mean, a.covariance) and N(b.mean, b.covariance).
// tr sqrt(S1 S2) is taken as tr sqrt(A S2 A) with A = S1^(1/2), both through symmetric
// eigendecompositions (no complex arithmetic); rounding-level negative eigenvalues count as 0.
double frechet_distance(const FeatureStatistics& a, const FeatureStatistics& b);

// Mean over `subsets` draws of the unbiased MMD^2 between min(subset_size, N, M) rows of x and
// as many rows of y, each drawn without replacement. Deterministic for a seed.
double kernel_inception_distance(const torch::Tensor& x, const torch::Tensor& y,
                                 int64_t subsets = 100, int64_t subset_size = 1000,
                                 uint64_t seed = 0);

struct PrecisionRecall {
  double precision;  // share of fake rows inside the real manifold
  double recall;     // share of real rows inside the fake manifold
};

// The k that `eval` uses, for image features and raw point coordinates alike.
constexpr int64_t kPrecisionRecallNeighbours = 3;

// The manifold of a set is the union of closed balls around its rows, each with radius the
// Euclidean distance to that row's k-th nearest other row of the same set. Needs 1 <= k < N, M.
// Works on any row vectors: evaluator features of images, and raw coordinates of point data
// (the point metrics of `eval` call this same function). Memory stays bounded (blocks of rows).
PrecisionRecall precision_recall(const torch::Tensor& real, const torch::Tensor& fake,
                                 int64_t k = kPrecisionRecallNeighbours);

// Share of rows i of the N x C `logits` with argmax_c logits[i][c] == labels[i] (labels: N
// integers).
double class_accuracy(const torch::Tensor& logits, const torch::Tensor& labels);

}  // namespace onestep
