// Tests for PNG writing (decoded back with stb_image), scatter/histogram rendering and image
// grids.
#include <gtest/gtest.h>
#include <stb/stb_image.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "onestep/core/error.h"
#include "onestep/core/image_io.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace onestep {
namespace {

class ImageIoTest : public testing_support::TempFolderTest {
 protected:
  // Decodes a PNG file with stb_image into H x W x C uint8.
  static torch::Tensor decode_png(const std::string& path, int channels) {
    std::ifstream in(path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), {});
    int width = 0, height = 0, file_channels = 0;
    unsigned char* pixels = stbi_load_from_memory(
        reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()),
        &width, &height, &file_channels, channels);
    if (pixels == nullptr) return {};
    EXPECT_EQ(file_channels, channels);
    torch::Tensor image =
        torch::from_blob(pixels, {height, width, channels}, torch::kUInt8).clone();
    stbi_image_free(pixels);
    return image;
  }
};

// The RGB pixel at (row, column) of an H x W x 3 image.
std::array<int, 3> rgb(const torch::Tensor& image, int64_t row, int64_t column) {
  const torch::Tensor p = image[row][column];
  return {p[0].item<int>(), p[1].item<int>(), p[2].item<int>()};
}

bool is_white(const std::array<int, 3>& p) { return p[0] == 255 && p[1] == 255 && p[2] == 255; }
bool is_blue(const std::array<int, 3>& p) { return p[2] > p[0] + 40 && p[2] > p[1] + 20; }

TEST_F(ImageIoTest, PngRoundTripsThroughStbImage) {
  for (int channels : {1, 3, 4}) {
    SCOPED_TRACE(channels);
    const torch::Tensor image = torch::randint(0, 256, {7, 11, channels}, torch::kUInt8);
    const std::string p = path("img" + std::to_string(channels) + ".png");
    write_png(p, image);
    const torch::Tensor decoded = decode_png(p, channels);
    ASSERT_TRUE(decoded.defined());
    EXPECT_TRUE(torch::equal(decoded, image));
  }
  // A non-contiguous view is written as what it shows.
  const torch::Tensor base = torch::randint(0, 256, {5, 6, 3}, torch::kUInt8);
  write_png(path("view.png"), base.transpose(0, 1));
  EXPECT_TRUE(torch::equal(decode_png(path("view.png"), 3), base.transpose(0, 1)));

  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir_)) names.push_back(entry.path().filename());
  EXPECT_EQ(names.size(), 4u);  // no temporary files left behind
}

TEST_F(ImageIoTest, PngRejectsBadTensorsAndPaths) {
  const std::string p = path("bad.png");
  EXPECT_THROW(write_png(p, torch::zeros({4, 4, 3})), UserError);  // float
  EXPECT_THROW(write_png(p, torch::zeros({4, 4, 2}, torch::kUInt8)), UserError);
  EXPECT_THROW(write_png(p, torch::zeros({4, 4}, torch::kUInt8)), UserError);
  EXPECT_THROW(write_png(p, torch::zeros({0, 4, 3}, torch::kUInt8)), UserError);
  const std::string nowhere = path("missing/x.png");
  try {
    write_png(nowhere, torch::zeros({2, 2, 3}, torch::kUInt8));
    ADD_FAILURE() << "expected UserError";
  } catch (const UserError& error) {
    EXPECT_NE(std::string(error.what()).find(nowhere), std::string::npos) << error.what();
  }
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST_F(ImageIoTest, ScatterPlacesPointsInTheExpectedPixels) {
  // First panel spans [-1, 1] in x and y, padded by 10% to [-1.2, 1.2]. With 100-pixel panels
  // the point (0.5, 0.5) lands at column 70, row 29 of the plot area; (-0.5, -0.5) at 29, 70.
  const int size = 100;
  const torch::Tensor first =
      torch::tensor({{-1.f, -1.f}, {1.f, 1.f}, {0.5f, 0.5f}, {0.5f, 0.5f}, {0.5f, 0.5f}});
  const torch::Tensor second = torch::tensor(
      {{-0.5f, -0.5f, 9.f}, {-0.5f, -0.5f, 9.f}, {5.f, 5.f, 0.f}, {NAN, 0.f, 0.f}});
  const torch::Tensor image =
      render_scatter({{"data", first}, {"", second}}, size);
  ASSERT_EQ(image.dim(), 3);
  EXPECT_EQ(image.scalar_type(), torch::kUInt8);
  EXPECT_EQ(image.size(2), 3);
  const int64_t gap = (image.size(1) - 2 * size);
  EXPECT_GE(gap, 2);
  EXPECT_LE(gap, 8);
  const int64_t caption = image.size(0) - size;
  EXPECT_GE(caption, 8);

  EXPECT_TRUE(is_blue(rgb(image, caption + 29, 70)));
  EXPECT_TRUE(is_blue(rgb(image, caption + 70, size + gap + 29)));
  // Repeated points accumulate: the triple point is darker than a double one.
  EXPECT_LT(rgb(image, caption + 29, 70)[0], rgb(image, caption + 70, size + gap + 29)[0]);
  // Empty regions stay white; the gap between panels is white.
  EXPECT_TRUE(is_white(rgb(image, caption + 20, 20)));
  EXPECT_TRUE(is_white(rgb(image, caption + 70, size + gap + 70)));
  for (int64_t row = 0; row < image.size(0); ++row) {
    EXPECT_TRUE(is_white(rgb(image, row, size + gap / 2)));
  }
  // Axis lines through 0 (column and row 50) are light grey, not white and not blue.
  const auto axis = rgb(image, caption + 10, 50);
  EXPECT_FALSE(is_white(axis));
  EXPECT_FALSE(is_blue(axis));
  EXPECT_GT(axis[0], 150);

  // Panel 1 has a dark caption; panel 2's empty caption leaves its caption area white.
  const torch::Tensor caption_1 = image.narrow(0, 0, caption).narrow(1, 0, size);
  const torch::Tensor caption_2 = image.narrow(0, 0, caption).narrow(1, size + gap, size);
  EXPECT_LT(caption_1.min().item<int>(), 80);
  EXPECT_EQ(caption_2.min().item<int>(), 255);

  // Blue pixels in panel 1 sit only where the points are (dots of at most 2 x 2 pixels).
  const torch::Tensor plot_1 = image.narrow(0, caption, size).narrow(1, 0, size).to(torch::kInt);
  const torch::Tensor blue = (plot_1.select(2, 2) > plot_1.select(2, 0) + 40);
  const int64_t blue_count = blue.sum().item<int64_t>();
  EXPECT_GE(blue_count, 3);
  EXPECT_LE(blue_count, 12);
}

TEST_F(ImageIoTest, ScatterDrawsOneDimensionalDataAsHistograms) {
  const int size = 64;
  const torch::Tensor data = torch::rand({2000});  // uniform on [0, 1)
  const torch::Tensor image =
      render_scatter({{"data", data}, {"model", data.unsqueeze(1) * 0.5}}, size);
  const int64_t caption = image.size(0) - size;
  const int64_t second = image.size(1) - size;
  const int64_t bottom = image.size(0) - 2;  // just above the frame line
  // Range [-0.1, 1.1]: bars cover the middle of panel 1, not its left padding.
  EXPECT_TRUE(is_blue(rgb(image, bottom, size / 2)));
  EXPECT_TRUE(is_white(rgb(image, bottom, 2)));
  EXPECT_TRUE(is_white(rgb(image, caption + 2, size / 2)));  // bars stay below the top
  // Panel 2 holds data on [0, 0.5): bars on its left half only.
  EXPECT_TRUE(is_blue(rgb(image, bottom, second + size / 4)));
  EXPECT_TRUE(is_white(rgb(image, bottom, second + size * 3 / 4 + 4)));
}

TEST_F(ImageIoTest, ScatterRejectsBadInput) {
  EXPECT_THROW(render_scatter({}), UserError);
  EXPECT_THROW(render_scatter({{"a", torch::zeros({4, 2})}, {"b", torch::zeros({4})}}), UserError);
  EXPECT_THROW(render_scatter({{"a", torch::zeros({2, 2, 2})}}), UserError);
  EXPECT_THROW(render_scatter({{"a", torch::zeros({4, 2})}}, 2), UserError);
  // Odd input that must not crash: empty sets, identical points, non-ASCII captions.
  const torch::Tensor image = render_scatter(
      {{"caf\xc3\xa9\n\t~\x7f", torch::zeros({0, 2})}, {"same", torch::ones({5, 2})}}, 32);
  EXPECT_GT(image.size(0), 32);
  EXPECT_GE(image.size(1), 2 * 32 + 2);
  EXPECT_NO_THROW(render_scatter({{"x", torch::full({3, 2}, 1e30f)}}, 32));
}

TEST_F(ImageIoTest, GridTilesImagesWithGaps) {
  // Five 4 x 6 images in 3 columns: 2 rows, (2*4 + 2) x (3*6 + 2*2) pixels.
  const std::vector<float> values = {-1.f, 1.f, 0.f, -0.5f, 2.f};
  std::vector<torch::Tensor> images;
  for (float v : values) images.push_back(torch::full({3, 4, 6}, v));
  const torch::Tensor grid = render_grid(torch::stack(images), 3);
  ASSERT_EQ(grid.sizes(), (std::vector<int64_t>{10, 22, 3}));
  EXPECT_EQ(grid.scalar_type(), torch::kUInt8);
  const std::vector<int> expected = {0, 255, 128, 64, 255};  // (v + 1) * 127.5, clamped
  for (size_t i = 0; i < values.size(); ++i) {
    const int64_t row = static_cast<int64_t>(i) / 3 * 6, column = static_cast<int64_t>(i) % 3 * 8;
    const torch::Tensor tile = grid.narrow(0, row, 4).narrow(1, column, 6);
    EXPECT_EQ(tile.min().item<int>(), expected[i]) << i;
    EXPECT_EQ(tile.max().item<int>(), expected[i]) << i;
  }
  // Gaps and the empty sixth slot are white.
  EXPECT_EQ(grid.narrow(0, 4, 2).min().item<int>(), 255);
  EXPECT_EQ(grid.narrow(1, 6, 2).min().item<int>(), 255);
  EXPECT_EQ(grid.narrow(0, 6, 4).narrow(1, 16, 6).min().item<int>(), 255);

  // Channel order and per-pixel placement survive: a gradient image.
  const torch::Tensor gradient =
      torch::linspace(-1, 1, 2 * 3 * 5).reshape({1, 1, 5, 6}).expand({2, 1, 5, 6}).contiguous();
  const torch::Tensor gray = render_grid(gradient, 1);
  ASSERT_EQ(gray.sizes(), (std::vector<int64_t>{12, 6, 1}));
  EXPECT_EQ(gray[0][0][0].item<int>(), 0);
  EXPECT_EQ(gray[4][5][0].item<int>(), 255);
  EXPECT_TRUE(torch::equal(gray.narrow(0, 0, 5), gray.narrow(0, 7, 5)));
  const torch::Tensor rgb_image = torch::stack({torch::full({2, 2}, -1.f), torch::full({2, 2}, 0.f),
                                                torch::full({2, 2}, 1.f)})
                                      .unsqueeze(0);
  const torch::Tensor colour = render_grid(rgb_image, 8);
  ASSERT_EQ(colour.sizes(), (std::vector<int64_t>{2, 2, 3}));
  EXPECT_EQ(rgb(colour, 1, 1), (std::array<int, 3>{0, 128, 255}));
}

TEST_F(ImageIoTest, GridRejectsBadInput) {
  EXPECT_THROW(render_grid(torch::zeros({2, 2, 4, 4}), 2), UserError);
  EXPECT_THROW(render_grid(torch::zeros({0, 3, 4, 4}), 2), UserError);
  EXPECT_THROW(render_grid(torch::zeros({3, 4, 4}), 2), UserError);
  EXPECT_THROW(render_grid(torch::zeros({1, 3, 4, 4}), 0), UserError);
}

}  // namespace
}  // namespace onestep
