// Evaluation protocol, table and JSON (see evaluate.h).
#include "onestep/eval/evaluate.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "onestep/core/error.h"
#include "onestep/core/progress.h"
#include "onestep/eval/evaluator.h"
#include "onestep/eval/feature_metrics.h"
#include "onestep/eval/image_metrics.h"
#include "onestep/eval/point_metrics.h"

namespace onestep {

torch::Tensor generate_samples(Method& method, const ModuleSet& modules, const std::vector<int64_t>& noise_shape,
                               int64_t num, const torch::Tensor& labels, const SamplingPlan& plan, uint64_t seed,
                               const torch::Device& device, const SampleSharing* sharing) {
  constexpr int64_t kChunk = 2048;
  auto gen = at::detail::createCPUGenerator(seed);
  std::vector<int64_t> shape = {num};
  shape.insert(shape.end(), noise_shape.begin(), noise_shape.end());
  const auto noise = torch::randn(shape, gen);
  const int64_t begin = sharing ? sharing->rank * num / sharing->size : 0;
  const int64_t stop = sharing ? (sharing->rank + 1) * num / sharing->size : num;
  std::vector<torch::Tensor> chunks;
  for (int64_t start = begin; start < stop; start += kChunk) {
    const int64_t end = std::min(stop, start + kChunk);
    const auto chunk_labels = labels.defined() ? labels.slice(0, start, end).to(device) : torch::Tensor();
    chunks.push_back(method.sample(modules, noise.slice(0, start, end).to(device), chunk_labels, plan).cpu());
  }
  if (!sharing) return torch::cat(chunks);
  return sharing->gather(chunks.empty() ? torch::Tensor() : torch::cat(chunks), num);
}

std::string describe_nfe(const NfeCount& count) {
  std::string text = std::to_string(count.backbone) + " NFE";
  if (count.head > 0) text += " + " + std::to_string(count.head) + " head NFE";
  return text;
}

namespace {

// The point metrics of `samples` against the held-out `reference` (rows of float64), whose
// labels (undefined for unlabelled data) give the modes of `coverage`.
EvalRow score_points(const torch::Tensor& samples, const torch::Tensor& reference,
                     const torch::Tensor& reference_labels, double bandwidth) {
  const auto points = samples.reshape({samples.size(0), -1}).to(torch::kDouble);
  if (std::min(points.size(0), reference.size(0)) <= kPrecisionRecallNeighbours)
    throw UserError("point metrics need at least " + std::to_string(kPrecisionRecallNeighbours + 1) +
                    " samples and held-out samples (precision and recall use k = " +
                    std::to_string(kPrecisionRecallNeighbours) + " neighbours); raise eval.num");
  const PrecisionRecall pr = precision_recall(reference, points, kPrecisionRecallNeighbours);
  EvalRow row;
  row.metrics = {{"energy_distance", energy_distance(points, reference)},
                 {"sliced_w2", sliced_w2(points, reference)},
                 {"mmd_rbf", mmd_rbf(points, reference, bandwidth)},
                 {"w2", exact_w2(points, reference)},
                 {"precision", pr.precision},
                 {"recall", pr.recall}};
  if (reference_labels.defined()) row.metrics.emplace_back("coverage", mode_coverage(points, reference, reference_labels));
  return row;
}

}  // namespace

namespace {

std::string default_cache_dir() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return std::string(xdg) + "/onestep";
  if (const char* home = std::getenv("HOME"); home && *home) return std::string(home) + "/.cache/onestep";
  return ".onestep-cache";
}

}  // namespace

namespace {

// One progress line per evaluated NFE, "eval: 50 NFE, 10000 samples ... 3m05s", since a
// many-step evaluation of images can take a while on a CPU.
class NfeProgress {
 public:
  NfeProgress(const NfeCount& nfe, int64_t count) : start_(std::chrono::steady_clock::now()) {
    std::printf("eval: %s, %lld samples ... ", describe_nfe(nfe).c_str(), static_cast<long long>(count));
    std::fflush(stdout);
  }
  ~NfeProgress() {
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::printf("%s\n", format_duration(seconds).c_str());
    std::fflush(stdout);
  }
  NfeProgress(const NfeProgress&) = delete;
  NfeProgress& operator=(const NfeProgress&) = delete;

 private:
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

std::string evaluation_unavailable(const Dataset& dataset, const Config& config) {
  const std::string& data = config.get_string("data.name");
  if (dataset.sample_shape().size() == 1 || !config.get_string("eval.evaluator").empty() || data == "fashion-mnist")
    return "";
  return "data.name = '" + data + "': image metrics need an evaluator trained on this data, and onestep ships one " +
         "for fashion-mnist only; set eval.evaluator";
}

EvalReport evaluate(Method& method, const ModuleSet& modules, Dataset& dataset, const Config& config,
                    const torch::Device& device, const SampleSharing* sharing) {
  const auto step_counts = config.get_int_list("eval.nfe");
  const auto noise_shape = method.noise_shape({dataset.sample_shape(), dataset.num_classes()});
  // Samples of one plan, and the row they are scored into.
  const auto run = [&](int64_t steps, int64_t count, const torch::Tensor& labels, EvalRow& row) {
    const SamplingPlan plan{steps};
    const NfeCount nfe = method.count_nfe(plan);
    row.nfe = nfe.backbone;
    row.head_nfe = nfe.head;
    const NfeProgress progress(nfe, count);
    return generate_samples(method, modules, noise_shape, count, labels, plan,
                            static_cast<uint64_t>(config.get_int("eval.seed")), device, sharing);
  };
  const int64_t num = config.get_int("eval.num");
  const Batch reference = dataset.heldout(num);
  const int64_t count = reference.x.size(0);
  EvalReport report;
  if (dataset.sample_shape().size() == 1) {
    const auto ref_points = reference.x.reshape({count, -1}).to(torch::kDouble);
    const double bandwidth = median_distance(ref_points);
    for (const int64_t steps : step_counts) {
      EvalRow counts;
      const auto samples = run(steps, count, reference.y, counts);
      EvalRow row = score_points(samples, ref_points, reference.y, bandwidth);
      row.nfe = counts.nfe;
      row.head_nfe = counts.head_nfe;
      report.rows.push_back(std::move(row));
    }
    report.floor = reference_floor(dataset, num);
    return report;
  }
  if (const std::string reason = evaluation_unavailable(dataset, config); !reason.empty()) throw UserError(reason);
  std::string evaluator_path = config.get_string("eval.evaluator");
  if (evaluator_path.empty()) evaluator_path = std::string(ONESTEP_EVALUATOR_DIR) + "/fashion-mnist.safetensors";
  Evaluator evaluator = Evaluator::load(evaluator_path);
  if (evaluator.dataset() != config.get_string("data.name"))
    throw UserError(evaluator_path + ": evaluator trained on '" + evaluator.dataset() + "', but data.name is '" +
                    config.get_string("data.name") + "'; image metrics need an evaluator of the same dataset "
                    "(eval.evaluator)");
  std::string cache_dir = config.get_string("eval.cache_dir");
  if (cache_dir.empty()) cache_dir = default_cache_dir();
  report.evaluator = evaluator.path() + " (sha256 " + evaluator.sha256() + ")";
  for (const int64_t steps : step_counts) {
    EvalRow row;
    const auto samples = run(steps, count, reference.y, row);
    row.metrics = image_metrics(evaluator, samples, reference.y, reference.x, cache_dir);
    report.rows.push_back(std::move(row));
  }
  return report;
}

std::optional<EvalRow> reference_floor(Dataset& dataset, int64_t num) {
  const Batch all = dataset.heldout(2 * num);
  if (all.x.size(0) < 2 * num) return std::nullopt;
  const auto reference = all.x.slice(0, 0, num).reshape({num, -1}).to(torch::kDouble);
  const auto labels = all.y.defined() ? all.y.slice(0, 0, num) : torch::Tensor();
  return score_points(all.x.slice(0, num, 2 * num), reference, labels, median_distance(reference));
}

std::string format_eval_table(const EvalReport& report) {
  const auto& rows = report.rows;
  const auto& floor = report.floor;
  if (rows.empty()) return "";
  std::string out;
  char cell[64];
  std::snprintf(cell, sizeof(cell), "%6s  %8s", "nfe", "head_nfe");
  out += cell;
  // Each column as wide as its name, at least 10 characters (a value printed as %.6f below 1000).
  std::vector<int> widths;
  for (const auto& [name, value] : rows.front().metrics) {
    widths.push_back(std::max(10, static_cast<int>(name.size())));
    std::snprintf(cell, sizeof(cell), "  %*s", widths.back(), name.c_str());
    out += cell;
  }
  out += "\n";
  std::vector<EvalRow> lines = rows;
  if (floor) lines.push_back(*floor);
  for (const auto& row : lines) {
    if (row.nfe > 0) {
      std::snprintf(cell, sizeof(cell), "%6lld  %8lld", static_cast<long long>(row.nfe),
                    static_cast<long long>(row.head_nfe));
    } else {
      std::snprintf(cell, sizeof(cell), "%6s  %8s", "data", "");
    }
    out += cell;
    for (size_t i = 0; i < row.metrics.size(); ++i) {
      std::snprintf(cell, sizeof(cell), "  %*.6f", i < widths.size() ? widths[i] : 10, row.metrics[i].second);
      out += cell;
    }
    out += "\n";
  }
  if (floor) out += "(data: held-out vs further held-out samples, the metrics' noise floor)\n";
  if (!report.evaluator.empty()) out += "evaluator: " + report.evaluator + "\n";
  return out;
}

std::string eval_json(const EvalReport& report) {
  nlohmann::ordered_json results = nlohmann::ordered_json::array();
  for (const auto& row : report.rows) {
    nlohmann::ordered_json entry;
    entry["nfe"] = row.nfe;
    entry["head_nfe"] = row.head_nfe;
    for (const auto& [name, value] : row.metrics) entry[name] = value;
    results.push_back(entry);
  }
  nlohmann::ordered_json out;
  out["results"] = results;
  if (report.floor) {
    nlohmann::ordered_json entry;
    for (const auto& [name, value] : report.floor->metrics) entry[name] = value;
    out["floor"] = entry;
  }
  if (!report.evaluator.empty()) out["evaluator"] = report.evaluator;
  return out.dump();
}

}  // namespace onestep
