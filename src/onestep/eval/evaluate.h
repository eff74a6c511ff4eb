// The evaluation protocol: generate samples from noise drawn with a fixed seed at each
// requested NFE and score them against the dataset's held-out samples (never training data).
// Also the human-readable table and the JSON object of the contract
// {"results": [{"nfe": 1, <metric>: value, ...}, ...]}.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "onestep/core/config.h"
#include "onestep/data/dataset.h"
#include "onestep/methods/method.h"

namespace onestep {

struct EvalRow {
  int64_t nfe = 0;       // backbone network evaluations per sample (0: the data floor row)
  int64_t head_nfe = 0;  // head evaluations per sample (methods with a head)
  std::vector<std::pair<std::string, double>> metrics;  // in report order
};

// How the processes of a multi-process run share the sampling of an evaluation: process `rank`
// of `size` samples its slice [rank * num / size, (rank + 1) * num / size) of the fixed-seed
// noise, and `gather(slice, num)` returns every process's slice in rank order (on every
// process), so that all hold the samples one process would have generated. `slice` is
// undefined when the process's slice is empty.
struct SampleSharing {
  int rank = 0;
  int size = 1;
  std::function<torch::Tensor(const torch::Tensor& slice, int64_t num)> gather;
};

// Generates `labels.size(0)` (or `num` when labels are undefined) samples from noise of
// `noise_shape` drawn with a generator seeded with `seed`, following `plan`, in chunks, on
// `device` (shared between processes when `sharing` is given); returns them on the CPU.
torch::Tensor generate_samples(Method& method, const ModuleSet& modules, const std::vector<int64_t>& noise_shape,
                               int64_t num, const torch::Tensor& labels, const SamplingPlan& plan, uint64_t seed,
                               const torch::Device& device, const SampleSharing* sharing = nullptr);

// "2 NFE", or "4 NFE + 32 head NFE" for methods with a head.
std::string describe_nfe(const NfeCount& count);

// What `evaluate` returns: one row per NFE, the metrics' noise floor where the held-out set is
// large enough (points), and for images the evaluator used ("path (sha256 ...)").
struct EvalReport {
  std::vector<EvalRow> rows;
  std::optional<EvalRow> floor;
  std::string evaluator;
};

// Why `evaluate` cannot score this dataset with this config, or "" when it can: image metrics
// need an evaluator trained on the same dataset, and onestep ships one for fashion-mnist only,
// so other image data (folder:DIR) needs `eval.evaluator`.
std::string evaluation_unavailable(const Dataset& dataset, const Config& config);

// The evaluation protocol, configured by the eval.* keys: `eval.num` samples at each step count
// of `eval.nfe` (the NFE of one-network methods, the backbone steps of methods with a head),
// from noise seeded with `eval.seed`, against `eval.num` held-out samples.
// Class-conditional models are sampled with the held-out labels, so the class mix matches the
// reference. Points: energy_distance, sliced_w2, mmd_rbf, w2 (exact, first 2000 of each),
// precision, recall (k = 3 neighbours, raw coordinates) and, for class-labelled data, coverage
// (modes by the class of the nearest held-out point); fewer than 4 samples is a UserError.
// Images: fd, kid, precision, recall (and class_accuracy for conditional models) in the feature
// space of the evaluator `eval.evaluator`, which must have been trained on the same dataset.
// With `sharing`, every process of a multi-process run calls it: they generate the samples
// together and each scores all of them (the same numbers as one process).
EvalReport evaluate(Method& method, const ModuleSet& modules, Dataset& dataset, const Config& config,
                    const torch::Device& device, const SampleSharing* sharing = nullptr);

// The noise floor of the point metrics: the same metrics between `num` held-out samples and
// `num` further held-out samples (two independent draws of the data), as a row with nfe 0.
// Returns nothing when the dataset holds fewer than 2 num held-out samples.
std::optional<EvalRow> reference_floor(Dataset& dataset, int64_t num);

// A table with one line per row (nfe, head_nfe, metrics) and the floor as a last "data" line.
std::string format_eval_table(const EvalReport& report);
// {"results": [{"nfe", "head_nfe", <metrics>}...]}, plus "floor": {...} and "evaluator" when present.
std::string eval_json(const EvalReport& report);

}  // namespace onestep
