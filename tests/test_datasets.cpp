// Tests for the toy datasets (toy2d) and the CSV point-cloud dataset (points_csv):
// reproducibility, shapes, supports, held-out stability, split logic and error messages.
#include "onestep/core/error.h"
#include "onestep/data/points_csv.h"
#include "onestep/data/toy2d.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "test_support.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace onestep {
namespace {

using testing_support::contains;
using testing_support::seeded;
using testing_support::user_error_message;

std::unique_ptr<Dataset> toy(const std::string& name) { return make_toy_dataset(name, 1.0, 3); }

TEST(ToyDatasets, ShapesTypesAndLabels) {
  for (const auto& name : toy_dataset_names()) {
    SCOPED_TRACE(name);
    auto data = make_toy_dataset(name, 0.5, 5);
    const int64_t dim = name == "gaussian" ? 5 : 2;
    EXPECT_EQ(data->sample_shape(), std::vector<int64_t>({dim}));
    EXPECT_EQ(data->describe().rfind(name, 0), 0u) << data->describe();
    auto gen = seeded(1);
    Batch batch = data->train_batch(257, gen);
    EXPECT_EQ(batch.x.sizes(), torch::IntArrayRef({257, dim}));
    EXPECT_EQ(batch.x.scalar_type(), torch::kFloat);
    if (name == "8gaussians") {
      EXPECT_EQ(data->num_classes(), 8);
      ASSERT_TRUE(batch.y.defined());
      EXPECT_EQ(batch.y.sizes(), torch::IntArrayRef({257}));
      EXPECT_EQ(batch.y.scalar_type(), torch::kLong);
    } else {
      EXPECT_EQ(data->num_classes(), 0);
      EXPECT_FALSE(batch.y.defined());
    }
  }
}

TEST(ToyDatasets, SameSeedSameBatchesDifferentSeedDifferent) {
  for (const auto& name : toy_dataset_names()) {
    SCOPED_TRACE(name);
    auto data = toy(name);
    auto gen_a = seeded(42);
    auto gen_b = seeded(42);
    auto gen_c = seeded(43);
    for (int step = 0; step < 3; ++step) {
      Batch a = data->train_batch(64, gen_a);
      Batch b = data->train_batch(64, gen_b);
      Batch c = data->train_batch(64, gen_c);
      EXPECT_TRUE(torch::equal(a.x, b.x));
      EXPECT_FALSE(torch::equal(a.x, c.x));
      if (a.y.defined()) {
        EXPECT_TRUE(torch::equal(a.y, b.y));
      }
    }
    // Consecutive batches of one stream differ.
    auto gen = seeded(7);
    EXPECT_FALSE(torch::equal(data->train_batch(64, gen).x, data->train_batch(64, gen).x));
  }
}

// Each toy stays within its construction's bound plus 6 noise standard deviations (a 6-sigma
// excursion has probability ~1e-9 per coordinate, so 20000 draws essentially never reach it).
TEST(ToyDatasets, ValuesWithinUnitScale) {
  const std::vector<std::pair<std::string, double>> bounds = {
      {"checkerboard", 2.0},               // exact support [-2, 2)^2
      {"moons", 2.25 + 6 * 0.05 * 1.5},    // scaled bounding box +-2.25, noise 0.075
      {"8gaussians", 2.0 + 6 * 0.15},      // radius 2, std 0.15
      {"spirals", 2.2 + 6 * 0.05},         // radius <= 2.2, noise 0.05
      {"swissroll", 2.02 + 6 * 0.05},      // 4.5 pi / 7, noise 0.05
  };
  for (const auto& [name, bound] : bounds) {
    SCOPED_TRACE(name);
    auto gen = seeded(3);
    auto x = toy(name)->train_batch(20000, gen).x;
    EXPECT_LE(x.abs().max().item<double>(), bound);
    // Roughly unit scale: neither collapsed nor spread out.
    auto std = x.std(0);
    EXPECT_GT(std.min().item<double>(), 0.5);
    EXPECT_LT(std.max().item<double>(), 2.0);
  }
}

TEST(ToyDatasets, CheckerboardPointsLieInTheFilledSquares) {
  auto gen = seeded(5);
  auto x = toy("checkerboard")->train_batch(20000, gen).x;
  EXPECT_GE(x.min().item<double>(), -2.0);
  EXPECT_LT(x.max().item<double>(), 2.0);
  auto cells = torch::floor(x).to(torch::kLong);
  auto parity = torch::remainder(cells.select(1, 0) + cells.select(1, 1), 2);
  EXPECT_EQ(parity.sum().item<int64_t>(), 0);  // filled squares: floor(x1) + floor(x2) even
  std::set<std::pair<int64_t, int64_t>> filled;
  for (int64_t i = 0; i < cells.size(0); ++i) {
    filled.emplace(cells[i][0].item<int64_t>(), cells[i][1].item<int64_t>());
  }
  EXPECT_EQ(filled.size(), 8u);
}

TEST(ToyDatasets, EightGaussiansLabelIsTheNearestMode) {
  auto gen = seeded(11);
  Batch batch = toy("8gaussians")->train_batch(10000, gen);
  auto angles = torch::arange(8, torch::kDouble) * (2 * std::acos(-1.0) / 8);
  auto modes = torch::stack({torch::cos(angles), torch::sin(angles)}, 1).to(torch::kFloat) * 2;
  auto nearest = torch::cdist(batch.x, modes).argmin(1);
  EXPECT_TRUE(torch::equal(nearest, batch.y));
  EXPECT_EQ(std::get<0>(torch::_unique(batch.y)).numel(), 8);
}

TEST(ToyDatasets, PerClassBatchesHoldTheRequestedClassesInOrder) {
  auto data = toy("8gaussians");
  auto gen = testing_support::seeded(4);
  const Batch batch = data->class_batch({5, 1, 5}, 16, gen);
  ASSERT_EQ(batch.x.size(0), 48);
  EXPECT_TRUE(torch::equal(batch.y, torch::tensor({5, 1, 5}, torch::kLong).repeat_interleave(16)));
  // Each sample lies on its class's mode (radius 2, angle 2 pi k / 8, std 0.15).
  const auto angle = batch.y.to(torch::kFloat) * (2 * M_PI / 8);
  const auto centre = torch::stack({2 * torch::cos(angle), 2 * torch::sin(angle)}, 1);
  EXPECT_LT((batch.x - centre).norm(2, 1).max().item<double>(), 1.0);
  EXPECT_TRUE(contains(user_error_message([&] { toy("moons")->class_batch({0}, 4, gen); }), "class-labelled"));
}

TEST(ToyDatasets, HeldoutIsFixedAndSeparateFromTraining) {
  for (const auto& name : toy_dataset_names()) {
    SCOPED_TRACE(name);
    auto data = toy(name);
    Batch first = data->heldout(3000);
    Batch again = data->heldout(3000);
    EXPECT_TRUE(torch::equal(first.x, again.x));
    EXPECT_EQ(first.x.size(0), 3000);
    // A smaller request is a prefix, whatever was asked before.
    EXPECT_TRUE(torch::equal(data->heldout(10).x, first.x.narrow(0, 0, 10)));
    // A fresh instance, after consuming a training stream, gives the same held-out set.
    auto fresh = toy(name);
    auto gen = seeded(0);
    Batch train = fresh->train_batch(3000, gen);
    Batch fresh_heldout = fresh->heldout(3000);
    EXPECT_TRUE(torch::equal(fresh_heldout.x, first.x));
    EXPECT_FALSE(torch::equal(train.x, first.x));
    if (first.y.defined()) {
      EXPECT_TRUE(torch::equal(fresh_heldout.y, first.y));
    }
    // Callers modifying the result do not change the cache.
    first.x.zero_();
    EXPECT_TRUE(torch::equal(data->heldout(3000).x, again.x));
  }
}

// With n = 100000 draws of 4 coordinates, the sample mean of a coordinate has standard error
// sigma / sqrt(n) ~ 0.0022 and the sample std has standard error ~ sigma / sqrt(2 n) ~ 0.0016
// (for sigma 0.7); the tolerances are 5 standard errors.
TEST(ToyDatasets, GaussianMeanAndStd) {
  const double sigma = 0.7;
  const int64_t n = 100000;
  auto data = make_toy_dataset("gaussian", sigma, 4);
  auto gen = seeded(9);
  auto x = data->train_batch(n, gen).x.to(torch::kDouble);
  const double mean_tol = 5 * sigma / std::sqrt(double(n));
  const double std_tol = 5 * sigma / std::sqrt(2.0 * n);
  EXPECT_LT(x.mean(0).abs().max().item<double>(), mean_tol);
  EXPECT_LT((x.std(0) - sigma).abs().max().item<double>(), std_tol);
}

TEST(ToyDatasets, BadArgumentsAreUserErrors) {
  EXPECT_TRUE(contains(user_error_message([] { make_toy_dataset("blobs", 1.0, 2); }), "blobs"));
  EXPECT_TRUE(contains(user_error_message([] { make_toy_dataset("gaussian", 0.0, 2); }), "sigma"));
  EXPECT_TRUE(contains(user_error_message([] { make_toy_dataset("gaussian", 1.0, 0); }), "dim"));
}

// Writes files into a fresh directory per test.
class PointsCsv : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("onestep_points_csv_" + std::string(info->name()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& contents) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << contents;
    return path;
  }

  // "i,-i/2,i/4" for i in [first, first + count).
  static std::string rows(int first, int count) {
    std::string text;
    for (int i = first; i < first + count; ++i) {
      text += std::to_string(i) + "," + std::to_string(-i / 2.0) + "," + std::to_string(i / 4.0) +
              "\n";
    }
    return text;
  }

  static torch::Tensor expected_rows(int first, int count) {
    auto i = torch::arange(first, first + count, torch::kFloat);
    return torch::stack({i, -i / 2, i / 4}, 1);
  }

  std::filesystem::path dir_;
};

// Every row of `x` is a row of `pool`.
bool rows_within(const torch::Tensor& x, const torch::Tensor& pool) {
  return (std::get<0>(torch::cdist(x, pool).min(1)) == 0).all().item<bool>();
}

TEST_F(PointsCsv, RoundTripWithHeaderCommentsAndBlankLines) {
  const std::string text = "x, y ,z\r\n# a comment\n\n" + rows(0, 4) + "  \n#x\n" + rows(4, 6);
  const std::string path = write("points.csv", text);
  auto data = make_points_dataset(path, path, 0.5, 0);
  EXPECT_EQ(data->sample_shape(), std::vector<int64_t>({3}));
  EXPECT_EQ(data->num_classes(), 0);
  Batch all = data->heldout(100);
  EXPECT_TRUE(torch::equal(all.x, expected_rows(0, 10)));
  EXPECT_FALSE(all.y.defined());
  EXPECT_TRUE(torch::equal(data->heldout(4).x, expected_rows(0, 4)));
  auto gen = seeded(1);
  Batch batch = data->train_batch(500, gen);
  EXPECT_EQ(batch.x.sizes(), torch::IntArrayRef({500, 3}));
  EXPECT_TRUE(rows_within(batch.x, all.x));
  EXPECT_TRUE(contains(data->describe(), "points.csv"));
}

TEST_F(PointsCsv, OneDimensionalPoints) {
  const std::string path = write("line.csv", "value\n1.5\n-2\n3e-1\n0x1p2\n");
  auto data = make_points_dataset(path, path, 0.5, 0);
  EXPECT_EQ(data->sample_shape(), std::vector<int64_t>({1}));
  EXPECT_TRUE(torch::equal(data->heldout(4).x, torch::tensor({1.5f, -2.f, 0.3f, 4.f}).view({4, 1})));
}

TEST_F(PointsCsv, SplitSizesAreDeterministicAndDisjoint) {
  const std::string path = write("points.csv", rows(0, 20));
  auto data = make_points_dataset(path, "", 0.25, 7);
  Batch test = data->heldout(100);
  ASSERT_EQ(test.x.size(0), 5);
  EXPECT_TRUE(torch::equal(data->heldout(2).x, test.x.narrow(0, 0, 2)));
  // Sampling with replacement reaches all 15 training rows and never a held-out one.
  auto gen = seeded(2);
  auto train = std::get<0>(torch::_unique(data->train_batch(2000, gen).x.select(1, 0)));
  ASSERT_EQ(train.numel(), 15);
  auto held = test.x.select(1, 0);
  EXPECT_FALSE(torch::isin(held, train).any().item<bool>());
  // Same seed, same split; another seed, another split.
  EXPECT_TRUE(torch::equal(make_points_dataset(path, "", 0.25, 7)->heldout(100).x, test.x));
  EXPECT_FALSE(torch::equal(make_points_dataset(path, "", 0.25, 8)->heldout(100).x, test.x));
  // Same generator seed, same training batches.
  auto gen_a = seeded(3);
  auto gen_b = seeded(3);
  EXPECT_TRUE(torch::equal(data->train_batch(50, gen_a).x, data->train_batch(50, gen_b).x));
  // Rounding: 0.3 of 20 is 6 held out.
  EXPECT_EQ(make_points_dataset(path, "", 0.3, 0)->heldout(100).x.size(0), 6);
}

TEST_F(PointsCsv, SeparateTestFile) {
  const std::string train_path = write("train.csv", rows(0, 8));
  const std::string test_path = write("test.csv", "# held out\n" + rows(100, 3));
  auto data = make_points_dataset(train_path, test_path, 0.5, 0);
  EXPECT_TRUE(torch::equal(data->heldout(100).x, expected_rows(100, 3)));
  auto gen = seeded(4);
  auto batch = data->train_batch(1000, gen).x;
  EXPECT_TRUE(rows_within(batch, expected_rows(0, 8)));
  EXPECT_EQ(std::get<0>(torch::_unique(batch.select(1, 0))).numel(), 8);
  EXPECT_TRUE(contains(data->describe(), "test.csv"));
}

TEST_F(PointsCsv, MissingFile) {
  const std::string path = (dir_ / "absent.csv").string();
  const std::string msg = user_error_message([&] { make_points_dataset(path, "", 0.5, 0); });
  EXPECT_TRUE(contains(msg, "absent.csv")) << msg;
  const std::string good = write("good.csv", rows(0, 4));
  const std::string test_msg = user_error_message([&] { make_points_dataset(good, path, 0.5, 0); });
  EXPECT_TRUE(contains(test_msg, "absent.csv")) << test_msg;
}

TEST_F(PointsCsv, EmptyFiles) {
  for (const std::string& text : {std::string(), std::string("\n\n"), std::string("x,y\n# c\n")}) {
    const std::string path = write("empty.csv", text);
    const std::string msg = user_error_message([&] { make_points_dataset(path, "", 0.5, 0); });
    EXPECT_TRUE(contains(msg, "empty.csv: no points")) << msg;
  }
}

TEST_F(PointsCsv, RaggedRow) {
  std::string text = "x,y\n";  // line 1
  for (int i = 2; i <= 16; ++i) text += std::to_string(i) + ",0.5\n";
  text += "1,2,3\n";  // line 17
  const std::string path = write("data.csv", text);
  const std::string msg = user_error_message([&] { make_points_dataset(path, "", 0.5, 0); });
  EXPECT_TRUE(contains(msg, "data.csv:17: expected 2 values, found 3")) << msg;
}

TEST_F(PointsCsv, NotANumber) {
  const std::string path = write("data.csv", "# header comment\n1,2\n3,4\n\n5,abc\n");
  const std::string msg = user_error_message([&] { make_points_dataset(path, "", 0.5, 0); });
  EXPECT_TRUE(contains(msg, "data.csv:5: 'abc' is not a number")) << msg;
  // A header is allowed only as the first content line and only without numbers.
  const std::string mixed = write("mixed.csv", "x,2\n1,2\n");
  const std::string mixed_msg = user_error_message([&] { make_points_dataset(mixed, "", 0.5, 0); });
  EXPECT_TRUE(contains(mixed_msg, "mixed.csv:1: 'x' is not a number")) << mixed_msg;
  const std::string late = write("late.csv", "1,2\nx,y\n");
  const std::string late_msg = user_error_message([&] { make_points_dataset(late, "", 0.5, 0); });
  EXPECT_TRUE(contains(late_msg, "late.csv:2: 'x' is not a number")) << late_msg;
  const std::string blank = write("blank.csv", "1,2\n3,\n");
  const std::string blank_msg = user_error_message([&] { make_points_dataset(blank, "", 0.5, 0); });
  EXPECT_TRUE(contains(blank_msg, "blank.csv:2: '' is not a number")) << blank_msg;
}

TEST_F(PointsCsv, NonFiniteValues) {
  for (const std::string bad : {"nan", "inf", "-Infinity", "1e300"}) {
    SCOPED_TRACE(bad);
    const std::string path = write("data.csv", "1,2\n3,4\n" + bad + ",5\n");
    const std::string msg = user_error_message([&] { make_points_dataset(path, "", 0.5, 0); });
    EXPECT_TRUE(contains(msg, "data.csv:3: '" + bad + "' is not finite")) << msg;
  }
}

TEST_F(PointsCsv, TestFileDimensionMismatchNamesBothFiles) {
  const std::string train_path = write("train.csv", rows(0, 5));
  const std::string test_path = write("test.csv", "a,b\n1,2\n");
  const std::string msg =
      user_error_message([&] { make_points_dataset(train_path, test_path, 0.5, 0); });
  EXPECT_TRUE(contains(msg, "test.csv:2: expected 3 values")) << msg;
  EXPECT_TRUE(contains(msg, "train.csv")) << msg;
  EXPECT_TRUE(contains(msg, "found 2")) << msg;
}

TEST_F(PointsCsv, BadSplits) {
  const std::string path = write("small.csv", rows(0, 3));
  for (double fraction : {0.0, 1.0, -0.5, 0.1, 0.9}) {
    SCOPED_TRACE(fraction);
    const std::string msg =
        user_error_message([&] { make_points_dataset(path, "", fraction, 0); });
    EXPECT_TRUE(contains(msg, "small.csv")) << msg;
    EXPECT_TRUE(contains(msg, "test_fraction")) << msg;
  }
  const std::string single = write("single.csv", "1,2\n");
  const std::string msg = user_error_message([&] { make_points_dataset(single, "", 0.5, 0); });
  EXPECT_TRUE(contains(msg, "single.csv: 1 points cannot be split")) << msg;
}

}  // namespace
}  // namespace onestep
