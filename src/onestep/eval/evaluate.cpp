// Evaluation protocol, table and JSON (see evaluate.h).
#include "onestep/eval/evaluate.h"

#include <nlohmann/json.hpp>

#include <cstdio>

#include "onestep/eval/point_metrics.h"

namespace onestep {

torch::Tensor generate_samples(Method& method, NetworkImpl& net, const std::vector<int64_t>& sample_shape,
                               int64_t num, const torch::Tensor& labels, int64_t nfe, uint64_t seed,
                               const torch::Device& device) {
  constexpr int64_t kChunk = 2048;
  auto gen = at::detail::createCPUGenerator(seed);
  std::vector<int64_t> shape = {num};
  shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
  const auto noise = torch::randn(shape, gen);
  std::vector<torch::Tensor> chunks;
  for (int64_t start = 0; start < num; start += kChunk) {
    const int64_t end = std::min(num, start + kChunk);
    const auto chunk_labels = labels.defined() ? labels.slice(0, start, end).to(device) : torch::Tensor();
    chunks.push_back(method.sample(net, noise.slice(0, start, end).to(device), chunk_labels, nfe).cpu());
  }
  return torch::cat(chunks);
}

namespace {

EvalRow score_points(int64_t nfe, const torch::Tensor& samples, const torch::Tensor& reference, double bandwidth) {
  const auto points = samples.reshape({samples.size(0), -1}).to(torch::kDouble);
  EvalRow row;
  row.nfe = nfe;
  row.metrics = {{"energy_distance", energy_distance(points, reference)},
                 {"sliced_w2", sliced_w2(points, reference)},
                 {"mmd_rbf", mmd_rbf(points, reference, bandwidth)}};
  return row;
}

}  // namespace

std::vector<EvalRow> evaluate(Method& method, NetworkImpl& net, Dataset& dataset, const std::vector<int64_t>& nfes,
                              int64_t num, uint64_t seed, const torch::Device& device) {
  const Batch reference = dataset.heldout(num);
  const int64_t count = reference.x.size(0);
  const auto ref_points = reference.x.reshape({count, -1}).to(torch::kDouble);
  const double bandwidth = median_distance(ref_points);
  std::vector<EvalRow> rows;
  for (const int64_t nfe : nfes) {
    const auto samples = generate_samples(method, net, dataset.sample_shape(), count, reference.y, nfe, seed, device);
    rows.push_back(score_points(nfe, samples, ref_points, bandwidth));
  }
  return rows;
}

std::optional<EvalRow> reference_floor(Dataset& dataset, int64_t num) {
  const auto all = dataset.heldout(2 * num).x;
  if (all.size(0) < 2 * num) return std::nullopt;
  const auto reference = all.slice(0, 0, num).reshape({num, -1}).to(torch::kDouble);
  return score_points(0, all.slice(0, num, 2 * num), reference, median_distance(reference));
}

std::string format_eval_table(const std::vector<EvalRow>& rows, const std::optional<EvalRow>& floor) {
  if (rows.empty()) return "";
  std::string out;
  char cell[64];
  std::snprintf(cell, sizeof(cell), "%6s", "nfe");
  out += cell;
  for (const auto& [name, value] : rows.front().metrics) {
    std::snprintf(cell, sizeof(cell), "  %16s", name.c_str());
    out += cell;
  }
  out += "\n";
  std::vector<EvalRow> lines = rows;
  if (floor) lines.push_back(*floor);
  for (const auto& row : lines) {
    if (row.nfe > 0) {
      std::snprintf(cell, sizeof(cell), "%6lld", static_cast<long long>(row.nfe));
    } else {
      std::snprintf(cell, sizeof(cell), "%6s", "data");
    }
    out += cell;
    for (const auto& [name, value] : row.metrics) {
      std::snprintf(cell, sizeof(cell), "  %16.6f", value);
      out += cell;
    }
    out += "\n";
  }
  if (floor) out += "(data: held-out vs further held-out samples, the metrics' noise floor)\n";
  return out;
}

std::string eval_json(const std::vector<EvalRow>& rows, const std::optional<EvalRow>& floor) {
  nlohmann::ordered_json results = nlohmann::ordered_json::array();
  for (const auto& row : rows) {
    nlohmann::ordered_json entry;
    entry["nfe"] = row.nfe;
    for (const auto& [name, value] : row.metrics) entry[name] = value;
    results.push_back(entry);
  }
  nlohmann::ordered_json out;
  out["results"] = results;
  if (floor) {
    nlohmann::ordered_json entry;
    for (const auto& [name, value] : floor->metrics) entry[name] = value;
    out["floor"] = entry;
  }
  return out.dump();
}

}  // namespace onestep
