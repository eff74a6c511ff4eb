// CUDA graph capture and replay, and their emulation for tests (see cuda_graph.h).
#include "onestep/train/cuda_graph.h"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <atomic>
#include <map>
#include <stdexcept>
#include <string>

#ifdef ONESTEP_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "onestep/core/error.h"

namespace onestep {
namespace {

std::atomic<int> emulation_scopes{0};

// Turns autocast's cache of cast weights off for a scope: a capture must not keep casts made
// before it or hand its own to work outside it.
class AutocastCacheOff {
 public:
  AutocastCacheOff() : was_(at::autocast::is_autocast_cache_enabled()) { at::autocast::set_autocast_cache_enabled(false); }
  ~AutocastCacheOff() { at::autocast::set_autocast_cache_enabled(was_); }
  AutocastCacheOff(const AutocastCacheOff&) = delete;
  AutocastCacheOff& operator=(const AutocastCacheOff&) = delete;

 private:
  bool was_;
};

}  // namespace

EmulatedCudaGraphs::EmulatedCudaGraphs() { ++emulation_scopes; }
EmulatedCudaGraphs::~EmulatedCudaGraphs() { --emulation_scopes; }
bool cuda_graphs_emulated() { return emulation_scopes > 0; }

#ifdef ONESTEP_CUDA

namespace {

// One side stream per device for the warm-up and the captures, so that whatever the libraries
// set up per stream in the warm-up (cuBLAS's workspace) serves the capture.
c10::cuda::CUDAStream side_stream() {
  static std::map<c10::DeviceIndex, c10::cuda::CUDAStream> streams;
  const auto device = c10::cuda::current_device();
  const auto found = streams.find(device);
  if (found != streams.end()) return found->second;
  return streams.emplace(device, c10::cuda::getStreamFromPool(false, device)).first->second;
}

}  // namespace

bool cuda_graphs_built() { return true; }

struct CapturedWork::Impl {
  at::cuda::CUDAGraph graph;

  void capture(const std::function<void()>& work) {
    torch::cuda::synchronize();
    {
      const AutocastCacheOff cache_off;
      const c10::cuda::CUDAStreamGuard side(side_stream());
      graph.capture_begin();
      try {
        work();
      } catch (const std::exception& error) {
        try {
          graph.capture_end();
        } catch (const std::exception&) {
        }
        throw UserError(std::string("train.cuda_graph = true: the training step cannot be captured as a CUDA graph (") +
                        error.what() + "); set train.cuda_graph = false");
      }
      graph.capture_end();
    }
    torch::cuda::synchronize();
  }
  void replay() { graph.replay(); }
};

void run_before_capture(const std::function<void()>& work) {
  if (cuda_graphs_emulated()) return work();
  torch::cuda::synchronize();
  {
    const c10::cuda::CUDAStreamGuard side(side_stream());
    work();
  }
  torch::cuda::synchronize();
}

#else

bool cuda_graphs_built() { return false; }

struct CapturedWork::Impl {
  [[noreturn]] void capture(const std::function<void()>&) {
    throw std::logic_error("CUDA graphs need a CUDA build of LibTorch");
  }
  void replay() {}
};

void run_before_capture(const std::function<void()>& work) { work(); }

#endif

CapturedWork::CapturedWork() = default;
CapturedWork::~CapturedWork() = default;

void CapturedWork::capture(const std::function<void()>& work) {
  if (cuda_graphs_emulated()) {
    emulated_ = work;
    return;
  }
  auto impl = std::make_unique<Impl>();
  impl->capture(work);
  impl_ = std::move(impl);
}

void CapturedWork::replay() {
  if (impl_) return impl_->replay();
  if (!emulated_) throw std::logic_error("CapturedWork::replay before capture");
  emulated_();
}

}  // namespace onestep
