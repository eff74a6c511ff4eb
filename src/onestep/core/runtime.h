// Runtime setup shared by every command: CPU threads (set, not assumed: Debian's LibTorch
// starts with one intra-op thread and an OpenBLAS pool of one thread per core, and OpenMP's
// idle workers spin unless told otherwise), what becomes of freed CPU memory, and the device
// from `train.device`.
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

// `train.cpu_memory`: "keep" or "release". LibTorch's CPU tensors come from malloc, and glibc's
// malloc maps blocks from 128 KiB up (the bound rising with the blocks freed, to 32 MiB at most)
// and hands the top of its heap back once twice that bound is free: a training step's tensors arrive
// as fresh pages, each zeroed by the kernel in a page fault (on the 2-vCPU VM of 2026-12-06 they
// made the toy MeanFlow step 4x slower: docs/benchmarks.md). "keep" serves blocks up to 32 MiB
// (glibc's largest bound) from the heap and trims it only beyond 1 GiB free, so the next step
// reuses the same pages; "release" is glibc's behaviour (after a "keep" in the same process:
// its initial bounds, fixed). Numbers are the same either way. Without glibc, no effect.
void set_cpu_memory(const std::string& name);

// "keep" where freed memory is kept for reuse (set_cpu_memory), else "release".
std::string cpu_memory();

// "cpu", "cuda" (UserError when no CUDA device is present) or "auto".
torch::Device resolve_device(const std::string& name);

}  // namespace onestep
