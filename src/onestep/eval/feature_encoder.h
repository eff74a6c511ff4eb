// The self-supervised feature encoder of Drifting Models on images (spec §5 "Feature space"): a
// small convolutional encoder with three stages (full, half and quarter resolution) and a
// decoder, trained as a masked denoising autoencoder by `onestep encoder train`
// (train/encoder_training.h) and frozen while a generator trains. Drifting computes its field on
// the encoder's feature maps. It is deliberately not the evaluator classifier (eval/evaluator.h):
// a generator trained to match the evaluator's features would be optimising the FD and KID that
// measure it.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace onestep {

class FeatureEncoderImpl : public torch::nn::Module {
 public:
  // Channels of the three stages' feature maps.
  static constexpr int64_t kWidths[3] = {32, 64, 128};

  // For images of `channels` channels whose height and width are multiples of 4.
  explicit FeatureEncoderImpl(int64_t channels);
  // N x C x H x W images in [-1, 1] -> the stages' maps: N x 32 x H x W, N x 64 x H/2 x W/2,
  // N x 128 x H/4 x W/4 (SiLU activations).
  std::vector<torch::Tensor> feature_maps(const torch::Tensor& x);
  // The decoder's reconstruction of x from the last map (training only).
  torch::Tensor reconstruct(const torch::Tensor& x);

 private:
  torch::nn::Sequential stages_[3] = {nullptr, nullptr, nullptr};
  torch::nn::Sequential decoder_{nullptr};
};
TORCH_MODULE(FeatureEncoder);

// Writes the encoder's parameters atomically as safetensors with metadata kind
// "onestep-feature-encoder", format_version "1", the dataset, the image channels, the held-out
// reconstruction error, the reproducing command and the seed.
void save_feature_encoder(FeatureEncoder& encoder, const std::string& path, const std::string& dataset,
                          int64_t channels, double test_mse, const std::string& command, uint64_t seed);

}  // namespace onestep
