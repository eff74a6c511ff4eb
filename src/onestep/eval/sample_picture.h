// One picture of a model's samples: for point data, scatter panels of held-out data and of
// the samples at each NFE on a shared axis range; for images, a grid of samples per NFE
// (one row per class for class-conditional models), side by side.
#pragma once

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace onestep {

// `reference`: held-out data (N x shape), or undefined for none; `samples`: (caption,
// N x shape) per panel, at least one; `image_columns`: images per grid row (0: a square grid).
// Returns H x W x C uint8, ready for write_png.
torch::Tensor render_sample_picture(const torch::Tensor& reference,
                                    const std::vector<std::pair<std::string, torch::Tensor>>& samples,
                                    int64_t image_columns = 0);

// Labels for a grid with one row per class: each of the `num_classes` classes `per_class`
// times, in order (use per_class as image_columns).
torch::Tensor class_row_labels(int64_t num_classes, int64_t per_class);

}  // namespace onestep
