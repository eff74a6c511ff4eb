// Sample pictures for point data and images (see sample_picture.h).
#include "onestep/eval/sample_picture.h"

#include <cmath>

#include "onestep/core/image_io.h"

namespace onestep {

torch::Tensor class_row_labels(int64_t num_classes, int64_t per_class) {
  return torch::arange(num_classes, torch::kLong).repeat_interleave(per_class);
}

torch::Tensor render_sample_picture(const torch::Tensor& reference,
                                    const std::vector<std::pair<std::string, torch::Tensor>>& samples,
                                    int64_t image_columns) {
  if (samples.front().second.dim() <= 2) {
    std::vector<ScatterPanel> panels;
    if (reference.defined()) panels.push_back({"held-out data", reference.reshape({reference.size(0), -1})});
    for (const auto& [caption, points] : samples) panels.push_back({caption, points.reshape({points.size(0), -1})});
    return render_scatter(panels);
  }
  std::vector<torch::Tensor> grids;
  for (const auto& [caption, images] : samples) {
    const auto columns = image_columns > 0 ? image_columns
                                           : static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(images.size(0)))));
    grids.push_back(render_grid(images.clamp(-1, 1), columns));
  }
  const int64_t height = grids.front().size(0), channels = grids.front().size(2);
  std::vector<torch::Tensor> row;
  for (const auto& grid : grids) {
    row.push_back(grid);
    row.push_back(torch::full({height, 8, channels}, 255, torch::kUInt8));
  }
  row.pop_back();
  return torch::cat(row, 1);
}

}  // namespace onestep
