// The one place where LibTorch versions differ (Debian's 1.13 CPU build and CUDA 2.x builds):
// forward-mode AD levels and dual tensors, fused attention, autocast (mixed precision), the version string
// printed by `onestep info`, and the construction of c10d's process groups (Gloo, NCCL).
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/forward_grad.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cstdint>
#include <stdexcept>
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

// TF32 tensor-core arithmetic for float32 matrix products and convolutions on CUDA (no effect
// on the CPU).
inline void allow_tf32(bool allowed) {
  at::globalContext().setFloat32MatmulPrecision(allowed ? "high" : "highest");
  at::globalContext().setAllowTF32CuDNN(allowed);
}

// Fused scaled dot-product attention, softmax(q k^T / sqrt(d) + bias) v in one operation
// (LibTorch 2.x: flash and memory-efficient kernels where they apply, on CUDA and the CPU).
// LibTorch 1.13 has none: kFusedAttention is false there and fused_attention must not be called.
#if TORCH_VERSION_MAJOR >= 2
constexpr bool kFusedAttention = true;
inline torch::Tensor fused_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                     const torch::Tensor& bias) {
  return bias.defined() ? at::scaled_dot_product_attention(q, k, v, bias) : at::scaled_dot_product_attention(q, k, v);
}
#else
constexpr bool kFusedAttention = false;
inline torch::Tensor fused_attention(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                                     const torch::Tensor&) {
  throw std::logic_error("fused attention needs LibTorch 2.0 or later");
}
#endif

// RAII scope that turns autocast to `dtype` on or off for one device type (CPU or CUDA) and
// restores the previous state on exit. LibTorch 2.4 replaced the per-device setters of 1.13
// (set_cpu_enabled, set_autocast_gpu_dtype, ...) by setters taking the device type.
class AutocastScope {
 public:
  AutocastScope(c10::DeviceType device, bool enabled, at::ScalarType dtype = at::kBFloat16)
      : device_(device), was_enabled_(is_enabled(device)), previous_dtype_(get_dtype(device)) {
    set(device_, enabled, enabled ? dtype : previous_dtype_);
  }
  ~AutocastScope() {
    if (is_enabled(device_) && !was_enabled_) at::autocast::clear_cache();
    set(device_, was_enabled_, previous_dtype_);
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  static bool is_enabled(c10::DeviceType device) { return at::autocast::is_autocast_enabled(device); }
  static at::ScalarType get_dtype(c10::DeviceType device) { return at::autocast::get_autocast_dtype(device); }
  static void set(c10::DeviceType device, bool enabled, at::ScalarType dtype) {
    at::autocast::set_autocast_enabled(device, enabled);
    at::autocast::set_autocast_dtype(device, dtype);
  }
#else
  static bool is_enabled(c10::DeviceType device) {
    return device == c10::DeviceType::CUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
  }
  static at::ScalarType get_dtype(c10::DeviceType device) {
    return device == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
  }
  static void set(c10::DeviceType device, bool enabled, at::ScalarType dtype) {
    if (device == c10::DeviceType::CUDA) {
      at::autocast::set_enabled(enabled);
      at::autocast::set_autocast_gpu_dtype(dtype);
    } else {
      at::autocast::set_cpu_enabled(enabled);
      at::autocast::set_autocast_cpu_dtype(dtype);
    }
  }
#endif
  c10::DeviceType device_;
  bool was_enabled_;
  at::ScalarType previous_dtype_;
};

}  // namespace onestep::compat

// c10d (torch's distributed engine), only for the translation units that define
// ONESTEP_COMPAT_C10D before including this header. PyTorch 2.x guards its Gloo header with
// USE_C10D_GLOO (1.13 does not) and NCCL's with USE_C10D_NCCL; the build defines
// ONESTEP_WITH_NCCL where LibTorch has CUDA and the NCCL process group. Gloo needs gloo's own
// headers (Debian: libgloo-dev); without them only NCCL is available.
#ifdef ONESTEP_COMPAT_C10D
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#else
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#endif
#if __has_include(<gloo/algorithm.h>)
#define ONESTEP_WITH_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef ONESTEP_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <memory>

namespace onestep::compat {

// The base class of the Gloo and NCCL process groups: c10d::ProcessGroup in 1.13,
// c10d::Backend in 2.x; both declare the same collective calls.
#if TORCH_VERSION_MAJOR >= 2
using ProcessGroupBase = c10d::Backend;
#else
using ProcessGroupBase = c10d::ProcessGroup;
#endif

// Gloo binds to the interface named by GLOO_SOCKET_IFNAME (as in PyTorch), else to the address
// of this machine's host name, falling back to loopback.
#ifdef ONESTEP_WITH_GLOO
inline c10::intrusive_ptr<c10d::ProcessGroupGloo> make_gloo_group(const c10::intrusive_ptr<c10d::Store>& store,
                                                                  int rank, int size,
                                                                  std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
  options->devices.push_back(interface != nullptr && *interface != '\0'
                                 ? c10d::ProcessGroupGloo::createDeviceForInterface(interface)
                                 : c10d::ProcessGroupGloo::createDefaultDevice());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
}
#endif

#ifdef ONESTEP_WITH_NCCL
inline c10::intrusive_ptr<c10d::ProcessGroupNCCL> make_nccl_group(const c10::intrusive_ptr<c10d::Store>& store,
                                                                  int rank, int size,
                                                                  std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
}
#endif

}  // namespace onestep::compat
#endif  // ONESTEP_COMPAT_C10D
