// NumPy .npy files (format version 1.0): float32 arrays in C order, readable by numpy.load.
#pragma once

#include <torch/torch.h>

#include <string>

namespace onestep {

// Writes `tensor` (converted to contiguous float32 on the CPU) atomically.
void write_npy(const std::string& path, const torch::Tensor& tensor);

// Reads a little-endian float32 or float64 .npy file in C order into a float32 tensor.
// Throws UserError naming the file for anything else.
torch::Tensor read_npy(const std::string& path);

}  // namespace onestep
