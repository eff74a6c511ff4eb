// The image evaluator (see evaluator.h): the CNN, its seeded training on Fashion-MNIST with
// flips and shifts, and loading with full validation of the safetensors file.
#include "onestep/eval/evaluator.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include "onestep/core/error.h"
#include "onestep/core/progress.h"
#include "onestep/core/runtime.h"
#include "onestep/core/safetensors.h"
#include "onestep/core/sha256.h"
#include "onestep/data/image_datasets.h"
#include "onestep/train/optimizer.h"

namespace onestep {
namespace {

namespace nn = torch::nn;

constexpr const char* kKind = "onestep-evaluator";
constexpr const char* kFormatVersion = "1";
constexpr const char* kDataset = "fashion-mnist";
constexpr int64_t kTrainImages = 60000;
constexpr int64_t kTestImages = 10000;
constexpr int64_t kMaxShift = 2;
constexpr int64_t kInferenceBatch = 500;
constexpr double kDropout = 0.3;
constexpr double kWeightDecay = 0.01;

// 3x3 convolution (no bias: BatchNorm follows), BatchNorm and ReLU appended to `body`.
void add_conv_block(nn::Sequential& body, int64_t in, int64_t out) {
  body->push_back(nn::Conv2d(nn::Conv2dOptions(in, out, 3).padding(1).bias(false)));
  body->push_back(nn::BatchNorm2d(out));
  body->push_back(nn::ReLU());
}

// All parameters and buffers by name, the tensors a weights file holds.
std::map<std::string, torch::Tensor> named_state(EvaluatorNet& net) {
  std::map<std::string, torch::Tensor> state;
  for (const auto& item : net->named_parameters()) state[item.key()] = item.value();
  for (const auto& item : net->named_buffers()) state[item.key()] = item.value();
  return state;
}

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

// Runs `fn` on `images` in batches without gradients and concatenates the results.
template <typename Fn>
torch::Tensor in_batches(const torch::Tensor& images, Fn fn) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> parts;
  for (int64_t start = 0; start < images.size(0); start += kInferenceBatch) {
    parts.push_back(fn(images.narrow(0, start, std::min(kInferenceBatch, images.size(0) - start))));
  }
  return torch::cat(parts);
}

// Share of `images` whose argmax logit under `net` (in eval mode) is the label.
double test_accuracy(EvaluatorNet& net, const torch::Tensor& images, const torch::Tensor& labels) {
  net->eval();
  const auto predicted = in_batches(images, [&](const torch::Tensor& x) { return net->forward(x); }).argmax(1);
  return predicted.eq(labels).to(torch::kDouble).mean().item<double>();
}

std::string format_accuracy(double accuracy) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.4f", accuracy);
  return text;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(path + ": cannot open evaluator weights");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw UserError(path + ": read error");
  return bytes;
}

}  // namespace

EvaluatorNetImpl::EvaluatorNetImpl() {
  body_ = nn::Sequential();
  add_conv_block(body_, 1, 32);
  add_conv_block(body_, 32, 32);
  body_->push_back(nn::MaxPool2d(2));
  add_conv_block(body_, 32, 64);
  add_conv_block(body_, 64, 64);
  body_->push_back(nn::MaxPool2d(2));
  body_->push_back(nn::Flatten());
  register_module("body", body_);
  penultimate_ = register_module("penultimate", nn::Linear(64 * 7 * 7, kFeatureDim));
  dropout_ = register_module("dropout", nn::Dropout(kDropout));
  head_ = register_module("head", nn::Linear(kFeatureDim, kClasses));
}

torch::Tensor EvaluatorNetImpl::features(const torch::Tensor& x) {
  return torch::relu(penultimate_->forward(body_->forward(x)));
}

torch::Tensor EvaluatorNetImpl::forward(const torch::Tensor& x) {
  return head_->forward(dropout_->forward(features(x)));
}

void save_evaluator(EvaluatorNet& net, const std::string& path, double test_accuracy,
                    const std::string& command, uint64_t seed) {
  SafetensorsFile file;
  for (const auto& [name, tensor] : named_state(net)) file.tensors[name] = tensor.detach().cpu().contiguous();
  file.metadata = {{"format_version", kFormatVersion},
                   {"kind", kKind},
                   {"dataset", kDataset},
                   {"test_accuracy", format_accuracy(test_accuracy)},
                   {"command", command},
                   {"seed", std::to_string(seed)}};
  write_safetensors(path, file);
}

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

  auto dataset = make_fashion_mnist_dataset(options.data_dir, /*hflip=*/true);
  const Batch test = dataset->heldout(kTestImages);
  torch::manual_seed(options.seed);  // initial weights and dropout
  auto gen = at::detail::createCPUGenerator(options.seed);
  EvaluatorNet net;

  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : net->named_parameters()) named.emplace_back(item.key(), item.value());
  AdamOptions adam;
  adam.lr = options.lr;
  adam.weight_decay = kWeightDecay;
  adam.decoupled = true;
  Adam optimizer(std::move(named), adam);
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

Evaluator::Evaluator(EvaluatorNet net, std::string path, std::string sha256, std::string dataset)
    : net_(std::move(net)), path_(std::move(path)), sha256_(std::move(sha256)), dataset_(std::move(dataset)) {}

Evaluator Evaluator::load(const std::string& path) {
  const std::string sha = sha256_hex(read_bytes(path));
  const SafetensorsFile file = read_safetensors(path);
  const auto meta = [&](const std::string& key) {
    const auto found = file.metadata.find(key);
    return found == file.metadata.end() ? std::string() : found->second;
  };
  if (meta("kind") != kKind) {
    throw UserError(path + ": not an onestep evaluator (metadata kind '" + meta("kind") + "', expected '" +
                    kKind + "')");
  }
  if (meta("format_version") != kFormatVersion) {
    throw UserError(path + ": unsupported evaluator format_version '" + meta("format_version") +
                    "' (expected '" + kFormatVersion + "')");
  }
  EvaluatorNet net;
  const auto state = named_state(net);
  {
    torch::NoGradGuard no_grad;
    for (const auto& [name, target] : state) {
      const auto found = file.tensors.find(name);
      if (found == file.tensors.end()) throw UserError(path + ": missing evaluator tensor '" + name + "'");
      const torch::Tensor& source = found->second;
      if (source.sizes() != target.sizes() || source.scalar_type() != target.scalar_type()) {
        std::ostringstream message;
        message << path << ": evaluator tensor '" << name << "' has shape " << source.sizes() << " and dtype "
                << source.scalar_type() << ", expected " << target.sizes() << " and " << target.scalar_type();
        throw UserError(message.str());
      }
      target.copy_(source);
    }
  }
  for (const auto& item : file.tensors) {
    if (state.count(item.first) == 0) throw UserError(path + ": unexpected tensor '" + item.first + "'");
  }
  net->eval();
  return Evaluator(std::move(net), path, sha, meta("dataset"));
}

namespace {

void check_images(const torch::Tensor& images, const std::string& path) {
  if (images.dim() != 4 || images.size(1) != 1 || images.size(2) != 28 || images.size(3) != 28) {
    std::ostringstream message;
    message << "evaluator " << path << " takes N x 1 x 28 x 28 images, got " << images.sizes();
    throw UserError(message.str());
  }
}

}  // namespace

torch::Tensor Evaluator::features(const torch::Tensor& images) {
  check_images(images, path_);
  return in_batches(images.to(torch::kCPU, torch::kFloat),
                    [&](const torch::Tensor& x) { return net_->features(x); });
}

torch::Tensor Evaluator::logits(const torch::Tensor& images) {
  check_images(images, path_);
  return in_batches(images.to(torch::kCPU, torch::kFloat), [&](const torch::Tensor& x) { return net_->forward(x); });
}

}  // namespace onestep
