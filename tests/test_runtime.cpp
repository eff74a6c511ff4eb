// Tests of the runtime setup: CPU threads, OpenBLAS's own pool and OpenMP's wait policy included,
// and freed CPU memory kept for reuse.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <torch/torch.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "onestep/core/cpu_gemm.h"
#include "onestep/core/runtime.h"
#include "onestep/nets/layers.h"
#include "test_support.h"

namespace onestep {
namespace {

double cpu_seconds(int who) {
  rusage usage{};
  getrusage(who, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec + 1e-6 * (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

// Saves and restores an environment variable.
class SavedVariable {
 public:
  explicit SavedVariable(const char* name) : name_(name) {
    const char* value = std::getenv(name);
    if (value != nullptr) value_ = value;
    had_ = value != nullptr;
  }
  ~SavedVariable() {
    if (had_) {
      setenv(name_, value_.c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::string value_;
  bool had_ = false;
};

// Clears OPENBLAS_NUM_THREADS, OMP_WAIT_POLICY and GOMP_SPINCOUNT and has the float32 products
// computed by OpenBLAS for each test, then restores them, one thread and the default library.
class RuntimeThreads : public ::testing::Test {
 protected:
  void SetUp() override {
    set_ = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    if (set_ == nullptr) GTEST_SKIP() << "this LibTorch does not use OpenBLAS";
    unsetenv("OPENBLAS_NUM_THREADS");
    unsetenv("OMP_WAIT_POLICY");
    unsetenv("GOMP_SPINCOUNT");
    set_cpu_gemm("blas");
  }
  void TearDown() override {
    if (set_ != nullptr) set_threads(1);
    set_cpu_gemm("auto");
  }
  SavedVariable blas_variable_{"OPENBLAS_NUM_THREADS"}, wait_variable_{"OMP_WAIT_POLICY"}, spin_variable_{"GOMP_SPINCOUNT"};
  void (*set_)(int) = nullptr;
};

TEST_F(RuntimeThreads, MatrixProductsFollowTheThreadsWhereIdleWorkersSleep) {
  set_(2);  // OpenBLAS's default on a multi-core machine
  EXPECT_EQ(set_threads(2), 2);
  EXPECT_EQ(blas_threads(), 1) << "OpenMP's workers spin when idle: the products stay on the calling thread";
  setenv("OMP_WAIT_POLICY", "passive", 1);
  set_threads(2);
  EXPECT_EQ(blas_threads(), 2);
  EXPECT_EQ(openmp_wait(), "sleep");
  setenv("GOMP_SPINCOUNT", "30000", 1);  // passive, yet spinning first: libgomp's count wins
  set_threads(2);
  EXPECT_EQ(blas_threads(), 1);
  EXPECT_EQ(openmp_wait(), "spin 30000 times, then sleep");
  setenv("GOMP_SPINCOUNT", "0", 1);
  set_threads(2);
  EXPECT_EQ(blas_threads(), 2);
  set_threads(1);
  EXPECT_EQ(blas_threads(), 1);

  // The behaviour, not the setting: on one thread, the CPU time of a run of matrix products
  // is the calling thread's own, whatever the machine's load (OpenBLAS's threads would add
  // CPU time beside it).
  set_threads(1);
  torch::manual_seed(0);
  const auto a = torch::randn({512, 512});
  const double self_before = cpu_seconds(RUSAGE_SELF), thread_before = cpu_seconds(RUSAGE_THREAD);
  for (int i = 0; i < 40; ++i) torch::mm(a, a);
  const double self = cpu_seconds(RUSAGE_SELF) - self_before, thread = cpu_seconds(RUSAGE_THREAD) - thread_before;
  EXPECT_GT(thread, 0.0);
  EXPECT_LT(self - thread, 0.25 * thread) << "process " << self << " s, calling thread " << thread << " s";
  // And the products are right: against float64.
  const auto b = torch::randn({64, 64}, torch::kFloat64);
  EXPECT_TRUE(torch::allclose(torch::mm(b.to(torch::kFloat), b.to(torch::kFloat)).to(torch::kFloat64), torch::mm(b, b),
                              1e-4, 1e-4));
}

TEST_F(RuntimeThreads, OpenBlasNumThreadsOverrides) {
  set_(2);
  setenv("OPENBLAS_NUM_THREADS", "2", 1);
  set_threads(1);
  EXPECT_EQ(blas_threads(), 2);
}

// The onestep command restarts itself with sleeping OpenMP workers, so its matrix products get
// all its threads; a policy the user set is kept. oneDNN's products run on OpenMP's own workers,
// so they get all threads either way.
TEST(RuntimeCommand, MatrixProductsGetTheThreadsOfTheCommand) {
  if (dlsym(RTLD_DEFAULT, "openblas_set_num_threads") == nullptr) GTEST_SKIP() << "this LibTorch does not use OpenBLAS";
  const auto threads_line = [](const std::string& environment) {
    const auto result = testing_support::run_command(environment + " " ONESTEP_BINARY " info");
    EXPECT_EQ(result.status, 0) << result.out;
    const auto begin = result.out.find("threads: ");
    return result.out.substr(begin, result.out.find('\n', begin) - begin);
  };
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  const std::string all = "threads: " + std::to_string(cores) + " (of " + std::to_string(cores) + " cores), ";
  const std::string library = " (" + cpu_gemm() + "), GELU " + cpu_gelu();
  EXPECT_EQ(threads_line("env -u OMP_WAIT_POLICY -u OPENBLAS_NUM_THREADS"),
            all + "matrix products on " + std::to_string(cores) + library);
  if (cores > 1) {
    EXPECT_EQ(threads_line("env -u OPENBLAS_NUM_THREADS OMP_WAIT_POLICY=active"),
              all + "matrix products on " + (onednn_gemm_available() ? std::to_string(cores) : "1") + library);
  }
}

// A field of the bench report (compact JSON on stdout) of the command with the variables cleared
// and then ENVIRONMENT set: a string's value without its quotes, a number's digits.
std::string bench_field(const std::string& environment, const std::string& overrides, const std::string& field) {
  const auto result = testing_support::run_command(
      "env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT -u OPENBLAS_NUM_THREADS " + environment + " " ONESTEP_BINARY
      " bench --warmup 0 --iters 1 model.width=16 model.depth=2 train.batch_size=16 " + overrides);
  EXPECT_EQ(result.status, 0) << result.out;
  const std::string key = "\"" + field + "\":";
  auto begin = result.out.find(key);
  if (begin == std::string::npos) return "no " + field + " in: " + result.out;
  begin += key.size();
  if (result.out[begin] == '"') return result.out.substr(begin + 1, result.out.find('"', begin + 1) - begin - 1);
  return result.out.substr(begin, result.out.find_first_of(",}", begin) - begin);
}

// train.cpu_wait: on more than one thread the command restarts itself, once, with the idle
// OpenMP workers asked for (spinning, OpenBLAS keeps to the calling thread). One thread has no
// workers: no restart. Variables the user set win.
TEST(RuntimeCommand, IdleOpenMpWorkersWaitAsTheConfigSays) {
  const std::string brief = "spin " + std::to_string(kBriefOpenMpSpins) + " times, then sleep";
  EXPECT_EQ(bench_field("", "train.threads=2", "openmp_wait"), "sleep");
  EXPECT_EQ(bench_field("", "train.threads=2 train.cpu_wait=spin", "openmp_wait"), brief);
  if (dlsym(RTLD_DEFAULT, "openblas_set_num_threads") != nullptr) {
    EXPECT_EQ(bench_field("", "train.threads=2 train.cpu_gemm=blas", "blas_threads"), "2");
    EXPECT_EQ(bench_field("", "train.threads=2 train.cpu_gemm=blas train.cpu_wait=spin", "blas_threads"), "1");
  }
  EXPECT_EQ(bench_field("", "train.threads=1 train.cpu_wait=spin", "openmp_wait"), "spin (OpenMP's default)");
  EXPECT_EQ(bench_field("OMP_WAIT_POLICY=active", "train.threads=2", "openmp_wait"), "spin");
  EXPECT_EQ(bench_field("GOMP_SPINCOUNT=5", "train.threads=2", "openmp_wait"), "spin 5 times, then sleep");
}

long minor_page_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

// Page faults of 20 tensors of 8 MiB, each filled and freed like a step's activations, after ten
// such tensors have warmed the allocator (kept, the heap grows for the first few, until the
// blocks freed beside the small long-lived ones fit the next).
long faults_of_twenty_tensors() {
  for (int i = 0; i < 10; ++i) torch::zeros({2 << 20}).fill_(1);
  const long before = minor_page_faults();
  for (int i = 0; i < 20; ++i) torch::zeros({2 << 20}).fill_(static_cast<float>(i));
  return minor_page_faults() - before;
}

// train.cpu_memory: kept, the same pages serve all the tensors; released after a keep (glibc's
// initial bounds, fixed: its adaptive bounds happen to serve this simple pattern from the heap too,
// not a training step's), each new tensor arrives as fresh pages (2,048 faults per 8 MiB with
// 4 KiB pages; at least one per tensor with huge pages); the same bounds as GLIBC_TUNABLES for
// another process. The onestep command keeps by default;
// the numbers do not change (Cli.KeptOrReleasedMemoryGivesTheSameRun).
TEST(RuntimeMemory, KeptMemoryServesTheNextTensorsWithoutPageFaults) {
#if !defined(__GLIBC__) || defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "train.cpu_memory acts on glibc's malloc (AddressSanitizer brings its own)";
#else
  set_cpu_memory("keep");
  EXPECT_EQ(cpu_memory(), "keep");
  // The same bounds for another process (the Python twin): 32 MiB and 1 GiB.
  EXPECT_EQ(cpu_memory_tunables(), "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824");
  const long kept = faults_of_twenty_tensors();
  set_cpu_memory("release");
  EXPECT_EQ(cpu_memory(), "release");
  EXPECT_EQ(cpu_memory_tunables(), "");
  const long released = faults_of_twenty_tensors();
  EXPECT_GE(released, 20);
  EXPECT_LT(kept, 20) << "released: " << released << " faults";

  const auto result = testing_support::run_command(ONESTEP_BINARY " info");
  EXPECT_EQ(result.status, 0) << result.out;
  EXPECT_TRUE(testing_support::contains(result.out, "freed CPU memory: keep\n")) << result.out;
#endif
}

}  // namespace
}  // namespace onestep
