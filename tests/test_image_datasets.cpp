// Tests for the IDX reader (raw and gzip, header and length checks), the Fashion-MNIST dataset
// on tiny synthetic files (and on the real files when installed), and the image-folder dataset
// (classes, channels, alpha, antialiased resizing, splits, flips and error messages).
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "test_support.h"
#include <stb/stb_image_write.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "onestep/core/error.h"
#include "onestep/core/image_io.h"
#include "onestep/data/idx.h"
#include "onestep/data/image_datasets.h"

namespace fs = std::filesystem;

namespace onestep {
namespace {

using testing_support::contains;
using testing_support::seeded;
using testing_support::user_error_message;

using Bytes = std::vector<uint8_t>;

// An IDX file: magic 0 0 `type` ndims, big-endian sizes, then `payload`.
Bytes idx_bytes(const std::vector<uint32_t>& sizes, const Bytes& payload, uint8_t type = 0x08) {
  Bytes bytes = {0, 0, type, static_cast<uint8_t>(sizes.size())};
  for (uint32_t size : sizes) {
    for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back((size >> shift) & 0xff);
  }
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  return bytes;
}

void write_raw(const fs::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

void write_gzip(const fs::path& path, const Bytes& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr) << path;
  ASSERT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(file), Z_OK);
}

Bytes read_raw(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

Bytes iota_bytes(size_t n) {
  Bytes bytes(n);
  for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<uint8_t>(i * 7);
  return bytes;
}

class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ =
        fs::path(::testing::TempDir()) /
        ("onestep_image_datasets_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// ---- IDX ----

using IdxFileTest = TempDirTest;

TEST_F(IdxFileTest, RoundTripsRawAndGzip) {
  const Bytes payload = iota_bytes(3 * 2 * 4);
  const Bytes file = idx_bytes({3, 2, 4}, payload);
  write_raw(path("images-idx3-ubyte"), file);
  write_gzip(path("images-idx3-ubyte.gz"), file);
  const torch::Tensor expected =
      torch::from_blob(const_cast<uint8_t*>(payload.data()), {3, 2, 4}, torch::kUInt8);
  for (const std::string name : {"images-idx3-ubyte", "images-idx3-ubyte.gz"}) {
    SCOPED_TRACE(name);
    const torch::Tensor data = read_idx(path(name));
    EXPECT_EQ(data.scalar_type(), torch::kUInt8);
    EXPECT_EQ(data.sizes(), torch::IntArrayRef({3, 2, 4}));
    EXPECT_TRUE(torch::equal(data, expected));
  }
  // Gzip is detected by content, not by name; 1-D label files and concatenated members work.
  const Bytes labels = idx_bytes({5}, {0, 1, 2, 3, 9});
  write_gzip(path("labels-plain-name"), labels);
  Bytes doubled = read_raw(path("labels-plain-name"));
  write_gzip(path("second"), {});
  const Bytes empty_member = read_raw(path("second"));
  doubled.insert(doubled.end(), empty_member.begin(), empty_member.end());
  write_raw(path("labels-two-members.gz"), doubled);
  for (const std::string name : {"labels-plain-name", "labels-two-members.gz"}) {
    SCOPED_TRACE(name);
    const torch::Tensor data = read_idx(path(name));
    EXPECT_EQ(data.sizes(), torch::IntArrayRef({5}));
    EXPECT_EQ(data[4].item<int64_t>(), 9);
  }
}

TEST_F(IdxFileTest, RejectsBadHeadersAndLengths) {
  const auto message_for = [&](const std::string& name, const Bytes& bytes) {
    write_raw(path(name), bytes);
    return user_error_message([&] { read_idx(path(name)); });
  };
  std::string msg = message_for("zeros-idx3-ubyte", Bytes(32, 0));
  EXPECT_TRUE(contains(msg, path("zeros-idx3-ubyte") + ": bad magic number 0x00000000")) << msg;
  EXPECT_TRUE(contains(msg, "expected 0x0000080N")) << msg;
  msg = message_for("five-dims", idx_bytes({1, 1, 1, 1, 1}, {7}));
  EXPECT_TRUE(contains(msg, "five-dims: bad magic number 0x00000805")) << msg;
  msg = message_for("float-idx", idx_bytes({2}, Bytes(8, 0), 0x0D));
  EXPECT_TRUE(contains(msg, "float-idx: unsupported IDX data type 0x0D (float)")) << msg;
  msg = message_for("short", {0, 0, 8});
  EXPECT_TRUE(contains(msg, "short: too short for an IDX header (3 bytes)")) << msg;
  msg = message_for("cut-header", {0, 0, 8, 3, 0, 0, 0, 2});
  EXPECT_TRUE(contains(msg, "cut-header: truncated header")) << msg;
  msg = message_for("truncated", idx_bytes({5, 4}, iota_bytes(10)));
  EXPECT_TRUE(contains(msg, "truncated: truncated: header promises 20 bytes of data, found 10"))
      << msg;
  msg = message_for("trailing", idx_bytes({5, 4}, iota_bytes(21)));
  EXPECT_TRUE(contains(msg, "trailing: trailing data: header promises 20 bytes of data, found 21"))
      << msg;
  msg = message_for("huge", idx_bytes({60000, 60000, 60000}, {}));
  EXPECT_TRUE(contains(msg, "huge: header sizes 60000 x 60000 x 60000 exceed the 2 GiB limit"))
      << msg;
  // Found by fuzz/fuzz_idx.cpp: a zero size made LibTorch's size overflow a c10::Error.
  msg = message_for("huge-empty", idx_bytes({138326016, 811597824, 525312, 0}, {}));
  EXPECT_TRUE(contains(msg, "huge-empty: header sizes 138326016 x 811597824 x 525312 x 0 exceed the 2 GiB "
                            "limit of data (counting only the non-zero sizes)"))
      << msg;
  msg = user_error_message([&] { read_idx(path("no-such-file.gz")); });
  EXPECT_EQ(msg, path("no-such-file.gz") + ": cannot open file");
}

TEST_F(IdxFileTest, RejectsCorruptAndTruncatedGzip) {
  write_gzip(path("good.gz"), idx_bytes({100}, iota_bytes(100)));
  const Bytes good = read_raw(path("good.gz"));
  ASSERT_GT(good.size(), 20u);

  Bytes bad_crc = good;
  bad_crc[bad_crc.size() - 6] ^= 0xff;  // inside the CRC-32 of the gzip trailer
  write_raw(path("bad-crc.gz"), bad_crc);
  std::string msg = user_error_message([&] { read_idx(path("bad-crc.gz")); });
  EXPECT_TRUE(contains(msg, path("bad-crc.gz") + ": corrupt gzip data (zlib: ")) << msg;

  Bytes garbage = {0x1f, 0x8b};
  for (int i = 0; i < 40; ++i) garbage.push_back(static_cast<uint8_t>(i * 37 + 11));
  write_raw(path("garbage.gz"), garbage);
  msg = user_error_message([&] { read_idx(path("garbage.gz")); });
  EXPECT_TRUE(contains(msg, path("garbage.gz") + ": corrupt gzip data")) << msg;

  write_raw(path("cut.gz"), Bytes(good.begin(), good.begin() + static_cast<long>(good.size() / 2)));
  msg = user_error_message([&] { read_idx(path("cut.gz")); });
  EXPECT_TRUE(contains(msg, path("cut.gz") + ": truncated gzip stream")) << msg;
}

// ---- Fashion-MNIST ----

constexpr int kSide = 28;

// Image k: left half k * 20, right half 255, so a flip and the image index are both visible.
Bytes fashion_images(int count) {
  Bytes pixels;
  for (int k = 0; k < count; ++k) {
    for (int row = 0; row < kSide; ++row) {
      for (int col = 0; col < kSide; ++col) {
        pixels.push_back(col < kSide / 2 ? static_cast<uint8_t>(k * 20) : 255);
      }
    }
  }
  return idx_bytes({static_cast<uint32_t>(count), kSide, kSide}, pixels);
}

// Labels 0, 1, 2, ... (image k has label k).
Bytes fashion_labels(int count) {
  Bytes labels;
  for (int k = 0; k < count; ++k) labels.push_back(static_cast<uint8_t>(k));
  return idx_bytes({static_cast<uint32_t>(count)}, labels);
}

float unit(int pixel) { return static_cast<float>(pixel) / 127.5f - 1.0f; }

using FashionMnistTest = TempDirTest;

TEST_F(FashionMnistTest, LoadsSyntheticFilesGzipOrRaw) {
  write_gzip(path("train-images-idx3-ubyte.gz"), fashion_images(6));
  write_raw(path("train-labels-idx1-ubyte"), fashion_labels(6));  // uncompressed name
  write_gzip(path("t10k-images-idx3-ubyte.gz"), fashion_images(4));
  write_gzip(path("t10k-labels-idx1-ubyte.gz"), fashion_labels(4));
  auto data = make_fashion_mnist_dataset(dir_.string(), false);
  EXPECT_EQ(data->sample_shape(), std::vector<int64_t>({1, 28, 28}));
  EXPECT_EQ(data->num_classes(), 10);
  EXPECT_EQ(data->describe(), "fashion-mnist (6 train / 4 test, 1x28x28, 10 classes)");

  auto gen = seeded(3);
  Batch batch = data->train_batch(50, gen);
  EXPECT_EQ(batch.x.sizes(), torch::IntArrayRef({50, 1, 28, 28}));
  EXPECT_EQ(batch.x.scalar_type(), torch::kFloat);
  EXPECT_EQ(batch.y.scalar_type(), torch::kLong);
  EXPECT_GE(batch.x.min().item<float>(), -1.0f);
  EXPECT_LE(batch.x.max().item<float>(), 1.0f);
  for (int64_t i = 0; i < 50; ++i) {
    const int64_t label = batch.y[i].item<int64_t>();
    ASSERT_TRUE(label >= 0 && label < 6);
    EXPECT_FLOAT_EQ(batch.x[i][0][5][0].item<float>(), unit(static_cast<int>(label) * 20));
    EXPECT_FLOAT_EQ(batch.x[i][0][5][27].item<float>(), 1.0f);  // never flipped
  }
  auto same_gen = seeded(3);
  EXPECT_TRUE(torch::equal(data->train_batch(50, same_gen).x, batch.x));

  Batch held = data->heldout(3);
  EXPECT_EQ(held.x.sizes(), torch::IntArrayRef({3, 1, 28, 28}));
  EXPECT_TRUE(torch::equal(held.y, torch::tensor({0, 1, 2}, torch::kLong)));
  EXPECT_FLOAT_EQ(held.x[2][0][0][0].item<float>(), unit(40));
  EXPECT_TRUE(torch::equal(data->heldout(3).x, held.x));
  EXPECT_EQ(data->heldout(100).x.size(0), 4);
}

TEST_F(FashionMnistTest, FlipsHalfTheTrainingImagesButNeverHeldOut) {
  for (const std::string prefix : {"train", "t10k"}) {
    write_gzip(path(prefix + "-images-idx3-ubyte.gz"), fashion_images(5));
    write_gzip(path(prefix + "-labels-idx1-ubyte.gz"), fashion_labels(5));
  }
  auto data = make_fashion_mnist_dataset(dir_.string(), true);
  EXPECT_TRUE(contains(data->describe(), "random horizontal flips")) << data->describe();
  auto gen = seeded(9);
  Batch batch = data->train_batch(400, gen);
  int flipped = 0;
  for (int64_t i = 0; i < 400; ++i) {
    const float value = unit(static_cast<int>(batch.y[i].item<int64_t>()) * 20);
    const torch::Tensor image = batch.x[i][0];
    const bool is_flipped = image[3][0].item<float>() == 1.0f;
    flipped += is_flipped;
    EXPECT_FLOAT_EQ(image[3][is_flipped ? 27 : 0].item<float>(), value);
  }
  EXPECT_GT(flipped, 150);
  EXPECT_LT(flipped, 250);
  auto same_gen = seeded(9);
  EXPECT_TRUE(torch::equal(data->train_batch(400, same_gen).x, batch.x));
  Batch held = data->heldout(5);
  EXPECT_TRUE(torch::all(held.x.select(3, 27) == 1.0f).item<bool>());
}

TEST_F(FashionMnistTest, ReportsMissingAndMismatchedFiles) {
  std::string msg = user_error_message([&] { make_fashion_mnist_dataset(path("nowhere"), false); });
  EXPECT_TRUE(contains(msg, path("nowhere") + ": no such folder")) << msg;

  write_gzip(path("train-images-idx3-ubyte.gz"), fashion_images(6));
  msg = user_error_message([&] { make_fashion_mnist_dataset(dir_.string(), false); });
  EXPECT_TRUE(contains(msg,
                       "missing train-labels-idx1-ubyte.gz (or uncompressed "
                       "train-labels-idx1-ubyte)"))
      << msg;

  write_gzip(path("train-labels-idx1-ubyte.gz"), fashion_labels(5));
  msg = user_error_message([&] { make_fashion_mnist_dataset(dir_.string(), false); });
  EXPECT_TRUE(contains(msg, path("train-images-idx3-ubyte.gz") + " holds 6 images but " +
                                path("train-labels-idx1-ubyte.gz") + " holds 5 labels"))
      << msg;

  write_gzip(path("train-labels-idx1-ubyte.gz"), idx_bytes({6}, {0, 1, 2, 3, 4, 10}));
  msg = user_error_message([&] { make_fashion_mnist_dataset(dir_.string(), false); });
  EXPECT_TRUE(contains(msg, "train-labels-idx1-ubyte.gz: label 10 out of range 0..9")) << msg;

  write_gzip(path("train-labels-idx1-ubyte.gz"), fashion_labels(6));
  write_gzip(path("t10k-images-idx3-ubyte.gz"), idx_bytes({4, 28 * 28}, Bytes(4 * 28 * 28)));
  write_gzip(path("t10k-labels-idx1-ubyte.gz"), fashion_labels(4));
  msg = user_error_message([&] { make_fashion_mnist_dataset(dir_.string(), false); });
  EXPECT_TRUE(contains(msg, "t10k-images-idx3-ubyte.gz: expected 3 dimensions")) << msg;
}

TEST(FashionMnistInstalled, LoadsTheDebianPackage) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir + "/train-images-idx3-ubyte.gz")) GTEST_SKIP() << dir << " not installed";
  auto data = make_fashion_mnist_dataset(dir, false);
  EXPECT_EQ(data->describe(), "fashion-mnist (60000 train / 10000 test, 1x28x28, 10 classes)");
  Batch held = data->heldout(20000);
  EXPECT_EQ(held.x.sizes(), torch::IntArrayRef({10000, 1, 28, 28}));
  EXPECT_EQ(held.y.min().item<int64_t>(), 0);
  EXPECT_EQ(held.y.max().item<int64_t>(), 9);
  EXPECT_EQ(torch::bincount(held.y).min().item<int64_t>(), 1000);  // balanced test set
  auto gen = seeded(1);
  Batch batch = data->train_batch(256, gen);
  EXPECT_GE(batch.x.min().item<float>(), -1.0f);
  EXPECT_LE(batch.x.max().item<float>(), 1.0f);
  EXPECT_GT(batch.x.max().item<float>(), 0.9f);
}

// ---- Image folders ----

class ImageFolderTest : public TempDirTest {
 protected:
  // Writes a constant H x W image with the given channel values.
  void constant_png(const std::string& name, int64_t height, int64_t width,
                    const std::vector<int>& channels) {
    torch::Tensor pixels =
        torch::empty({height, width, static_cast<int64_t>(channels.size())}, torch::kUInt8);
    for (size_t c = 0; c < channels.size(); ++c) pixels.select(2, c).fill_(channels[c]);
    fs::create_directories((dir_ / name).parent_path());
    write_png(path(name), pixels);
  }

  // A grey `side` x `side` checkerboard of 1-pixel black and white squares.
  void checkerboard_png(const std::string& name, int64_t side) {
    auto index = torch::arange(side);
    auto board = ((index.view({side, 1}) + index.view({1, side})) % 2 * 255).to(torch::kUInt8);
    write_png(path(name), board.unsqueeze(2).contiguous());
  }
};

TEST_F(ImageFolderTest, ClassSubFoldersMixedGreyAndColour) {
  for (int i = 0; i < 3; ++i) {
    constant_png("b_cats/cat" + std::to_string(i) + ".png", 20, 12, {200, 100, 0});
    constant_png("a_dogs/sub/dog" + std::to_string(i) + ".PNG", 16, 16, {51});
  }
  constant_png(".hidden/ghost.png", 4, 4, {0});
  fs::create_directories(dir_ / "no_images");
  auto data = make_image_folder_dataset(dir_.string(), 8, false, 1.0 / 3.0, 5);
  EXPECT_EQ(data->sample_shape(), std::vector<int64_t>({3, 8, 8}));
  EXPECT_EQ(data->num_classes(), 2);
  EXPECT_EQ(data->describe(), "image folder " + dir_.string() +
                                  " (4 train / 2 test, 3x8x8, 2 classes: a_dogs, b_cats)");
  auto gen = seeded(2);
  Batch batch = data->train_batch(40, gen);
  EXPECT_EQ(batch.x.sizes(), torch::IntArrayRef({40, 3, 8, 8}));
  EXPECT_EQ(batch.y.scalar_type(), torch::kLong);
  const torch::Tensor dog = torch::full({3, 8, 8}, unit(51));
  const torch::Tensor cat =
      torch::stack({torch::full({8, 8}, unit(200)), torch::full({8, 8}, unit(100)),
                    torch::full({8, 8}, unit(0))});
  int cats = 0;
  for (int64_t i = 0; i < 40; ++i) {
    const bool is_cat = batch.y[i].item<int64_t>() == 1;
    cats += is_cat;
    EXPECT_TRUE(torch::allclose(batch.x[i], is_cat ? cat : dog)) << batch.x[i];
  }
  EXPECT_GT(cats, 0);
  EXPECT_LT(cats, 40);
  Batch held = data->heldout(10);
  EXPECT_EQ(held.x.size(0), 2);
  EXPECT_TRUE(torch::equal(data->heldout(10).y, held.y));
  auto same = make_image_folder_dataset(dir_.string(), 8, false, 1.0 / 3.0, 5);
  EXPECT_TRUE(torch::equal(same->heldout(10).x, held.x));
}

TEST_F(ImageFolderTest, GreyFolderIsUnconditionalOneChannel) {
  for (int i = 0; i < 4; ++i) constant_png("img" + std::to_string(i) + ".png", 10, 30, {i * 60});
  auto data = make_image_folder_dataset(dir_.string(), 6, false, 0.25, 1);
  EXPECT_EQ(data->sample_shape(), std::vector<int64_t>({1, 6, 6}));
  EXPECT_EQ(data->num_classes(), 0);
  EXPECT_TRUE(contains(data->describe(), "(3 train / 1 test, 1x6x6, unconditional)"))
      << data->describe();
  auto gen = seeded(4);
  Batch batch = data->train_batch(5, gen);
  EXPECT_FALSE(batch.y.defined());
  EXPECT_FALSE(data->heldout(5).y.defined());
  for (int64_t i = 0; i < 5; ++i) {  // constants survive resizing (and enlarging)
    const torch::Tensor image = batch.x[i];
    EXPECT_TRUE(torch::allclose(image, torch::full_like(image, image[0][0][0].item<float>())));
  }
  auto enlarged = make_image_folder_dataset(dir_.string(), 40, false, 0.25, 1);
  const torch::Tensor big = enlarged->heldout(1).x;
  EXPECT_EQ(big.sizes(), torch::IntArrayRef({1, 1, 40, 40}));
  EXPECT_TRUE(torch::allclose(big, torch::full_like(big, big[0][0][0][0].item<float>())));
}

TEST_F(ImageFolderTest, AlphaOverWhiteAndJpeg) {
  constant_png("clear.png", 8, 8, {0, 0, 0, 0});        // fully transparent black: white
  constant_png("opaque.png", 8, 8, {0, 0, 0, 255});     // opaque black
  const std::vector<uint8_t> grey_alpha(8 * 8 * 2, 0);  // grey + alpha counts as colour
  ASSERT_NE(stbi_write_png(path("grey-alpha.png").c_str(), 8, 8, 2, grey_alpha.data(), 16), 0);
  std::vector<uint8_t> rgb(16 * 16 * 3);
  for (size_t i = 0; i < rgb.size(); i += 3) rgb[i] = 250, rgb[i + 1] = 10, rgb[i + 2] = 120;
  ASSERT_NE(stbi_write_jpg(path("photo.JPG").c_str(), 16, 16, 3, rgb.data(), 95), 0);
  auto data = make_image_folder_dataset(dir_.string(), 4, false, 0.25, 0);
  EXPECT_EQ(data->sample_shape(), std::vector<int64_t>({3, 4, 4}));
  auto gen = seeded(0);
  Batch batch = data->train_batch(60, gen);
  torch::Tensor all = torch::cat({batch.x, data->heldout(1).x});
  int white = 0, black = 0, photo = 0;
  for (int64_t i = 0; i < all.size(0); ++i) {
    const torch::Tensor image = all[i];
    if (torch::allclose(image, torch::ones_like(image))) {
      ++white;
    } else if (torch::allclose(image, -torch::ones_like(image))) {
      ++black;
    } else {
      ++photo;
      EXPECT_NEAR(image[0].mean().item<float>(), unit(250), 0.05);
      EXPECT_NEAR(image[1].mean().item<float>(), unit(10), 0.05);
      EXPECT_NEAR(image[2].mean().item<float>(), unit(120), 0.05);
    }
  }
  EXPECT_GT(white, 0);
  EXPECT_GT(black, 0);
  EXPECT_GT(photo, 0);
}

TEST_F(ImageFolderTest, DownscalingAveragesFinePatterns) {
  checkerboard_png("even.png", 64);    // 64 -> 8: whole 8 x 8 blocks
  checkerboard_png("uneven.png", 60);  // 60 -> 16: 3.75-pixel footprints
  auto data = make_image_folder_dataset(dir_.string(), 16, false, 0.5, 0);
  auto gen = seeded(0);
  torch::Tensor all = torch::cat({data->heldout(1).x, data->train_batch(4, gen).x});
  EXPECT_LT(all.abs().max().item<float>(), 0.1f) << all;  // mid-grey, no aliasing
  auto even = make_image_folder_dataset(dir_.string(), 8, false, 0.5, 0);
  EXPECT_LT(even->heldout(1).x.abs().max().item<float>(), 0.1f);
}

TEST_F(ImageFolderTest, CropsTheCentreOfOblongImages) {
  // 10 wide x 30 high: left half black, right half white; middle third rows marked grey.
  for (int i = 0; i < 2; ++i) {
    torch::Tensor pixels = torch::zeros({30, 10, 1}, torch::kUInt8);
    pixels.narrow(1, 5, 5).fill_(255);
    pixels.narrow(0, 0, 10).fill_(128);
    pixels.narrow(0, 20, 10).fill_(128);
    write_png(path("tall" + std::to_string(i) + ".png"), pixels);
  }
  auto data = make_image_folder_dataset(dir_.string(), 10, true, 0.5, 0);
  const torch::Tensor image = data->heldout(1).x[0][0];
  EXPECT_TRUE(torch::allclose(image.narrow(1, 0, 5), torch::full({10, 5}, -1.0f)));
  EXPECT_TRUE(torch::allclose(image.narrow(1, 5, 5), torch::full({10, 5}, 1.0f)));
  auto gen = seeded(6);
  Batch batch = data->train_batch(100, gen);
  const int64_t flipped = (batch.x.select(3, 0) > 0).all(2).sum().item<int64_t>();
  EXPECT_GT(flipped, 25);
  EXPECT_LT(flipped, 75);
}

TEST_F(ImageFolderTest, ReportsBadFolders) {
  std::string msg =
      user_error_message([&] { make_image_folder_dataset(path("nowhere"), 8, false, 0.1, 0); });
  EXPECT_EQ(msg, path("nowhere") + ": no such folder");

  fs::create_directories(dir_ / "empty" / "sub");
  std::ofstream(dir_ / "empty" / "notes.txt") << "not an image";
  msg = user_error_message([&] { make_image_folder_dataset(path("empty"), 8, false, 0.1, 0); });
  EXPECT_TRUE(contains(msg, path("empty") + ": no PNG or JPEG images")) << msg;

  fs::create_directories(dir_ / "corrupt");
  constant_png("corrupt/fine.png", 8, 8, {1});
  Bytes noise(300);
  for (size_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<uint8_t>(i * 131 + 7);
  write_raw(dir_ / "corrupt" / "broken.png", noise);
  msg = user_error_message([&] { make_image_folder_dataset(path("corrupt"), 8, false, 0.5, 0); });
  EXPECT_TRUE(contains(msg, path("corrupt/broken.png") + ": cannot decode image (stb_image: "))
      << msg;
  // Found by fuzz/fuzz_png.cpp: stb_image decoded a bare PNM header to an image without pixels.
  fs::create_directories(dir_ / "pixelless");
  constant_png("pixelless/fine.png", 8, 8, {1});
  write_raw(dir_ / "pixelless" / "header.png", Bytes{'P', '5'});
  msg = user_error_message([&] { make_image_folder_dataset(path("pixelless"), 8, false, 0.5, 0); });
  EXPECT_TRUE(contains(msg, path("pixelless/header.png") + ": image has no pixels (0x0)")) << msg;

  constant_png("mixed/a/one.png", 8, 8, {1});
  constant_png("mixed/loose.png", 8, 8, {1});
  msg = user_error_message([&] { make_image_folder_dataset(path("mixed"), 8, false, 0.5, 0); });
  EXPECT_TRUE(contains(msg, path("mixed/loose.png") +
                                ": image directly in a dataset folder that has class "
                                "sub-folders (a)"))
      << msg;

  constant_png("single/only.png", 8, 8, {1});
  msg = user_error_message([&] { make_image_folder_dataset(path("single"), 8, false, 0.5, 0); });
  EXPECT_TRUE(contains(msg, "1 images cannot be split with test_fraction 0.5")) << msg;
  msg = user_error_message([&] { make_image_folder_dataset(path("single"), 0, false, 0.5, 0); });
  EXPECT_TRUE(contains(msg, "image size must be in 1..4096, got 0")) << msg;
  msg = user_error_message([&] { make_image_folder_dataset(path("single"), 8, false, 1.0, 0); });
  EXPECT_TRUE(contains(msg, "test_fraction must be in (0, 1), got 1")) << msg;
}

}  // namespace
}  // namespace onestep
