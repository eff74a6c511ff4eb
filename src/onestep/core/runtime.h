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

// Whether idle OpenMP workers sleep at once: OMP_WAIT_POLICY is "passive" and GOMP_SPINCOUNT
// unset or 0 (libgomp's reading of the two).
bool openmp_workers_sleep();

// How idle OpenMP workers wait, from the same variables: "sleep", "spin N times, then sleep",
// "spin", or "spin (OpenMP's default)" (libgomp: about 3 ms, then sleep).
std::string openmp_wait();

// Lets set_openmp_wait execute the program again with these arguments (call it first thing in
// main; the arguments must outlive the program).
void allow_restart(char** argv);

// How often an idle OpenMP worker checks for work before it sleeps (GOMP_SPINCOUNT) under
// `train.cpu_wait = spin`: libgomp counts about 100,000 checks per millisecond, so about 30 us,
// a hundredth of its default. Counts from 1,000 to 300,000 made the same steps faster within the
// noise of the 2-vCPU VM, and larger counts make processes that share cores far slower (two of
// two threads each on two cores: 1.7-2.5x at 3,000, 7-15x at 30,000; docs/benchmarks.md).
constexpr long long kBriefOpenMpSpins = 3000;

// `train.cpu_wait`: how idle OpenMP workers wait for the next parallel region on more than one
// thread. "sleep": at once (OMP_WAIT_POLICY=PASSIVE), so that they take no core from OpenBLAS's
// own threads or from other processes. "spin": kBriefOpenMpSpins checks first, so that each of a
// step's operations finds them awake (on the 2-vCPU VM of 2026-12-06, two threads: the toy
// MeanFlow step 1.5x faster, the U-Net's 1.2-1.3x), and OpenBLAS keeps to the calling thread;
// for a run that has its cores to itself (above: processes that share them). OpenMP reads this
// only when its library loads: so, where allowed (allow_restart) and unless OMP_WAIT_POLICY or
// GOMP_SPINCOUNT is set, this sets them and executes the program again, once. One thread has
// no workers: nothing to set (call it after set_threads, whose thread count it reads).
void set_openmp_wait(const std::string& name);

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
// The GLIBC_TUNABLES value that gives another process's malloc what set_cpu_memory gave this
// one ("" for "release": glibc's defaults), for the Python twin of scripts/bench-compare.sh.
std::string cpu_memory_tunables();

// "cpu", "cuda" (UserError when no CUDA device is present) or "auto".
torch::Device resolve_device(const std::string& name);

}  // namespace onestep
