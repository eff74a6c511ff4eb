// RMSNorm, LayerNorm, softmax and attention with an optional causal mask (see layers.h).
#include "onestep/nets/layers.h"

#include <cmath>

#include "onestep/core/compat.h"

namespace onestep {
namespace {

thread_local int written_out_scopes = 0;

}  // namespace

WrittenOutLayers::WrittenOutLayers() { ++written_out_scopes; }
WrittenOutLayers::~WrittenOutLayers() { --written_out_scopes; }
bool WrittenOutLayers::active() { return written_out_scopes > 0; }

torch::Tensor rms_norm(const torch::Tensor& x, double eps) {
  return x * torch::rsqrt(x.square().mean(-1, /*keepdim=*/true) + eps);
}

torch::Tensor layer_norm(const torch::Tensor& x, double eps) {
  if (!WrittenOutLayers::active()) return torch::layer_norm(x, {x.size(-1)}, {}, {}, eps);
  const auto centered = x - x.mean(-1, /*keepdim=*/true);
  return centered * torch::rsqrt(centered.square().mean(-1, /*keepdim=*/true) + eps);
}

torch::Tensor softmax_last(const torch::Tensor& x) {
  if (!WrittenOutLayers::active()) return torch::softmax(x, -1);
  // Shift invariance makes the detached max exact for values and derivatives of all orders.
  const auto e = torch::exp(x - std::get<0>(x.detach().max(-1, /*keepdim=*/true)));
  return e / e.sum(-1, /*keepdim=*/true);
}

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& bias) {
  if (compat::kFusedAttention && !WrittenOutLayers::active()) return compat::fused_attention(q, k, v, bias);
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  auto scores = torch::matmul(q * scale, k.transpose(-2, -1));
  if (bias.defined()) scores = scores + bias;
  return torch::matmul(softmax_last(scores), v);
}

torch::Tensor causal_mask(int64_t n, const torch::TensorOptions& options) {
  return torch::full({n, n}, -1e9, options).triu(1);
}

}  // namespace onestep
