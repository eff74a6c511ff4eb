// Image metrics (see image_metrics.h): evaluator features of the samples against cached
// reference features, scored with the feature metrics of feature_metrics.h.
#include "onestep/eval/image_metrics.h"

#include <filesystem>
#include <sstream>

#include "onestep/core/error.h"
#include "onestep/core/safetensors.h"
#include "onestep/core/sha256.h"
#include "onestep/eval/feature_metrics.h"

namespace onestep {
namespace {

constexpr int64_t kNeighbours = kPrecisionRecallNeighbours;

struct ReferenceFeatures {
  torch::Tensor features;
  FeatureStatistics statistics;
};

// SHA-256 of the images as contiguous float32 values, identifying a reference set.
std::string images_sha256(const torch::Tensor& images) {
  const auto values = images.to(torch::kCPU, torch::kFloat).contiguous();
  Sha256 hasher;
  hasher.update(values.data_ptr(), static_cast<size_t>(values.numel()) * sizeof(float));
  return hasher.hex_digest();
}

// The cached reference when `path` holds one made by `evaluator` from images with hash
// `images_sha`; an undefined `features` tensor otherwise (absent, stale or unreadable cache).
ReferenceFeatures read_cache(const std::string& path, const Evaluator& evaluator, const std::string& images_sha,
                             int64_t n) {
  if (!std::filesystem::exists(path)) return {};
  SafetensorsFile file;
  try {
    file = read_safetensors(path);
  } catch (const UserError&) {
    return {};  // a damaged cache is recomputed and overwritten
  }
  const auto& meta = file.metadata;
  const auto& tensors = file.tensors;
  const bool matches = meta.count("evaluator_sha256") && meta.at("evaluator_sha256") == evaluator.sha256() &&
                       meta.count("images_sha256") && meta.at("images_sha256") == images_sha &&
                       tensors.count("features") && tensors.count("mean") && tensors.count("covariance") &&
                       tensors.at("features").dim() == 2 && tensors.at("features").size(0) == n &&
                       tensors.at("features").size(1) == EvaluatorNetImpl::kFeatureDim &&
                       tensors.at("mean").sizes() == torch::IntArrayRef{EvaluatorNetImpl::kFeatureDim} &&
                       tensors.at("covariance").sizes() ==
                           torch::IntArrayRef{EvaluatorNetImpl::kFeatureDim, EvaluatorNetImpl::kFeatureDim};
  if (!matches) return {};
  return {tensors.at("features").to(torch::kFloat),
          {tensors.at("mean").to(torch::kDouble), tensors.at("covariance").to(torch::kDouble), n}};
}

ReferenceFeatures reference_features(Evaluator& evaluator, const torch::Tensor& images, const std::string& cache_dir) {
  const int64_t n = images.size(0);
  const std::string path = reference_cache_path(evaluator, cache_dir, n);
  const std::string images_sha = images_sha256(images);
  ReferenceFeatures reference = read_cache(path, evaluator, images_sha, n);
  if (reference.features.defined()) return reference;

  reference.features = evaluator.features(images);
  reference.statistics = feature_statistics(reference.features);
  std::error_code error;
  std::filesystem::create_directories(cache_dir, error);
  if (error) throw UserError(cache_dir + ": cannot create the metrics cache folder: " + error.message());
  SafetensorsFile file;
  file.tensors = {{"features", reference.features},
                  {"mean", reference.statistics.mean},
                  {"covariance", reference.statistics.covariance}};
  file.metadata = {{"kind", "onestep-reference-features"},
                   {"dataset", evaluator.dataset()},
                   {"evaluator_sha256", evaluator.sha256()},
                   {"images_sha256", images_sha},
                   {"count", std::to_string(n)}};
  write_safetensors(path, file);
  return reference;
}

void check_set(const torch::Tensor& images, const char* what) {
  if (!images.defined() || images.dim() != 4 || images.size(0) <= kNeighbours) {
    std::ostringstream message;
    message << "image metrics need at least " << kNeighbours + 1 << " " << what << " images of shape N x C x H x W";
    if (images.defined()) message << ", got " << images.sizes();
    throw UserError(message.str());
  }
}

}  // namespace

std::string reference_cache_path(const Evaluator& evaluator, const std::string& cache_dir, int64_t n) {
  const std::string dataset = evaluator.dataset().empty() ? "unknown" : evaluator.dataset();
  return (std::filesystem::path(cache_dir) /
          (dataset + "-" + evaluator.sha256().substr(0, 16) + "-" + std::to_string(n) + ".safetensors"))
      .string();
}

std::vector<std::pair<std::string, double>> image_metrics(Evaluator& evaluator, const torch::Tensor& samples,
                                                          const torch::Tensor& requested_labels,
                                                          const torch::Tensor& reference_images,
                                                          const std::string& cache_dir) {
  check_set(samples, "sample");
  check_set(reference_images, "reference");
  if (requested_labels.defined() && (requested_labels.dim() != 1 || requested_labels.size(0) != samples.size(0))) {
    throw UserError("image metrics: " + std::to_string(samples.size(0)) + " samples need as many labels");
  }
  const ReferenceFeatures reference = reference_features(evaluator, reference_images, cache_dir);
  const torch::Tensor features = evaluator.features(samples);
  const PrecisionRecall pr = precision_recall(reference.features, features, kNeighbours);
  std::vector<std::pair<std::string, double>> metrics = {
      {"fd", frechet_distance(feature_statistics(features), reference.statistics)},
      {"kid", kernel_inception_distance(features, reference.features)},
      {"precision", pr.precision},
      {"recall", pr.recall}};
  if (requested_labels.defined()) {
    metrics.emplace_back("class_accuracy", class_accuracy(evaluator.logits(samples), requested_labels.to(torch::kCPU)));
  }
  return metrics;
}

}  // namespace onestep
