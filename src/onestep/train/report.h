// report.html of a run: the final evaluation table, the evaluations during training
// (eval.every) and the loss curve (inline SVG), both from metrics.jsonl, the latest sample
// picture (samples.png next to it, embedded as a data URL) and the resolved config, in one
// self-contained static page (no script, no network). The trainer rewrites it at every sample
// picture, evaluation and checkpoint, and at the end with the table.
#pragma once

#include <string>
#include <vector>

#include "onestep/core/config.h"
#include "onestep/eval/evaluate.h"

namespace onestep {

// `samples_path`: the PNG to embed ("" or a missing file: no picture yet).
void write_report(const std::string& path, const Config& config, const std::string& metrics_path,
                  const std::string& samples_path, const std::vector<EvalRow>& rows);

}  // namespace onestep
