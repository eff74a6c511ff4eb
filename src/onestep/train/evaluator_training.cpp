// Training of the image evaluator (see evaluator_training.h).
#include "onestep/train/evaluator_training.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>
#include <sstream>
#include <vector>

#include "onestep/core/config.h"
#include "onestep/core/error.h"
#include "onestep/core/progress.h"
#include "onestep/core/runtime.h"
#include "onestep/data/image_datasets.h"
#include "onestep/eval/evaluator.h"
#include "onestep/train/optimizer.h"

namespace onestep {
namespace {

constexpr int64_t kTrainImages = 60000;
constexpr int64_t kTestImages = 10000;
constexpr int64_t kMaxShift = 2;
constexpr int64_t kInferenceBatch = 500;
constexpr double kWeightDecay = 0.01;

// Each image shifted by its own random offset in [-kMaxShift, kMaxShift] along both axes,
// uncovered pixels filled with the background value -1.
torch::Tensor random_shift(const torch::Tensor& x, torch::Generator& gen) {
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  const auto padded = torch::constant_pad_nd(x, {kMaxShift, kMaxShift, kMaxShift, kMaxShift}, -1.0);
  const auto offsets = torch::randint(0, 2 * kMaxShift + 1, {n, 2}, gen, torch::kLong);
  const auto* offset = offsets.data_ptr<int64_t>();
  std::vector<torch::Tensor> shifted;
  shifted.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    shifted.push_back(padded[i].narrow(1, offset[2 * i], h).narrow(2, offset[2 * i + 1], w));
  }
  return torch::stack(shifted);
}

// Share of `images` whose argmax logit under `net` (in eval mode) is the label.
double test_accuracy(EvaluatorNet& net, const torch::Tensor& images, const torch::Tensor& labels) {
  net->eval();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> predicted;
  for (int64_t start = 0; start < images.size(0); start += kInferenceBatch)
    predicted.push_back(net->forward(images.narrow(0, start, std::min(kInferenceBatch, images.size(0) - start))).argmax(1));
  return torch::cat(predicted).eq(labels).to(torch::kDouble).mean().item<double>();
}

}  // namespace

std::string evaluator_train_command(const EvaluatorTrainOptions& options) {
  std::ostringstream command;
  command << "onestep evaluator train --data-dir " << options.data_dir << " --out " << options.out
          << " --epochs " << options.epochs << " --batch-size " << options.batch_size << " --lr "
          << options.lr << " --seed " << options.seed << " --threads " << options.threads;
  return command.str();
}

double train_evaluator(const EvaluatorTrainOptions& options) {
  if (options.out.empty()) throw UserError("evaluator train: --out is required");
  if (options.epochs < 1) throw UserError("evaluator train: --epochs must be at least 1");
  if (options.batch_size < 2) throw UserError("evaluator train: --batch-size must be at least 2");
  if (!(options.lr > 0)) throw UserError("evaluator train: --lr must be positive");
  if (options.threads < 0) throw UserError("evaluator train: --threads must be 0 (all cores) or more");
  set_threads(options.threads);
  set_openmp_wait(Config{}.get_string("train.cpu_wait"));  // the default

  auto dataset = make_fashion_mnist_dataset(options.data_dir, /*hflip=*/true);
  const Batch test = dataset->heldout(kTestImages);
  torch::manual_seed(options.seed);  // initial weights and dropout
  auto gen = at::detail::createCPUGenerator(options.seed);
  EvaluatorNet net;

  Adam optimizer = adamw(*net, options.lr, kWeightDecay);
  const int64_t steps_per_epoch = std::max<int64_t>(1, kTrainImages / options.batch_size);
  const int64_t total_steps = options.epochs * steps_per_epoch;
  const LearningRateSchedule schedule{options.lr, steps_per_epoch / 2, true, total_steps};

  std::printf("training the evaluator: %lld epochs of %lld batches of %lld on %s\n",
              static_cast<long long>(options.epochs), static_cast<long long>(steps_per_epoch),
              static_cast<long long>(options.batch_size), dataset->describe().c_str());
  Progress progress(0, options.epochs, 1);
  double accuracy = 0.0;
  int64_t step = 0;
  for (int64_t epoch = 0; epoch < options.epochs; ++epoch) {
    net->train();
    double loss_sum = 0.0;
    for (int64_t i = 0; i < steps_per_epoch; ++i, ++step) {
      const Batch batch = dataset->train_batch(options.batch_size, gen);
      const auto loss = torch::cross_entropy_loss(net->forward(random_shift(batch.x, gen)), batch.y);
      optimizer.zero_grad();
      loss.backward();
      optimizer.step(schedule.at(step));
      loss_sum += loss.item<double>();
    }
    accuracy = test_accuracy(net, test.x, test.y);
    char detail[96];
    std::snprintf(detail, sizeof(detail), "loss %.4f  test accuracy %.4f",
                  loss_sum / static_cast<double>(steps_per_epoch), accuracy);
    progress.update(epoch + 1, detail);
  }
  progress.finish();
  save_evaluator(net, options.out, accuracy, evaluator_train_command(options), options.seed);
  return accuracy;
}

}  // namespace onestep
