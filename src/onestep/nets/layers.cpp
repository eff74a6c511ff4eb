// RMSNorm, LayerNorm, softmax, GELU and attention with an optional causal mask (see layers.h).
#include "onestep/nets/layers.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <cmath>

#include "onestep/core/compat.h"
#include "onestep/nets/gelu_kernel.h"

namespace onestep {
namespace {

thread_local int written_out_scopes = 0;
std::atomic<bool> use_gelu_kernel{true};

// Elements per task of the GELU loops on the intra-op threads.
constexpr int64_t kGeluGrain = 1 << 15;

// GELU (tanh) on contiguous float32 CPU tensors through gelu_kernel's loops.
class CpuGeluTanh : public torch::autograd::Function<CpuGeluTanh> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x) {
    ctx->save_for_backward({x});
    auto y = torch::empty_like(x);
    const float* in = x.data_ptr<float>();
    float* out = y.data_ptr<float>();
    const auto isa = gelu_kernel::best_isa();
    at::parallel_for(0, x.numel(), kGeluGrain, [&](int64_t begin, int64_t end) {
      gelu_kernel::forward(in + begin, out + begin, end - begin, isa);
    });
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto x = ctx->get_saved_variables()[0];
    // Differentiated again (create_graph): LibTorch's backward, which has a derivative.
    if (torch::GradMode::is_enabled()) return {torch::gelu_backward(grads[0], x, "tanh")};
    const auto g = grads[0].contiguous();
    auto dx = torch::empty_like(x);
    const float* g_in = g.data_ptr<float>();
    const float* x_in = x.data_ptr<float>();
    float* out = dx.data_ptr<float>();
    const auto isa = gelu_kernel::best_isa();
    at::parallel_for(0, x.numel(), kGeluGrain, [&](int64_t begin, int64_t end) {
      gelu_kernel::backward(g_in + begin, x_in + begin, out + begin, end - begin, isa);
    });
    return {dx};
  }
};

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

torch::Tensor gelu_tanh(const torch::Tensor& x) {
  if (!use_gelu_kernel || WrittenOutLayers::active() || !x.device().is_cpu() || x.scalar_type() != torch::kFloat)
    return torch::gelu(x, "tanh");
  return CpuGeluTanh::apply(x.contiguous());
}

void set_cpu_gelu(const std::string& name) { use_gelu_kernel = name != "libtorch"; }

std::string cpu_gelu() {
  if (!use_gelu_kernel) return "LibTorch";
  return std::string("onestep (") + gelu_kernel::isa_name(gelu_kernel::best_isa()) + ")";
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
