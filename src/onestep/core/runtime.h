// Runtime setup shared by every command: CPU threads (set, not assumed: Debian's LibTorch
// starts with one intra-op thread and an OpenBLAS pool of one thread per core, and OpenMP's
// idle workers spin unless told otherwise), and the device from `train.device`.
#pragma once

#include <torch/torch.h>

#include <string>

namespace onestep {

// Sets LibTorch's intra-op threads (0: all cores) and, unless OPENBLAS_NUM_THREADS is set,
// OpenBLAS's threads: as many where idle OpenMP workers sleep (openmp_workers_sleep), else one.
// Returns the intra-op threads in use.
int set_threads(int64_t requested);

// Whether OMP_WAIT_POLICY is "passive": idle OpenMP workers sleep instead of spinning.
bool openmp_workers_sleep();

// OpenMP reads OMP_WAIT_POLICY once, when its library loads: unless the variable is set, this
// sets it to PASSIVE and executes the program again with the same arguments (call it first
// thing in main).
void restart_with_sleeping_openmp_workers(char** argv);

// Threads of the float32 matrix products: OpenBLAS's where LibTorch uses it, else the intra-op
// threads (oneDNN (cpu_gemm.h) and MKL follow at::set_num_threads).
int blas_threads();

// "cpu", "cuda" (UserError when no CUDA device is present) or "auto".
torch::Device resolve_device(const std::string& name);

}  // namespace onestep
