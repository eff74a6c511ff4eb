// Training of the drifting feature encoder (`onestep encoder train`): the encoder and decoder of
// eval/feature_encoder.h as a masked denoising autoencoder on the training split of any image
// dataset (data.* keys; default Fashion-MNIST), seeded. Kept out of eval/ so that evaluation
// only measures.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace onestep {

// Options of `onestep encoder train`; the defaults reproduce encoders/fashion-mnist.safetensors.
struct EncoderTrainOptions {
  std::string out;
  std::vector<std::string> data;  // data.* overrides, e.g. data.name=folder:photos (default: fashion-mnist)
  int64_t steps = 3000;
  int64_t batch_size = 128;
  double lr = 1e-3;
  uint64_t seed = 0;
  int threads = 1;  // CPU threads (set_threads); 0 = all cores
};

// The command line that reproduces a training run, as recorded in the weights' metadata.
std::string encoder_train_command(const EncoderTrainOptions& options);

// Trains a FeatureEncoder: each training image has half of its 4x4 patches masked (set to 0,
// the middle of [-1, 1]) and Gaussian noise of std 0.1 added; the decoder reconstructs the clean
// image (mean squared error). AdamW with a linear warm-up over the first 5% of steps and cosine
// decay; all randomness from `seed`. Prints progress with the loss, writes the weights to `out`
// (see save_feature_encoder) and returns the same masked reconstruction error on 1,000
// held-out images. Throws UserError for bad options or data (not images, sides not multiples
// of 4, a key outside data.*).
double train_feature_encoder(const EncoderTrainOptions& options);

}  // namespace onestep
