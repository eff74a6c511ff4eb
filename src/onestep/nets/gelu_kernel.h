// Loops of the tanh-approximate GELU on float32 arrays, forward and backward, for the CPU
// (nets/layers.cpp wraps them as an autograd function): 2.5-3x (AVX2) to 5.5-8x (AVX-512)
// faster than LibTorch's gelu kernels, whose vectorised tanh dominates them
// (bench/bench_gelu.cpp). Written as
//   gelu(x) = 0.5 x (1 + tanh(u)) = x s,   s = 1 / (1 + exp(-2u)),   u = sqrt(2/pi) (x + 0.044715 x^3),
//   gelu'(x) = s + 2 x s (1 - s) du/dx,
// with an exp from a polynomial after range reduction (Cephes' expf coefficients), in
// branch-free loops that the compiler vectorises; within 2e-6 of float64 (relative to the value,
// and to g for the gradient: tests/test_networks.cpp). No LibTorch here: this file is compiled
// without the precompiled header, at -O3 and with -fno-trapping-math (CMakeLists.txt), which lets
// GCC vectorise the clamps.
#pragma once

#include <cstdint>
#include <vector>

namespace onestep::gelu_kernel {

// Which instruction set the loops use: the build's baseline, AVX2 with FMA, or AVX-512 on
// 512-bit vectors (x86-64 only). Avx2 and Avx512 run the same operations (fused multiply-adds
// included) and give the same bits.
enum class Isa { Baseline, Avx2, Avx512 };

// The Isas this CPU runs, Baseline first, the best last.
std::vector<Isa> supported_isas();

// The best Isa this CPU runs.
Isa best_isa();

// "baseline", "AVX2", "AVX-512".
const char* isa_name(Isa isa);

// y[i] = gelu(x[i]) for i < n. NaN stays NaN, gelu(+inf) = +inf, gelu(-inf) = NaN (as 0.5 x (1 + tanh(u))).
void forward(const float* x, float* y, int64_t n, Isa isa);

// dx[i] = g[i] gelu'(x[i]) for i < n.
void backward(const float* g, const float* x, float* dx, int64_t n, Isa isa);

}  // namespace onestep::gelu_kernel
