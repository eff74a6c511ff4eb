// Thread count, OpenMP's idle workers, freed CPU memory and device selection (see runtime.h).
#include "onestep/core/runtime.h"

#include <dlfcn.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <strings.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "onestep/core/cpu_gemm.h"
#include "onestep/core/error.h"

namespace onestep {
namespace {

// OpenBLAS's own entry points, looked up at run time: Debian's LibTorch links OpenBLAS, the
// PyTorch wheels link MKL (whose threads at::set_num_threads sets) and have neither symbol.
using OpenBlasSetThreads = void (*)(int);
using OpenBlasGetThreads = int (*)();

std::atomic<bool> memory_kept{false};
// glibc malloc's bounds (runtime.h, set_cpu_memory): its initial ones, and those of "keep".
constexpr int kGlibcInitial = 128 << 10, kKeepMapped = 32 << 20, kKeepTrim = 1 << 30;
char** restart_arguments = nullptr;  // allow_restart

}  // namespace

bool openmp_workers_sleep() {
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  const char* spins = std::getenv("GOMP_SPINCOUNT");
  char* end = nullptr;
  const bool no_spins = spins == nullptr || (std::strtoll(spins, &end, 10) == 0 && end != spins && *end == '\0');
  return policy != nullptr && strcasecmp(policy, "passive") == 0 && no_spins;
}

std::string openmp_wait() {
  if (openmp_workers_sleep()) return "sleep";
  const char* spins = std::getenv("GOMP_SPINCOUNT");
  if (spins != nullptr) return std::string("spin ") + spins + " times, then sleep";
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  if (policy != nullptr && strcasecmp(policy, "active") == 0) return "spin";
  return "spin (OpenMP's default)";
}

int set_threads(int64_t requested) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(requested > 0 ? static_cast<int>(requested) : cores);
  const int threads = at::get_num_threads();
  // OpenBLAS keeps a thread pool of its own (one thread per core), which at::set_num_threads
  // does not reach: beside other processes it oversubscribes the machine, and beside OpenMP
  // workers that spin while idle the two pools take turns on the same cores (a toy MLP step
  // up to 4x slower; docs/benchmarks.md). So the matrix products get the same threads where idle
  // OpenMP workers sleep (set_openmp_wait sees to that), else the calling thread alone.
  if (std::getenv("OPENBLAS_NUM_THREADS") == nullptr) {
    if (auto set = reinterpret_cast<OpenBlasSetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads")))
      set(threads == 1 || openmp_workers_sleep() ? threads : 1);
  }
  return threads;
}

void allow_restart(char** argv) { restart_arguments = argv; }

void set_openmp_wait(const std::string& name) {
  if (at::get_num_threads() == 1 || restart_arguments == nullptr) return;
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  if (name == "spin") setenv("GOMP_SPINCOUNT", std::to_string(kBriefOpenMpSpins).c_str(), 1);
  std::fflush(stdout);
  std::fflush(stderr);
  execv("/proc/self/exe", restart_arguments);  // returns only on failure: then carry on as started
  unsetenv("OMP_WAIT_POLICY");
  unsetenv("GOMP_SPINCOUNT");
}

int blas_threads() {
  if (cpu_gemm() == "oneDNN") return at::get_num_threads();
  const auto get = reinterpret_cast<OpenBlasGetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return get ? get() : at::get_num_threads();
}

void set_cpu_memory(const std::string& name) {
#if defined(__GLIBC__)
  const bool keep = name == "keep";
  if (keep == memory_kept) return;
  mallopt(M_MMAP_THRESHOLD, keep ? kKeepMapped : kGlibcInitial);
  mallopt(M_TRIM_THRESHOLD, keep ? kKeepTrim : kGlibcInitial);
  memory_kept = keep;
#else
  (void)name;
#endif
}

std::string cpu_memory() { return memory_kept ? "keep" : "release"; }

std::string cpu_memory_tunables() {
  if (!memory_kept) return "";
  return "glibc.malloc.mmap_threshold=" + std::to_string(kKeepMapped) +
         ":glibc.malloc.trim_threshold=" + std::to_string(kKeepTrim);
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
