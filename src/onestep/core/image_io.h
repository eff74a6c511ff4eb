// Pictures: PNG writing (atomic), scatter plots of point sets drawn side by side with a
// caption per panel, and image grids. Rendering is our own rasteriser; PNG encoding uses stb.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace onestep {

// Writes an 8-bit image tensor (H x W x C, C in {1, 3, 4}, uint8) as PNG, atomically.
void write_png(const std::string& path, const torch::Tensor& hwc_uint8);

// One panel of a scatter plot: points (N x 2 float; higher dimensions use the first two
// coordinates, 1-D data is drawn as a histogram) and a caption drawn above it.
struct ScatterPanel {
  std::string caption;
  torch::Tensor points;
};

// Renders the panels side by side on a shared axis range (taken from the first panel, padded
// by 10%) at `panel_size` pixels square, points as small dots. Returns H x W x 3 uint8.
torch::Tensor render_scatter(const std::vector<ScatterPanel>& panels, int panel_size = 384);

// Tiles images (N x C x H x W, values in [-1, 1], C = 1 or 3) into a grid with `columns`
// columns and a 2-pixel gap. Returns H x W x C uint8.
torch::Tensor render_grid(const torch::Tensor& images, int64_t columns);

}  // namespace onestep
