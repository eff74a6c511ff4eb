// CSV point-cloud dataset: strict parsing with file:line error messages, a seeded train/held-out
// split (or a separate test file), and uniform resampling of the training rows.
#include "onestep/data/points_csv.h"

#include "onestep/core/config.h"

#include "onestep/core/error.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

namespace onestep {
namespace {

std::string trim(const std::string& text) {
  const char* space = " \t\r\n";
  const auto begin = text.find_first_not_of(space);
  if (begin == std::string::npos) return "";
  return text.substr(begin, text.find_last_not_of(space) - begin + 1);
}

std::vector<std::string> split_fields(const std::string& line) {
  std::vector<std::string> fields;
  std::istringstream stream(line);
  std::string field;
  while (std::getline(stream, field, ',')) fields.push_back(trim(field));
  if (!line.empty() && line.back() == ',') fields.emplace_back();  // trailing empty field
  return fields;
}

// True if the whole of `field` is a number (strtod syntax, which includes "nan" and "inf").
bool parse_number(const std::string& field, double& value) {
  if (field.empty()) return false;
  char* end = nullptr;
  value = std::strtod(field.c_str(), &end);
  return end == field.c_str() + field.size();
}

// Reads the points of `path` as an N x D float32 tensor. `expected_dim` > 0 requires that
// dimension, which comes from the file `dim_source` (named in the error message).
torch::Tensor read_points(const std::string& path, int64_t expected_dim,
                          const std::string& dim_source) {
  std::ifstream in(path);
  if (!in) throw UserError(path + ": cannot open file");
  std::vector<float> values;
  int64_t dim = expected_dim;
  int64_t rows = 0;
  bool header_allowed = true;
  std::string line;
  for (int64_t line_number = 1; std::getline(in, line); ++line_number) {
    const std::string content = trim(line);
    if (content.empty() || content[0] == '#') continue;
    const std::string where = path + ":" + std::to_string(line_number) + ": ";
    const std::vector<std::string> fields = split_fields(content);
    std::vector<double> parsed(fields.size());
    bool any_number = false;
    for (size_t i = 0; i < fields.size(); ++i) any_number |= parse_number(fields[i], parsed[i]);
    const bool is_header = header_allowed && !any_number;
    header_allowed = false;
    if (is_header) continue;
    const auto found = static_cast<int64_t>(fields.size());
    if (dim == 0) dim = found;
    if (found != dim) {
      std::string expected = std::to_string(dim) + " values";
      if (rows == 0 && !dim_source.empty()) expected += " (the dimension of " + dim_source + ")";
      throw UserError(where + "expected " + expected + ", found " + std::to_string(found));
    }
    for (size_t i = 0; i < fields.size(); ++i) {
      double value = 0;
      if (!parse_number(fields[i], value)) {
        throw UserError(where + "'" + fields[i] + "' is not a number");
      }
      if (!std::isfinite(static_cast<float>(value))) {
        throw UserError(where + "'" + fields[i] +
                        "' is not finite (NaN, Inf or beyond the float32 range)");
      }
      values.push_back(static_cast<float>(value));
    }
    ++rows;
  }
  if (in.bad()) throw UserError(path + ": cannot read file");
  if (rows == 0) throw UserError(path + ": no points (only blank lines, comments or a header)");
  return torch::from_blob(values.data(), {rows, dim}, torch::kFloat).clone();
}

class PointsDataset final : public Dataset {
 public:
  PointsDataset(torch::Tensor train, torch::Tensor test, std::string description)
      : train_(std::move(train)), test_(std::move(test)), description_(std::move(description)) {}

  std::vector<int64_t> sample_shape() const override { return {train_.size(1)}; }

  Batch train_batch(int64_t n, torch::Generator& gen) override {
    auto rows = torch::randint(0, train_.size(0), {n}, gen, torch::kLong);
    return {train_.index_select(0, rows), {}};
  }

  Batch heldout(int64_t n) override {
    const int64_t count = std::min(std::max<int64_t>(n, 0), test_.size(0));
    return {test_.narrow(0, 0, count).clone(), {}};
  }

  std::string describe() const override { return description_; }

 private:
  torch::Tensor train_;
  torch::Tensor test_;
  std::string description_;
};

}  // namespace

std::unique_ptr<Dataset> make_points_dataset(const std::string& path, const std::string& test_path,
                                             double test_fraction, uint64_t split_seed) {
  torch::Tensor points = read_points(path, 0, "");
  const int64_t dim = points.size(1);
  std::ostringstream description;
  description << "points from " << path << " (" << dim << "-D; ";
  if (!test_path.empty()) {
    torch::Tensor test = read_points(test_path, dim, path);
    description << points.size(0) << " training points; " << test.size(0)
                << " held-out points from " << test_path << ")";
    return std::make_unique<PointsDataset>(points, test, description.str());
  }
  if (!(test_fraction > 0 && test_fraction < 1)) {
    std::ostringstream msg;
    msg << path << ": test_fraction must be in (0, 1), got " << test_fraction;
    throw UserError(msg.str());
  }
  const int64_t total = points.size(0);
  const auto num_test = static_cast<int64_t>(std::llround(test_fraction * total));
  if (num_test < 1 || num_test > total - 1) {
    std::ostringstream msg;
    msg << path << ": " << total << " points cannot be split with test_fraction " << test_fraction
        << " (need at least one training and one held-out point)";
    throw UserError(msg.str());
  }
  auto split_gen = at::make_generator<at::CPUGeneratorImpl>(split_seed);
  auto order = torch::randperm(total, split_gen, torch::kLong);
  torch::Tensor test = points.index_select(0, order.narrow(0, 0, num_test));
  torch::Tensor train = points.index_select(0, order.narrow(0, num_test, total - num_test));
  description << train.size(0) << " training, " << num_test << " held-out points, split seed "
              << split_seed << ")";
  return std::make_unique<PointsDataset>(train, test, description.str());
}

namespace {

struct PointsOptions {
  std::string test_path;
  HeldOutSplitOptions split;
  static const OptionSchema<PointsOptions>& schema() {
    static const auto schema =
        OptionSchema<PointsOptions>("data")
            .add("test_path", &PointsOptions::test_path, {},
                 "held-out CSV for `points:` data (empty: split off data.test_fraction)")
            .include(&PointsOptions::split, HeldOutSplitOptions::schema());
    return schema;
  }
};

[[maybe_unused]] const bool registered = DatasetRegistry::instance().add(
    {"data", "points:", "points:PATH.csv", "points of any dimension from a CSV file, one per line",
     PointsOptions::schema().keys()},
    [](const Config& config, const std::string& name) {
      const auto options = PointsOptions::schema().read(config);
      return make_points_dataset(name.substr(std::string("points:").size()), options.test_path,
                                 options.split.test_fraction, static_cast<uint64_t>(options.split.split_seed));
    });

}  // namespace

}  // namespace onestep
