// Runtime setup shared by every command: intra-op threads (set, not assumed: Debian's
// LibTorch starts with one), and the device from `train.device`.
#pragma once

#include <torch/torch.h>

#include <string>

namespace onestep {

// Sets LibTorch's intra-op threads; 0 means all cores. Returns the number in use.
int set_threads(int64_t requested);

// "cpu", "cuda" (UserError when no CUDA device is present) or "auto".
torch::Device resolve_device(const std::string& name);

}  // namespace onestep
