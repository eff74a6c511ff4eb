// Building blocks shared by the image networks of spec §0, net(z, t, h, c) (U-Net and DiT),
// written so that JVPs go through them: affine-free RMSNorm and LayerNorm, and scaled
// dot-product attention as matmul + softmax. While a WrittenOutLayers scope is open (jvp.cpp
// opens one around every JVP of MeanFlow and TVM) LayerNorm and softmax are written out of
// elementary ops, because LibTorch 1.13's fused forms cannot be differentiated again through a
// JVP (create_graph, as TVM does): the forward-mode tangent of native_layer_norm goes through
// its saved mean and rstd, which backward treats as constants (wrong gradients), that of
// softmax (logsumexp_jvp) multiplies a saved tensor in place ("modified by an inplace
// operation"), and the double-backward JVP through the fused kernels gives parameter gradients
// that disagree with forward mode (tests/test_networks.cpp). Elsewhere they use the fused
// kernels (one kernel instead of five to seven, forward and backward), and attention is
// LibTorch 2.x's fused kernel (compat::fused_attention; 1.13 has none: matmul + fused softmax),
// and the tanh-approximate GELU of float32 CPU tensors is onestep's own kernel (gelu_kernel.h),
// 2.5-8x faster than LibTorch's. native_group_norm (U-Net) passes these checks.
#pragma once

#include <torch/torch.h>

namespace onestep {

// RAII: while one is alive on this thread, layer_norm, softmax_last and attention use
// elementary ops, and gelu_tanh LibTorch's gelu.
class WrittenOutLayers {
 public:
  WrittenOutLayers();
  ~WrittenOutLayers();
  WrittenOutLayers(const WrittenOutLayers&) = delete;
  WrittenOutLayers& operator=(const WrittenOutLayers&) = delete;
  static bool active();
};

// x / sqrt(mean(x^2) + eps) over the last dimension, without a learnable gain.
torch::Tensor rms_norm(const torch::Tensor& x, double eps = 1e-6);

// (x - mean) / sqrt(var + eps) over the last dimension, without learnable gain and bias
// (biased variance).
torch::Tensor layer_norm(const torch::Tensor& x, double eps = 1e-6);

// Softmax over the last dimension (in a WrittenOutLayers scope from exp, sum and division).
torch::Tensor softmax_last(const torch::Tensor& x);

// GELU with the tanh approximation, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). Float32
// CPU tensors outside a WrittenOutLayers scope use gelu_kernel.h's loops (an autograd function
// whose backward, when itself differentiated, is LibTorch's gelu_backward) unless
// set_cpu_gelu("libtorch"); everything else LibTorch's gelu.
torch::Tensor gelu_tanh(const torch::Tensor& x);

// `train.cpu_gelu`: "onestep" (the default) or "libtorch", the kernel of gelu_tanh on float32
// CPU tensors.
void set_cpu_gelu(const std::string& name);

// The GELU kernel in use on float32 CPU tensors: "onestep (AVX-512)", "onestep (AVX2)",
// "onestep (baseline)" or "LibTorch".
std::string cpu_gelu();

// softmax(q k^T / sqrt(d) + bias) v for q, k, v of shape (..., tokens, d); `bias` (tokens x
// tokens, optional) is added to the scores, e.g. a causal mask.
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& bias = {});

// The additive causal mask of n tokens: 0 where a token may attend (itself and earlier tokens),
// -1e9 for later tokens (their softmax weight is exactly 0).
torch::Tensor causal_mask(int64_t n, const torch::TensorOptions& options);

}  // namespace onestep
