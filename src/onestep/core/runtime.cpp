// Thread count and device selection (see runtime.h).
#include "onestep/core/runtime.h"

#include <thread>

#include "onestep/core/error.h"

namespace onestep {

int set_threads(int64_t requested) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(requested > 0 ? static_cast<int>(requested) : cores);
  return at::get_num_threads();
}

torch::Device resolve_device(const std::string& name) {
  if (name == "cpu") return torch::kCPU;
  if (name == "cuda") {
    if (!torch::cuda::is_available())
      throw UserError("config: key 'train.device' = 'cuda': this LibTorch build sees no CUDA device; use cpu or auto");
    return torch::kCUDA;
  }
  return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
}

}  // namespace onestep
