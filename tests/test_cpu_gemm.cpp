// Tests of the CPU float32 matrix products' library (cpu_gemm.h): oneDNN and the BLAS against
// float64, through LibTorch's ops and through the sgemm_ entry point itself.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "onestep/core/cpu_gemm.h"
#include "onestep/core/error.h"

namespace onestep {
namespace {

// The libraries this build can use, each set in turn; "auto" again at the end.
class CpuGemm : public ::testing::Test {
 protected:
  std::vector<std::string> libraries() const {
    std::vector<std::string> names{"blas"};
    if (onednn_gemm_available()) names.push_back("onednn");
    return names;
  }
  void TearDown() override { set_cpu_gemm("auto"); }
};

TEST_F(CpuGemm, OneDnnIsUsedWhereLibTorchCallsOpenBlasBesideIt) {
  const bool openblas = dlsym(RTLD_DEFAULT, "openblas_set_num_threads") != nullptr;
  const bool onednn = dlsym(RTLD_DEFAULT, "dnnl_sgemm") != nullptr;
  if (!openblas || !onednn) {
    EXPECT_THROW(set_cpu_gemm("onednn"), UserError);
    GTEST_SKIP() << "this LibTorch does not call OpenBLAS with oneDNN beside it";
  }
  ASSERT_TRUE(onednn_gemm_available());
  EXPECT_EQ(cpu_gemm(), "oneDNN") << "the default, auto";
  set_cpu_gemm("blas");
  EXPECT_EQ(cpu_gemm(), "BLAS");
  set_cpu_gemm("onednn");
  EXPECT_EQ(cpu_gemm(), "oneDNN");

  // The switch reaches the products: the two libraries sum in different orders, so a long
  // product differs in its last bits somewhere.
  torch::manual_seed(0);
  const auto a = torch::randn({64, 1024}), b = torch::randn({1024, 64});
  const auto with_onednn = torch::mm(a, b);
  set_cpu_gemm("blas");
  EXPECT_FALSE(torch::equal(with_onednn, torch::mm(a, b)));
}

// LibTorch's products in every layout it hands to sgemm_: transposed operands, strided views
// (leading dimension above the rows), alpha and beta, odd sizes, a single row; against float64.
TEST_F(CpuGemm, LibTorchProductsMatchFloat64) {
  torch::manual_seed(1);
  const auto wide = torch::randn({80, 128}, torch::kFloat64);
  const auto a = wide.narrow(1, 0, 71);  // 80x71 with a row stride of 128
  const auto b = torch::randn({71, 53}, torch::kFloat64), c = torch::randn({80, 53}, torch::kFloat64);
  const auto row = torch::randn({1, 71}, torch::kFloat64);
  const auto f = [](const torch::Tensor& t) { return t.to(torch::kFloat); };
  const auto close = [](const torch::Tensor& got, const torch::Tensor& want) {
    return torch::allclose(got.to(torch::kFloat64), want, 1e-5, 1e-4);
  };
  for (const auto& library : libraries()) {
    set_cpu_gemm(library);
    SCOPED_TRACE(library);
    EXPECT_TRUE(close(torch::mm(f(a), f(b)), a.mm(b)));
    EXPECT_TRUE(close(torch::mm(f(a).t().contiguous().t(), f(b)), a.mm(b)));
    EXPECT_TRUE(close(torch::mm(f(b).t(), f(a).t()), b.t().mm(a.t())));
    EXPECT_TRUE(close(torch::mm(f(a).t(), f(c)), a.t().mm(c)));
    EXPECT_TRUE(close(torch::addmm(f(c), f(a), f(b), 0.5, 2.0), c * 0.5 + a.mm(b) * 2.0));
    EXPECT_TRUE(close(torch::nn::functional::linear(f(a), f(b).t()), a.mm(b)));
    EXPECT_TRUE(close(torch::mm(f(row), f(b)), row.mm(b)));
    EXPECT_TRUE(close(torch::bmm(f(a).unsqueeze(0).expand({3, 80, 71}), f(b).unsqueeze(0).expand({3, 71, 53})),
                      a.mm(b).unsqueeze(0).expand({3, 80, 53})));
  }
}

// The entry point LibTorch calls (onestep's where it routes to oneDNN), column-major as the BLAS defines it: beta = 0 must not read C (here
// NaN), the leading dimensions may exceed the rows, and every transpose code is understood.
TEST_F(CpuGemm, SgemmEntryPointFollowsTheBlasConventions) {
  const int m = 5, n = 7, k = 9, ld = 12;
  std::vector<float> a(ld * k), b(ld * n), at(ld * m), bt(ld * k);
  for (int i = 0; i < ld * k; ++i) a[i] = std::sin(0.37f * i);
  for (int i = 0; i < ld * n; ++i) b[i] = std::cos(0.23f * i);
  // op(A) = A (m x k, column-major in a with leading dimension ld); at holds A^T (k x m).
  for (int i = 0; i < m; ++i)
    for (int l = 0; l < k; ++l) at[l + i * ld] = a[i + l * ld];
  for (int l = 0; l < k; ++l)
    for (int j = 0; j < n; ++j) bt[j + l * ld] = b[l + j * ld];
  using Sgemm = void (*)(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                         const int*, const float*, const int*, const float*, float*, const int*);
  const auto sgemm_ = reinterpret_cast<Sgemm>(dlsym(RTLD_DEFAULT, "sgemm_"));
  if (sgemm_ == nullptr) GTEST_SKIP() << "no sgemm_ in this build (the one LibTorch calls, if any, is internal)";
  const float alpha = 1.5f, zero = 0.0f;
  for (const auto& library : libraries()) {
    set_cpu_gemm(library);
    for (const char* codes : {"NN", "TN", "NT", "ct"}) {
      SCOPED_TRACE(library + " " + codes);
      const bool ta = codes[0] != 'N', tb = codes[1] != 'N';
      std::vector<float> c(ld * n, std::numeric_limits<float>::quiet_NaN());
      sgemm_(&codes[0], &codes[1], &m, &n, &k, &alpha, ta ? at.data() : a.data(), &ld, tb ? bt.data() : b.data(), &ld,
             &zero, c.data(), &ld);
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
          double want = 0;
          for (int l = 0; l < k; ++l) want += static_cast<double>(a[i + l * ld]) * b[l + j * ld];
          EXPECT_NEAR(c[i + j * ld], alpha * want, 1e-5) << i << "," << j;
        }
      for (int j = 0; j < n; ++j) EXPECT_TRUE(std::isnan(c[m + j * ld])) << "rows past m are not C's";
    }
  }
}

}  // namespace
}  // namespace onestep
