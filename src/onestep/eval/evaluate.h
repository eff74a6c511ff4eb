// The evaluation protocol: generate samples from noise drawn with a fixed seed at each
// requested NFE and score them against the dataset's held-out samples (never training data).
// Also the human-readable table and the JSON object of the contract
// {"results": [{"nfe": 1, <metric>: value, ...}, ...]}.
#pragma once

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "onestep/data/dataset.h"
#include "onestep/methods/method.h"

namespace onestep {

struct EvalRow {
  int64_t nfe = 0;
  std::vector<std::pair<std::string, double>> metrics;  // in report order
};

// Generates `labels.size(0)` (or `num` when labels are undefined) samples with noise from a
// generator seeded with `seed`, in chunks, on `device`; returns them on the CPU.
torch::Tensor generate_samples(Method& method, NetworkImpl& net, const std::vector<int64_t>& sample_shape,
                               int64_t num, const torch::Tensor& labels, int64_t nfe, uint64_t seed,
                               const torch::Device& device);

// Scores samples at each NFE against `num` held-out samples. Class-conditional models are
// sampled with the held-out labels, so the class mix matches the reference.
std::vector<EvalRow> evaluate(Method& method, NetworkImpl& net, Dataset& dataset, const std::vector<int64_t>& nfes,
                              int64_t num, uint64_t seed, const torch::Device& device);

std::string format_eval_table(const std::vector<EvalRow>& rows);
std::string eval_json(const std::vector<EvalRow>& rows);

}  // namespace onestep
