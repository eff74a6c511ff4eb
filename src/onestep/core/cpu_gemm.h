// Which library computes LibTorch's float32 matrix products on the CPU (`train.cpu_gemm`).
// Debian's LibTorch hands them to OpenBLAS through the Fortran symbol sgemm_, and links
// oneDNN as well; where onestep is built beside that oneDNN (ONESTEP_ONEDNN_GEMM), the programs
// define sgemm_ themselves, so LibTorch's calls reach oneDNN's sgemm instead (on the project's
// AVX2 CPU OpenBLAS multiplies 256x256 matrices at a quarter of oneDNN's rate:
// docs/benchmarks.md). Autograd, the JVPs and every other BLAS routine are untouched.
#pragma once

#include <string>

namespace onestep {

// Whether the float32 matrix products can go to oneDNN: built with it, and LibTorch's sgemm_
// calls bind to onestep's.
bool onednn_gemm_available();

// One of the key's choices (config.cpp): "auto" (oneDNN where available, else the BLAS),
// "onednn" (UserError where unavailable) or "blas" (LibTorch's own BLAS). Programs start as "auto".
void set_cpu_gemm(const std::string& name);

// The library in use: "oneDNN" or "BLAS".
std::string cpu_gemm();

}  // namespace onestep
