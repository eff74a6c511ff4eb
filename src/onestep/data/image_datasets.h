// Image datasets: Fashion-MNIST from its four IDX files, and a folder of PNG/JPEG images
// (class-conditional when the images sit in class sub-folders). Images are held as uint8 and
// converted per batch to float32 in [-1, 1], shape C x H x W.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "onestep/data/dataset.h"

namespace onestep {

// Fashion-MNIST from `dir` (e.g. /usr/share/datasets/fashion-mnist, Debian package
// dataset-fashion-mnist): train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
// t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz, or the same names without ".gz".
// train_batch draws training images uniformly with replacement and, with `hflip`, mirrors
// each left-right with probability 1/2; heldout(n) is the first min(n, 10000) test images,
// never flipped. Samples are 1 x 28 x 28 with labels 0..9. Throws UserError naming the folder
// or file when a file is missing or malformed, or image and label counts differ.
std::unique_ptr<Dataset> make_fashion_mnist_dataset(const std::string& dir, bool hflip);

// PNG and JPEG files (by extension, any case) in `dir`. If sub-folders of `dir` hold images
// (searched recursively, hidden entries skipped), each such sub-folder is a class, labelled in
// name order, and images directly in `dir` are an error; otherwise the images directly in
// `dir` form an unconditional dataset. Every image is loaded at construction, alpha
// composited over white, its shorter side resized to `size` (area averaging when shrinking,
// bilinear when enlarging) and centre-cropped to `size` x `size`. Samples have 1 channel if
// all images are grey, else 3 (grey images replicated). A fraction `test_fraction` (0 < f < 1,
// at least one image on each side) is held out, chosen by a shuffle seeded with `split_seed`;
// train_batch and heldout behave as for Fashion-MNIST. Throws UserError for a missing folder,
// no images, a corrupt image (naming it), a bad size or an impossible split.
std::unique_ptr<Dataset> make_image_folder_dataset(const std::string& dir, int64_t size, bool hflip,
                                                   double test_fraction, uint64_t split_seed);

}  // namespace onestep
