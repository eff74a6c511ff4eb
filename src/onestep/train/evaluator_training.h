// Training of the image evaluator (`onestep evaluator train`): the CNN of eval/evaluator.h on
// the Fashion-MNIST train split, seeded, with flips and shifts. Kept out of eval/ so that
// evaluation only measures.
#pragma once

#include <cstdint>
#include <string>

namespace onestep {

// Options of `onestep evaluator train`; the defaults reproduce evaluators/fashion-mnist.safetensors.
struct EvaluatorTrainOptions {
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  int64_t epochs = 12;
  int64_t batch_size = 128;
  double lr = 2e-3;
  uint64_t seed = 0;
  std::string out;
  int threads = 1;  // CPU threads (set_threads); 0 = all cores
};

// The command line that reproduces a training run, as recorded in the weights' metadata:
// "onestep evaluator train --data-dir D --out O --epochs E --batch-size B --lr L --seed S
// --threads T".
std::string evaluator_train_command(const EvaluatorTrainOptions& options);

// Trains an EvaluatorNet on the Fashion-MNIST train split: Adam with a linear warm-up and
// cosine decay, training batches drawn with replacement (an epoch is 60000 / batch_size
// batches), each image randomly mirrored and shifted by up to 2 pixels; all randomness from
// `seed`, so a run is deterministic for a given thread count. Prints one progress line per
// epoch with the loss and test accuracy, writes the weights to `out` (see save_evaluator) and
// returns the accuracy on the 10,000 test images. Throws UserError for bad options or data.
double train_evaluator(const EvaluatorTrainOptions& options);

}  // namespace onestep
