// Dataset construction through the registry, the default per-class batch and the held-out
// split keys (see dataset.h).
#include "onestep/data/dataset.h"

#include "onestep/core/config.h"
#include "onestep/core/error.h"

namespace onestep {

const OptionSchema<HeldOutSplitOptions>& HeldOutSplitOptions::schema() {
  static const auto schema =
      OptionSchema<HeldOutSplitOptions>("data")
          .add("test_fraction", &HeldOutSplitOptions::test_fraction, 1e-6, 1 - 1e-6,
               "share of a `points:` CSV or `folder:` held out for evaluation")
          .add("split_seed", &HeldOutSplitOptions::split_seed, 0, 9.0e15,
               "seed of the train/held-out split of a `points:` CSV or `folder:`");
  return schema;
}

std::unique_ptr<Dataset> make_dataset(const Config& config) {
  const std::string& name = config.get_string("data.name");
  return DatasetRegistry::instance().get("data", name)(config, name);
}

Batch Dataset::class_batch(const std::vector<int64_t>& classes, int64_t per_class, torch::Generator& gen) {
  if (num_classes() == 0) throw UserError(describe() + ": per-class batches need class-labelled data");
  std::vector<std::vector<torch::Tensor>> found(classes.size());
  std::vector<int64_t> missing(classes.size(), per_class);
  const int64_t draw = std::max<int64_t>(256, 2 * per_class * num_classes());
  for (int attempt = 0; attempt < 1000; ++attempt) {
    bool done = true;
    const Batch batch = train_batch(draw, gen);
    for (size_t k = 0; k < classes.size(); ++k) {
      if (missing[k] == 0) continue;
      const auto rows = batch.y.eq(classes[k]).nonzero().flatten();
      const int64_t take = std::min<int64_t>(missing[k], rows.size(0));
      found[k].push_back(batch.x.index_select(0, rows.narrow(0, 0, take)));
      missing[k] -= take;
      done = done && missing[k] == 0;
    }
    if (done) {
      std::vector<torch::Tensor> xs, ys;
      for (size_t k = 0; k < classes.size(); ++k) {
        xs.push_back(torch::cat(found[k]));
        ys.push_back(torch::full({per_class}, classes[k], torch::kLong));
      }
      return {torch::cat(xs), torch::cat(ys)};
    }
  }
  throw UserError(describe() + ": could not draw " + std::to_string(per_class) +
                  " training samples of each requested class (is a class empty?)");
}

}  // namespace onestep
