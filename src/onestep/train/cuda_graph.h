// Device work recorded once and replayed with one launch: CUDA graphs, for train.cuda_graph
// (CUDA builds of LibTorch only). Tests on machines without a GPU open an EmulatedCudaGraphs
// scope, in which a capture keeps the work as a function and each replay runs it, so that the
// code around captures (static inputs, the step's halves) runs on the CPU too.
#pragma once

#include <functional>
#include <memory>

namespace onestep {

// Whether this build can capture CUDA graphs (LibTorch built with CUDA).
bool cuda_graphs_built();

class CapturedWork {
 public:
  CapturedWork();
  ~CapturedWork();
  CapturedWork(const CapturedWork&) = delete;
  CapturedWork& operator=(const CapturedWork&) = delete;

  // Records what `work` launches on the current CUDA device, on the side stream of
  // run_before_capture, with autocast's cast cache off; nothing runs. Throws UserError naming the cause where CUDA refuses an
  // operation while capturing (a host transfer or synchronisation in `work`).
  void capture(const std::function<void()>& work);
  // Launches the recorded work on the current stream.
  void replay();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::function<void()> emulated_;
};

// Runs `work` on the side stream of the current CUDA device (one per device, the captures'
// too) and waits for it: the warm-up of the work a graph will capture, as CUDA graphs ask, so
// that what the libraries set up per stream (cuBLAS's workspace) is there (emulated: runs it).
void run_before_capture(const std::function<void()>& work);

// While one exists, captures are emulated (see the top of this file).
class EmulatedCudaGraphs {
 public:
  EmulatedCudaGraphs();
  ~EmulatedCudaGraphs();
  EmulatedCudaGraphs(const EmulatedCudaGraphs&) = delete;
  EmulatedCudaGraphs& operator=(const EmulatedCudaGraphs&) = delete;
};
bool cuda_graphs_emulated();

}  // namespace onestep
