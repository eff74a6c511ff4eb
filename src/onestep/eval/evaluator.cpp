// The image evaluator (see evaluator.h): the CNN, saving, and loading with full validation of
// the safetensors file. Its training lives in train/evaluator_training.cpp.
#include "onestep/eval/evaluator.h"

#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include "onestep/core/error.h"
#include "onestep/core/safetensors.h"
#include "onestep/core/file_io.h"
#include "onestep/core/sha256.h"

namespace onestep {
namespace {

namespace nn = torch::nn;

constexpr const char* kKind = "onestep-evaluator";
constexpr const char* kFormatVersion = "1";
constexpr const char* kDataset = "fashion-mnist";
constexpr int64_t kInferenceBatch = 500;
constexpr double kDropout = 0.3;

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

std::string format_accuracy(double accuracy) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.4f", accuracy);
  return text;
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

Evaluator::Evaluator(EvaluatorNet net, std::string path, std::string sha256, std::string dataset)
    : net_(std::move(net)), path_(std::move(path)), sha256_(std::move(sha256)), dataset_(std::move(dataset)) {}

Evaluator Evaluator::load(const std::string& path) {
  const std::string sha = sha256_hex(read_file(path));
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
