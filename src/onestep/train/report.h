// report.html of a run: the final evaluation table, the loss curve (inline SVG from
// metrics.jsonl), the latest sample picture and the resolved config, in one static page.
#pragma once

#include <string>
#include <vector>

#include "onestep/core/config.h"
#include "onestep/eval/evaluate.h"

namespace onestep {

void write_report(const std::string& path, const Config& config, const std::string& metrics_path,
                  const std::vector<EvalRow>& rows);

}  // namespace onestep
