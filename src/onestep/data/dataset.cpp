// Dataset registry: maps `data.name` to a data source (see dataset.h).
#include "onestep/data/dataset.h"

#include <algorithm>

#include "onestep/core/config.h"
#include "onestep/core/error.h"
#include "onestep/data/image_datasets.h"
#include "onestep/data/points_csv.h"
#include "onestep/data/toy2d.h"

namespace onestep {

namespace {
constexpr const char* kPointsPrefix = "points:";
constexpr const char* kFolderPrefix = "folder:";
constexpr const char* kFashionMnist = "fashion-mnist";
}

std::vector<std::string> dataset_names() {
  std::vector<std::string> names = toy_dataset_names();
  names.push_back(std::string(kPointsPrefix) + "PATH.csv");
  names.push_back(kFashionMnist);
  names.push_back(std::string(kFolderPrefix) + "DIR");
  return names;
}

std::unique_ptr<Dataset> make_dataset(const Config& config) {
  const std::string& name = config.get_string("data.name");
  const auto& toys = toy_dataset_names();
  if (std::find(toys.begin(), toys.end(), name) != toys.end())
    return make_toy_dataset(name, config.get_float("data.sigma"), config.get_int("data.dim"));
  if (name.rfind(kPointsPrefix, 0) == 0)
    return make_points_dataset(name.substr(std::string(kPointsPrefix).size()), config.get_string("data.test_path"),
                               config.get_float("data.test_fraction"),
                               static_cast<uint64_t>(config.get_int("data.split_seed")));
  if (name == kFashionMnist) return make_fashion_mnist_dataset(config.get_string("data.path"), config.get_bool("data.hflip"));
  if (name.rfind(kFolderPrefix, 0) == 0)
    return make_image_folder_dataset(name.substr(std::string(kFolderPrefix).size()), config.get_int("data.size"),
                                     config.get_bool("data.hflip"), config.get_float("data.test_fraction"),
                                     static_cast<uint64_t>(config.get_int("data.split_seed")));
  std::string known;
  for (const auto& n : dataset_names()) known += (known.empty() ? "" : ", ") + n;
  throw UserError("config: key 'data.name' = '" + name + "': unknown dataset; known: " + known);
}

}  // namespace onestep
