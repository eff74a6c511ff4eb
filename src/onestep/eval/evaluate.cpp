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

std::vector<EvalRow> evaluate(Method& method, NetworkImpl& net, Dataset& dataset, const std::vector<int64_t>& nfes,
                              int64_t num, uint64_t seed, const torch::Device& device) {
  const Batch reference = dataset.heldout(num);
  const int64_t count = reference.x.size(0);
  const auto ref_points = reference.x.reshape({count, -1}).to(torch::kDouble);
  const double bandwidth = median_distance(ref_points);
  std::vector<EvalRow> rows;
  for (const int64_t nfe : nfes) {
    const auto samples = generate_samples(method, net, dataset.sample_shape(), count, reference.y, nfe, seed, device);
    const auto points = samples.reshape({count, -1}).to(torch::kDouble);
    EvalRow row;
    row.nfe = nfe;
    row.metrics = {{"energy_distance", energy_distance(points, ref_points)},
                   {"sliced_w2", sliced_w2(points, ref_points)},
                   {"mmd_rbf", mmd_rbf(points, ref_points, bandwidth)}};
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string format_eval_table(const std::vector<EvalRow>& rows) {
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
  for (const auto& row : rows) {
    std::snprintf(cell, sizeof(cell), "%6lld", static_cast<long long>(row.nfe));
    out += cell;
    for (const auto& [name, value] : row.metrics) {
      std::snprintf(cell, sizeof(cell), "  %16.6f", value);
      out += cell;
    }
    out += "\n";
  }
  return out;
}

std::string eval_json(const std::vector<EvalRow>& rows) {
  nlohmann::ordered_json results = nlohmann::ordered_json::array();
  for (const auto& row : rows) {
    nlohmann::ordered_json entry;
    entry["nfe"] = row.nfe;
    for (const auto& [name, value] : row.metrics) entry[name] = value;
    results.push_back(entry);
  }
  nlohmann::ordered_json out;
  out["results"] = results;
  return out.dump();
}

}  // namespace onestep
