// Training of the drifting feature encoder (see encoder_training.h).
#include "onestep/train/encoder_training.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>
#include <sstream>

#include "onestep/core/config.h"
#include "onestep/core/error.h"
#include "onestep/core/progress.h"
#include "onestep/core/runtime.h"
#include "onestep/data/dataset.h"
#include "onestep/eval/feature_encoder.h"
#include "onestep/train/optimizer.h"

namespace onestep {
namespace {

constexpr int64_t kPatch = 4;
constexpr double kMaskRatio = 0.5;
constexpr double kNoiseStd = 0.1;
constexpr double kWeightDecay = 0.01;
constexpr int64_t kHeldOut = 1000;
constexpr uint64_t kHeldOutSeed = 12345;

// The corrupted input: each kPatch x kPatch patch zeroed with probability kMaskRatio, then
// Gaussian noise of std kNoiseStd.
torch::Tensor corrupt(const torch::Tensor& x, torch::Generator& gen) {
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  const auto keep = (torch::rand({n, 1, h / kPatch, w / kPatch}, gen) >= kMaskRatio).to(x.dtype());
  const auto mask = keep.repeat_interleave(kPatch, 2).repeat_interleave(kPatch, 3);
  return x * mask + kNoiseStd * torch::randn(x.sizes(), gen);
}

double reconstruction_mse(FeatureEncoder& encoder, const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(kHeldOutSeed);
  return (encoder->reconstruct(corrupt(images, gen)) - images).square().mean().item<double>();
}

}  // namespace

std::string encoder_train_command(const EncoderTrainOptions& options) {
  std::ostringstream command;
  command << "onestep encoder train --out " << options.out << " --steps " << options.steps << " --batch-size "
          << options.batch_size << " --lr " << options.lr << " --seed " << options.seed << " --threads "
          << options.threads;
  for (const auto& assignment : options.data) command << " " << assignment;
  return command.str();
}

double train_feature_encoder(const EncoderTrainOptions& options) {
  if (options.out.empty()) throw UserError("encoder train: --out is required");
  if (options.steps < 1) throw UserError("encoder train: --steps must be at least 1");
  if (options.batch_size < 1) throw UserError("encoder train: --batch-size must be at least 1");
  if (!(options.lr > 0)) throw UserError("encoder train: --lr must be positive");
  if (options.threads < 0) throw UserError("encoder train: --threads must be 0 (all cores) or more");
  set_threads(options.threads);
  set_openmp_wait(Config{}.get_string("train.cpu_wait"));  // the default
  Config config;
  config.apply_override("data.name=fashion-mnist");
  for (const auto& assignment : options.data) {
    if (assignment.rfind("data.", 0) != 0)
      throw UserError("encoder train: '" + assignment + "': only data.* keys apply (e.g. data.name=folder:photos)");
    config.apply_override(assignment);
  }
  auto dataset = make_dataset(config);
  const auto shape = dataset->sample_shape();
  if (shape.size() != 3 || shape[1] % kPatch != 0 || shape[2] % kPatch != 0)
    throw UserError("encoder train: " + dataset->describe() + " has samples of shape " + c10::str(shape) +
                    "; the encoder needs images (C x H x W) with H and W multiples of " + std::to_string(kPatch));
  const torch::Tensor heldout = dataset->heldout(kHeldOut).x;

  torch::manual_seed(options.seed);  // initial weights
  auto gen = at::detail::createCPUGenerator(options.seed);
  FeatureEncoder encoder(shape[0]);
  Adam optimizer = adamw(*encoder, options.lr, kWeightDecay);
  const LearningRateSchedule schedule{options.lr, options.steps / 20, true, options.steps};

  std::printf("training the feature encoder: %lld steps of %lld images of %s\n", static_cast<long long>(options.steps),
              static_cast<long long>(options.batch_size), dataset->describe().c_str());
  const int64_t report_every = std::max<int64_t>(1, options.steps / 20);
  Progress progress(0, options.steps, report_every);
  double loss_sum = 0.0;
  int64_t window = 0;
  for (int64_t step = 0; step < options.steps; ++step) {
    const torch::Tensor x = dataset->train_batch(options.batch_size, gen).x;
    const auto loss = (encoder->reconstruct(corrupt(x, gen)) - x).square().mean();
    optimizer.zero_grad();
    loss.backward();
    optimizer.step(schedule.at(step));
    loss_sum += loss.item<double>();
    ++window;
    if ((step + 1) % report_every == 0 || step + 1 == options.steps) {
      char detail[64];
      std::snprintf(detail, sizeof(detail), "loss %.5f", loss_sum / static_cast<double>(window));
      progress.update(step + 1, detail);
      loss_sum = 0.0;
      window = 0;
    }
  }
  progress.finish();
  const double mse = reconstruction_mse(encoder, heldout);
  std::printf("held-out masked reconstruction error (MSE): %.5f\n", mse);
  save_feature_encoder(encoder, options.out, config.get_string("data.name"), shape[0], mse,
                       encoder_train_command(options), options.seed);
  std::printf("wrote %s\n", options.out.c_str());
  return mse;
}

}  // namespace onestep
