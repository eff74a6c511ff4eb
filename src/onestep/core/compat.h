// The one place where LibTorch versions differ (Debian's 1.13 CPU build and CUDA 2.x builds):
// forward-mode AD levels and dual tensors, and the version string printed by `onestep info`.
#pragma once

#include <torch/csrc/autograd/forward_grad.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cstdint>
#include <string>
#include <utility>

namespace onestep::compat {

inline std::string torch_version() { return TORCH_VERSION; }

// RAII scope of one forward-mode AD level (Python's `torch.autograd.forward_ad.dual_level`).
// Both 1.13 and 2.x expose the level registry as torch::autograd::ForwardADLevel.
class DualLevel {
 public:
  DualLevel() : level_(torch::autograd::ForwardADLevel::get_next_idx()) {}
  ~DualLevel() { torch::autograd::ForwardADLevel::release_idx(level_); }
  DualLevel(const DualLevel&) = delete;
  DualLevel& operator=(const DualLevel&) = delete;
  int64_t level() const { return static_cast<int64_t>(level_); }

 private:
  uint64_t level_;
};

inline torch::Tensor make_dual(const torch::Tensor& primal, const torch::Tensor& tangent, const DualLevel& level) {
  return at::_make_dual(primal, tangent, level.level());
}

// Returns (primal, tangent); the tangent is undefined where none was propagated.
inline std::pair<torch::Tensor, torch::Tensor> unpack_dual(const torch::Tensor& dual, const DualLevel& level) {
  auto unpacked = at::_unpack_dual(dual, level.level());
  return {std::get<0>(unpacked), std::get<1>(unpacked)};
}

}  // namespace onestep::compat
