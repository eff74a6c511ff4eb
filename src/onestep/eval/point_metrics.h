// Distances between two point sets (N x D and M x D, D >= 1), used to score samples of
// low-dimensional data against held-out data:
//  - energy_distance: 2 E|X-Y| - E|X-X'| - E|Y-Y'| with every mean over all pairs (the
//    V-statistic: the energy distance between the two empirical measures, >= 0, 0 for identical
//    sets; two independent samples of one distribution sit at about E|X-X'| (1/N + 1/M));
//  - sliced_w2: sqrt of the mean over random unit directions of the squared 1-D Wasserstein-2
//    distance between the projections (quantile matching; exact in 1-D);
//  - mmd_rbf: unbiased squared MMD with a Gaussian kernel exp(-|a-b|^2 / (2 bw^2)), bandwidth bw
//    the median distance within the reference set Y (fixed per reference set).
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

}  // namespace onestep
