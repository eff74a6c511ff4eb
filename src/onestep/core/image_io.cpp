// Pictures: PNG writing through stb_image_write plus an atomic file write, a small software
// rasteriser for side-by-side scatter plots / histograms with stb_easy_font captions, and
// image grids.
#include "onestep/core/image_io.h"

#include <stb/stb_image_write.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_easy_font.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "onestep/core/file_io.h"
#include "onestep/core/error.h"

namespace onestep {

namespace {

constexpr int kPanelGap = 4;  // pixels between scatter panels
constexpr int64_t kGridGap = 2;
constexpr int kMinPanelSize = 16;
constexpr int kMaxPanelSize = 8192;
constexpr double kPadding = 0.1;   // axis range padding, fraction of the data span per side
constexpr float kDotAlpha = 0.4f;  // each point moves its pixels this far toward kPoint

struct Rgb {
  uint8_t r, g, b;
};
constexpr Rgb kFrame{215, 215, 215};
constexpr Rgb kAxis{190, 190, 190};
constexpr Rgb kPoint{25, 55, 140};
constexpr Rgb kBar{80, 110, 180};
constexpr Rgb kText{30, 30, 30};

// A clip rectangle [x0, x1) x [y0, y1) in image pixels.
struct Rect {
  int x0, y0, x1, y1;
};

class Canvas {
 public:
  Canvas(int height, int width)
      : image_(torch::full({height, width, 3}, 255, torch::kUInt8)),
        pixels_(image_.data_ptr<uint8_t>()),
        width_(width) {}

  // Fills [x0, x1) x [y0, y1) intersected with `clip`.
  void fill(int x0, int y0, int x1, int y1, Rgb color, const Rect& clip) {
    for (int y = std::max(y0, clip.y0); y < std::min(y1, clip.y1); ++y) {
      for (int x = std::max(x0, clip.x0); x < std::min(x1, clip.x1); ++x) {
        uint8_t* p = pixel(x, y);
        p[0] = color.r;
        p[1] = color.g;
        p[2] = color.b;
      }
    }
  }

  // Moves the pixels of [x0, x1) x [y0, y1) within `clip` a fraction `alpha` toward `color`.
  void blend(int x0, int y0, int x1, int y1, Rgb color, float alpha, const Rect& clip) {
    for (int y = std::max(y0, clip.y0); y < std::min(y1, clip.y1); ++y) {
      for (int x = std::max(x0, clip.x0); x < std::min(x1, clip.x1); ++x) {
        uint8_t* p = pixel(x, y);
        const uint8_t target[3] = {color.r, color.g, color.b};
        for (int c = 0; c < 3; ++c) {
          p[c] = static_cast<uint8_t>(std::lround(p[c] + alpha * (target[c] - p[c])));
        }
      }
    }
  }

  torch::Tensor image() const { return image_; }

 private:
  uint8_t* pixel(int x, int y) { return pixels_ + (static_cast<int64_t>(y) * width_ + x) * 3; }

  torch::Tensor image_;
  uint8_t* pixels_;
  int width_;
};

// Draws `text` (printable ASCII; anything else shows as '?') with its top-left at (x, y),
// each font pixel `scale` image pixels wide, clipped to `clip`.
void draw_text(Canvas& canvas, const std::string& text, int x, int y, int scale, Rgb color,
               const Rect& clip) {
  // Every glyph advances at least one pixel, so more characters than the clip is wide
  // cannot show.
  std::string printable = text.substr(0, static_cast<size_t>(std::max(0, clip.x1 - clip.x0)));
  for (char& c : printable) {
    if (c < 32 || c > 126) c = '?';
  }
  // stb_easy_font emits 4 vertices of 16 bytes per quad; no glyph needs more than 16 quads.
  std::vector<char> vertices(printable.size() * 16 * 64 + 64);
  const int quads = stb_easy_font_print(0, 0, printable.data(), nullptr, vertices.data(),
                                        static_cast<int>(vertices.size()));
  for (int q = 0; q < quads; ++q) {
    float top_left[2], bottom_right[2];  // vertices 0 and 2 of the quad
    std::memcpy(top_left, vertices.data() + q * 64, sizeof(top_left));
    std::memcpy(bottom_right, vertices.data() + q * 64 + 32, sizeof(bottom_right));
    canvas.fill(x + static_cast<int>(top_left[0]) * scale, y + static_cast<int>(top_left[1]) * scale,
                x + static_cast<int>(bottom_right[0]) * scale,
                y + static_cast<int>(bottom_right[1]) * scale, color, clip);
  }
}

struct Range {
  double lo, hi;
};

// The range of the finite values in `values`, padded by kPadding of the span per side; a
// degenerate span becomes +-1 around the value, no finite values give [-1, 1].
Range padded_range(const std::vector<double>& values) {
  double lo = INFINITY, hi = -INFINITY;
  for (double v : values) {
    if (std::isfinite(v)) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  }
  if (!(lo <= hi)) return {-1.0, 1.0};
  const double span = hi - lo;
  if (!(span > 0) || !std::isfinite(span)) return {lo - 1.0, hi + 1.0};
  return {lo - kPadding * span, hi + kPadding * span};
}

// Maps `v` from `range` onto pixel [0, size); returns false outside (or for NaN).
bool to_pixel(double v, const Range& range, int size, int* pixel) {
  const double f = (v - range.lo) / (range.hi - range.lo) * size;
  if (!(f >= 0 && f < size)) return false;
  *pixel = static_cast<int>(f);
  return true;
}

// A panel's points as columns of doubles: one column (1-D data) or two (x, y).
std::vector<std::vector<double>> panel_columns(const ScatterPanel& panel) {
  const torch::Tensor& points = panel.points;
  const std::string where = "render_scatter: panel '" + panel.caption + "': ";
  if (!points.defined()) throw UserError(where + "points are undefined");
  torch::Tensor data = points.detach().to(torch::kCPU, torch::kFloat64);
  if (data.dim() == 1) data = data.unsqueeze(1);
  if (data.dim() != 2 || data.size(1) == 0) {
    throw UserError(where + "points must be N or N x D with D >= 1, got shape " +
                    c10::str(points.sizes()));
  }
  data = data.narrow(1, 0, std::min<int64_t>(2, data.size(1))).t().contiguous();
  std::vector<std::vector<double>> columns;
  for (int64_t c = 0; c < data.size(0); ++c) {
    const double* begin = data[c].data_ptr<double>();
    columns.emplace_back(begin, begin + data.size(1));
  }
  return columns;
}

void draw_points(Canvas& canvas, const std::vector<std::vector<double>>& columns,
                 const Range& x_range, const Range& y_range, int panel_size, const Rect& area) {
  const int dot = panel_size >= 256 ? 2 : 1;
  for (size_t i = 0; i < columns[0].size(); ++i) {
    int px = 0, py = 0;
    // Image rows grow downward, so y is mapped from the flipped range.
    if (!to_pixel(columns[0][i], x_range, panel_size, &px) ||
        !to_pixel(-columns[1][i], {-y_range.hi, -y_range.lo}, panel_size, &py)) {
      continue;
    }
    canvas.blend(area.x0 + px, area.y0 + py, area.x0 + px + dot, area.y0 + py + dot, kPoint,
                 kDotAlpha, area);
  }
}

// Histogram densities (count / (finite count * bin width)) of `values` over `range`.
std::vector<double> histogram(const std::vector<double>& values, const Range& range, int bins) {
  std::vector<double> density(bins, 0.0);
  int64_t finite = 0;
  for (double v : values) {
    if (!std::isfinite(v)) continue;
    ++finite;
    int bin = 0;
    if (to_pixel(v, range, bins, &bin)) density[bin] += 1.0;
  }
  const double bin_width = (range.hi - range.lo) / bins;
  for (double& d : density) d = finite > 0 ? d / (finite * bin_width) : 0.0;
  return density;
}

void draw_histogram(Canvas& canvas, const std::vector<double>& density, double max_density,
                    int panel_size, const Rect& area) {
  const int bins = static_cast<int>(density.size());
  for (int b = 0; b < bins; ++b) {
    const double fraction = std::min(1.0, density[b] / max_density);
    if (!(fraction > 0)) continue;
    const int height = std::max(1, static_cast<int>(std::lround(fraction * (panel_size - 1))));
    const int x0 = area.x0 + b * panel_size / bins;
    const int x1 = area.x0 + (b + 1) * panel_size / bins;
    canvas.fill(x0, area.y1 - height, x1, area.y1, kBar, area);
  }
}

void draw_frame(Canvas& canvas, const Rect& area) {
  canvas.fill(area.x0, area.y0, area.x1, area.y0 + 1, kFrame, area);
  canvas.fill(area.x0, area.y1 - 1, area.x1, area.y1, kFrame, area);
  canvas.fill(area.x0, area.y0, area.x0 + 1, area.y1, kFrame, area);
  canvas.fill(area.x1 - 1, area.y0, area.x1, area.y1, kFrame, area);
}

}  // namespace

void write_png(const std::string& path, const torch::Tensor& hwc_uint8) {
  if (!hwc_uint8.defined() || hwc_uint8.dim() != 3 || hwc_uint8.scalar_type() != torch::kUInt8) {
    throw UserError(path + ": PNG data must be an H x W x C uint8 tensor");
  }
  const int64_t height = hwc_uint8.size(0), width = hwc_uint8.size(1),
                channels = hwc_uint8.size(2);
  if (channels != 1 && channels != 3 && channels != 4) {
    throw UserError(path + ": PNG data must have 1, 3 or 4 channels, got " +
                    std::to_string(channels));
  }
  if (height < 1 || width < 1 || height > INT_MAX / 4 || width > INT_MAX / 4 / channels) {
    throw UserError(path + ": cannot write a " + std::to_string(height) + " x " +
                    std::to_string(width) + " PNG");
  }
  const torch::Tensor data = hwc_uint8.detach().to(torch::kCPU).contiguous();
  std::string bytes;
  const auto append = [](void* context, void* chunk, int size) {
    static_cast<std::string*>(context)->append(static_cast<const char*>(chunk),
                                               static_cast<size_t>(size));
  };
  const int stride = static_cast<int>(width * channels);
  if (stbi_write_png_to_func(append, &bytes, static_cast<int>(width), static_cast<int>(height),
                             static_cast<int>(channels), data.data_ptr(), stride) == 0) {
    throw UserError(path + ": PNG encoding failed");
  }
  write_file_atomically(path, bytes);
}

torch::Tensor render_scatter(const std::vector<ScatterPanel>& panels, int panel_size) {
  if (panels.empty()) throw UserError("render_scatter: no panels to draw");
  if (panel_size < kMinPanelSize || panel_size > kMaxPanelSize) {
    throw UserError("render_scatter: panel size " + std::to_string(panel_size) +
                    " outside [" + std::to_string(kMinPanelSize) + ", " +
                    std::to_string(kMaxPanelSize) + "]");
  }
  std::vector<std::vector<std::vector<double>>> data;
  for (const ScatterPanel& panel : panels) data.push_back(panel_columns(panel));
  const size_t dims = data[0].size();
  for (size_t i = 1; i < panels.size(); ++i) {
    if (data[i].size() != dims) {
      throw UserError("render_scatter: panel '" + panels[i].caption + "' has " +
                      (data[i].size() == 1 ? "1-D" : "2-D") + " points but panel '" +
                      panels[0].caption + "' has " + (dims == 1 ? "1-D" : "2-D"));
    }
  }

  const int scale = std::max(1, panel_size / 192);
  const int caption_height = 12 * scale + 4;
  const int count = static_cast<int>(panels.size());
  if (count > (INT_MAX / 3 / kMaxPanelSize)) throw UserError("render_scatter: too many panels");
  Canvas canvas(caption_height + panel_size, count * panel_size + (count - 1) * kPanelGap);

  // Shared axes from the first panel. 2-D plots use one scale for x and y (square range).
  Range x_range = padded_range(data[0][0]);
  Range y_range = x_range;
  if (dims == 2) {
    const Range raw_y = padded_range(data[0][1]);
    const double half_span = std::max(x_range.hi - x_range.lo, raw_y.hi - raw_y.lo) / 2;
    const double x_mid = (x_range.lo + x_range.hi) / 2, y_mid = (raw_y.lo + raw_y.hi) / 2;
    x_range = {x_mid - half_span, x_mid + half_span};
    y_range = {y_mid - half_span, y_mid + half_span};
  }
  const int bins = std::max(8, panel_size / 4);
  double max_density = 1.0;
  if (dims == 1) {
    const std::vector<double> first = histogram(data[0][0], x_range, bins);
    const double peak = *std::max_element(first.begin(), first.end());
    if (peak > 0) max_density = 1.1 * peak;
  }

  for (int i = 0; i < count; ++i) {
    const int x0 = i * (panel_size + kPanelGap);
    const Rect caption_area{x0, 0, x0 + panel_size, caption_height};
    const Rect area{x0, caption_height, x0 + panel_size, caption_height + panel_size};
    draw_text(canvas, panels[i].caption, x0 + 3, 2, scale, kText, caption_area);
    draw_frame(canvas, area);
    int axis = 0;
    if (to_pixel(0.0, x_range, panel_size, &axis)) {
      canvas.fill(area.x0 + axis, area.y0, area.x0 + axis + 1, area.y1, kAxis, area);
    }
    if (dims == 2) {
      if (to_pixel(0.0, {-y_range.hi, -y_range.lo}, panel_size, &axis)) {
        canvas.fill(area.x0, area.y0 + axis, area.x1, area.y0 + axis + 1, kAxis, area);
      }
      draw_points(canvas, data[i], x_range, y_range, panel_size, area);
    } else {
      draw_histogram(canvas, histogram(data[i][0], x_range, bins), max_density, panel_size,
                     area);
    }
  }
  return canvas.image();
}

torch::Tensor render_grid(const torch::Tensor& images, int64_t columns) {
  if (!images.defined() || images.dim() != 4 || (images.size(1) != 1 && images.size(1) != 3) ||
      images.size(0) < 1 || images.size(2) < 1 || images.size(3) < 1) {
    throw UserError("render_grid: images must be N x C x H x W with N >= 1 and C = 1 or 3, got " +
                    (images.defined() ? c10::str(images.sizes()) : std::string("undefined")));
  }
  if (columns < 1) {
    throw UserError("render_grid: columns must be >= 1, got " + std::to_string(columns));
  }
  const int64_t count = images.size(0), channels = images.size(1), height = images.size(2),
                width = images.size(3);
  const int64_t cols = std::min(columns, count);
  const int64_t rows = (count + cols - 1) / cols;
  const torch::Tensor pixels = ((images.detach().to(torch::kCPU, torch::kFloat32).nan_to_num(0.0) +
                                 1.0) * 127.5)
                                   .round()
                                   .clamp(0, 255)
                                   .to(torch::kUInt8)
                                   .permute({0, 2, 3, 1});
  torch::Tensor grid = torch::full(
      {rows * height + (rows - 1) * kGridGap, cols * width + (cols - 1) * kGridGap, channels},
      255, torch::kUInt8);
  for (int64_t i = 0; i < count; ++i) {
    grid.narrow(0, (i / cols) * (height + kGridGap), height)
        .narrow(1, (i % cols) * (width + kGridGap), width)
        .copy_(pixels[i]);
  }
  return grid;
}

}  // namespace onestep
