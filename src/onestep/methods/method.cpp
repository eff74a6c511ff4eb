// Method registry and the small helpers every method shares (noise, label dropout, grids).
#include "onestep/methods/method.h"

#include "onestep/core/config.h"
#include "onestep/core/error.h"
#include "onestep/methods/flow_matching.h"
#include "onestep/methods/meanflow.h"

namespace onestep {

std::vector<std::string> method_names() { return {"fm", "meanflow"}; }

std::unique_ptr<Method> make_method(const Config& config) {
  const std::string& name = config.get_string("method.name");
  if (name == "fm") return std::make_unique<FlowMatching>(FlowMatching::options_from_config(config));
  if (name == "meanflow") return std::make_unique<MeanFlow>(MeanFlow::options_from_config(config));
  std::string known;
  for (const auto& n : method_names()) known += (known.empty() ? "" : ", ") + n;
  throw UserError("config: key 'method.name' = '" + name + "': unknown method; known: " + known);
}

torch::Tensor draw_noise(torch::IntArrayRef shape, torch::Generator& gen, const torch::Device& device) {
  return torch::randn(shape, gen).to(device);
}

torch::Tensor drop_labels(const torch::Tensor& labels, int64_t num_classes, double p, torch::Generator& gen) {
  if (!labels.defined()) return labels;
  const auto drop = (torch::rand({labels.size(0)}, gen) < p).to(labels.device());
  return torch::where(drop, torch::full_like(labels, num_classes), labels);
}

std::vector<double> uniform_time_grid(int64_t steps) {
  std::vector<double> grid(steps + 1);
  for (int64_t i = 0; i <= steps; ++i) grid[i] = 1.0 - static_cast<double>(i) / static_cast<double>(steps);
  grid[steps] = 0.0;
  return grid;
}

torch::Tensor per_sample(const torch::Tensor& value, int64_t rank) {
  std::vector<int64_t> shape(rank, 1);
  shape[0] = value.size(0);
  return value.reshape(shape);
}

}  // namespace onestep
