// Synthetic toy datasets drawn afresh for every batch: the 2-D classics (checkerboard, moons,
// 8gaussians, spirals, swissroll), all scaled to roughly [-2.5, 2.5]^2, and an isotropic
// Gaussian N(0, sigma^2 I) of any dimension.
#pragma once

#include "onestep/data/dataset.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace onestep {

// Keys of the `gaussian` data: data.sigma, data.dim.
struct GaussianDataOptions {
  double sigma = 1.0;
  int64_t dim = 2;
  static const OptionSchema<GaussianDataOptions>& schema();
};

// Builds the toy dataset `name` (one of toy_dataset_names()). `sigma` and `dim` are used only
// by "gaussian" (sigma > 0, dim >= 1). Throws UserError for an unknown name or bad sigma/dim.
std::unique_ptr<Dataset> make_toy_dataset(const std::string& name, double sigma, int64_t dim);

// "checkerboard", "moons", "8gaussians", "spirals", "swissroll", "gaussian".
const std::vector<std::string>& toy_dataset_names();

}  // namespace onestep
