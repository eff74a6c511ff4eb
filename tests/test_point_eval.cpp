// Tests of the point-data evaluation (eval/evaluate with eval/point_metrics): metrics that see
// blur (a blurred checkerboard against clean held-out points), mode coverage on 8gaussians, and
// the floor row, table and JSON carrying every point metric under its contract name.
#include "onestep/eval/evaluate.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "onestep/data/toy2d.h"
#include "onestep/eval/feature_metrics.h"
#include "onestep/eval/point_metrics.h"
#include "test_support.h"

namespace onestep {
namespace {

using testing_support::contains;
using testing_support::seeded;

const std::vector<std::string> kPointMetrics = {"energy_distance", "sliced_w2", "mmd_rbf", "w2", "precision", "recall"};

std::vector<std::string> names(const EvalRow& row) {
  std::vector<std::string> out;
  for (const auto& [name, value] : row.metrics) out.push_back(name);
  return out;
}

double metric(const EvalRow& row, const std::string& name) {
  for (const auto& [key, value] : row.metrics)
    if (key == name) return value;
  ADD_FAILURE() << "no metric " << name;
  return NAN;
}

// Share of the rows of a checkerboard sample outside the filled squares (floor(x1) + floor(x2)
// even, inside [-2, 2]^2).
double share_off_board(const torch::Tensor& points) {
  const auto p = points.to(torch::kFloat64);
  const auto cells = torch::floor(p);
  const auto filled = torch::remainder(cells.select(1, 0) + cells.select(1, 1), 2).eq(0) &
                      p.abs().le(2.0).all(1);
  return 1.0 - filled.to(torch::kFloat64).mean().item<double>();
}

TEST(PointEval, BlurredCheckerboardScoresClearlyLowerPrecisionThanHeldOutData) {
  const auto data = make_toy_dataset("checkerboard", 1.0, 2);
  const torch::Tensor all = data->heldout(12000).x.to(torch::kFloat64);
  const torch::Tensor reference = all.slice(0, 0, 4000);
  const torch::Tensor clean = all.slice(0, 4000, 8000);
  auto gen = seeded(7);
  const torch::Tensor blurred =
      all.slice(0, 8000, 12000) + 0.3 * torch::randn({4000, 2}, gen, torch::TensorOptions().dtype(torch::kFloat64));
  const double off = share_off_board(blurred);
  RecordProperty("blurred_share_off_board", std::to_string(off));
  ASSERT_GT(off, 0.15);  // the blur puts many points into empty squares
  ASSERT_EQ(share_off_board(clean), 0.0);
  const PrecisionRecall pr_clean = precision_recall(reference, clean, kPrecisionRecallNeighbours);
  const PrecisionRecall pr_blurred = precision_recall(reference, blurred, kPrecisionRecallNeighbours);
  RecordProperty("precision_clean", std::to_string(pr_clean.precision));
  RecordProperty("precision_blurred", std::to_string(pr_blurred.precision));
  // Measured: 0.98 clean, 0.66 blurred (0.978-0.982 and 0.657-0.666 over four draws).
  EXPECT_GT(pr_clean.precision, 0.95);
  EXPECT_LT(pr_blurred.precision, pr_clean.precision - 0.2);
  // The blurred points still cover the board, so recall stays high for both.
  EXPECT_GT(pr_clean.recall, 0.95);
  EXPECT_GT(pr_blurred.recall, 0.95);
}

TEST(PointEval, CoverageOf8GaussiansIsOneForAllModesAndAQuarterForTwo) {
  const auto data = make_toy_dataset("8gaussians", 1.0, 2);
  const Batch reference = data->heldout(4000);
  ASSERT_TRUE(reference.y.defined());
  auto gen = seeded(8);
  const Batch samples = data->train_batch(4000, gen);
  EXPECT_EQ(mode_coverage(samples.x, reference.x, reference.y), 1.0);
  const torch::Tensor two_modes = samples.x.index({samples.y.eq(2) | samples.y.eq(5)});
  ASSERT_GT(two_modes.size(0), 500);
  EXPECT_EQ(mode_coverage(two_modes, reference.x, reference.y), 0.25);
}

TEST(PointEval, FloorRowTableAndJsonCarryEveryPointMetric) {
  const auto gaussians = make_toy_dataset("8gaussians", 1.0, 2);
  const auto floor = reference_floor(*gaussians, 1000);
  ASSERT_TRUE(floor.has_value());
  std::vector<std::string> expected = kPointMetrics;
  expected.push_back("coverage");
  EXPECT_EQ(names(*floor), expected);
  EXPECT_EQ(metric(*floor, "coverage"), 1.0);
  for (const char* name : {"precision", "recall"}) {
    EXPECT_GT(metric(*floor, name), 0.8) << name;
    EXPECT_LE(metric(*floor, name), 1.0) << name;
  }
  // The floor row scores the second 1000 held-out points against the first 1000.
  const Batch heldout = gaussians->heldout(2000);
  const torch::Tensor first = heldout.x.slice(0, 0, 1000);
  const torch::Tensor second = heldout.x.slice(0, 1000, 2000);
  EXPECT_EQ(metric(*floor, "w2"), exact_w2(second, first));
  EXPECT_EQ(metric(*floor, "precision"), precision_recall(first, second).precision);
  EXPECT_EQ(metric(*floor, "energy_distance"), energy_distance(second, first));

  // Unlabelled data has no modes, so no coverage.
  const auto board = make_toy_dataset("checkerboard", 1.0, 2);
  const auto board_floor = reference_floor(*board, 500);
  ASSERT_TRUE(board_floor.has_value());
  EXPECT_EQ(names(*board_floor), kPointMetrics);

  EvalReport report;
  report.rows.push_back(*floor);
  report.rows.back().nfe = 1;
  report.floor = floor;
  const std::string table = format_eval_table(report);
  for (const auto& name : expected) EXPECT_TRUE(contains(table, name)) << name << "\n" << table;
  EXPECT_TRUE(contains(table, "\n  data")) << table;
  const auto json = nlohmann::json::parse(eval_json(report));
  for (const auto& name : expected) {
    EXPECT_TRUE(json["results"][0][name].is_number()) << name;
    EXPECT_TRUE(json["floor"][name].is_number()) << name;
  }

  // precision and recall need k + 1 = 4 points a side.
  EXPECT_TRUE(contains(testing_support::user_error_message([&] { reference_floor(*board, 3); }), "eval.num"));
}

}  // namespace
}  // namespace onestep
