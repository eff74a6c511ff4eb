// Image metrics from the evaluator's penultimate-layer features and logits: Frechet distance,
// KID, k-NN precision and recall (k = 3) against a reference image set (the held-out test
// split), and class accuracy for class-conditional samples. The reference features and their
// statistics are cached per dataset, evaluator hash and reference size.
#pragma once

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "onestep/eval/evaluator.h"

namespace onestep {

// Path of the reference cache: "<cache_dir>/<dataset>-<sha256[0:16]>-<n>.safetensors".
std::string reference_cache_path(const Evaluator& evaluator, const std::string& cache_dir, int64_t n);

// Metrics of `samples` (N x 1 x 28 x 28 in [-1, 1], N >= 4) against `reference_images`
// (M >= 4 of the same shape), in this order: "fd", "kid", "precision", "recall" and, when
// `requested_labels` (N class indices) is defined, "class_accuracy" (share of samples the
// evaluator classifies as their requested label). The reference features, mean and covariance
// are read from reference_cache_path(...) when that file exists and was made by this
// evaluator from these very images (checked by the SHA-256 of the image data); otherwise they
// are computed and written there (creating `cache_dir`). Throws UserError for bad shapes.
std::vector<std::pair<std::string, double>> image_metrics(Evaluator& evaluator, const torch::Tensor& samples,
                                                          const torch::Tensor& requested_labels,
                                                          const torch::Tensor& reference_images,
                                                          const std::string& cache_dir);

}  // namespace onestep
