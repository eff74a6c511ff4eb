// The drifting feature encoder and its weights file (see feature_encoder.h).
#include "onestep/eval/feature_encoder.h"

#include <cstdio>

#include "onestep/core/safetensors.h"

namespace onestep {
namespace {

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t stride = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1));
}

torch::nn::Upsample upsample() {
  return torch::nn::Upsample(
      torch::nn::UpsampleOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest));
}

}  // namespace

FeatureEncoderImpl::FeatureEncoderImpl(int64_t channels) {
  const auto& w = kWidths;
  stages_[0] = register_module("stage0", torch::nn::Sequential(conv(channels, w[0]), torch::nn::SiLU(),
                                                                conv(w[0], w[0]), torch::nn::SiLU()));
  stages_[1] = register_module("stage1", torch::nn::Sequential(conv(w[0], w[1], 2), torch::nn::SiLU(),
                                                                conv(w[1], w[1]), torch::nn::SiLU()));
  stages_[2] = register_module("stage2", torch::nn::Sequential(conv(w[1], w[2], 2), torch::nn::SiLU(),
                                                                conv(w[2], w[2]), torch::nn::SiLU()));
  decoder_ = register_module("decoder", torch::nn::Sequential(upsample(), conv(w[2], w[1]), torch::nn::SiLU(),
                                                               upsample(), conv(w[1], w[0]), torch::nn::SiLU(),
                                                               conv(w[0], channels)));
}

std::vector<torch::Tensor> FeatureEncoderImpl::feature_maps(const torch::Tensor& x) {
  std::vector<torch::Tensor> maps;
  torch::Tensor a = x;
  for (auto& stage : stages_) maps.push_back(a = stage->forward(a));
  return maps;
}

torch::Tensor FeatureEncoderImpl::reconstruct(const torch::Tensor& x) {
  return decoder_->forward(feature_maps(x).back());
}

void save_feature_encoder(FeatureEncoder& encoder, const std::string& path, const std::string& dataset,
                          int64_t channels, double test_mse, const std::string& command, uint64_t seed) {
  SafetensorsFile file;
  for (const auto& item : encoder->named_parameters()) file.tensors[item.key()] = item.value().detach().cpu().contiguous();
  char mse[32];
  std::snprintf(mse, sizeof(mse), "%.6f", test_mse);
  file.metadata = {{"format_version", "1"},  {"kind", "onestep-feature-encoder"},
                   {"dataset", dataset},      {"channels", std::to_string(channels)},
                   {"test_mse", mse},         {"command", command},
                   {"seed", std::to_string(seed)}};
  write_safetensors(path, file);
}

}  // namespace onestep
