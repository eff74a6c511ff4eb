// Forward-mode and double-backward Jacobian-vector products (see jvp.h).
#include "onestep/methods/jvp.h"

#include <mutex>

#include "onestep/core/compat.h"
#include "onestep/nets/layers.h"

namespace onestep {

JvpMode jvp_mode_from_name(const std::string& name) {
  return name == "double-backward" ? JvpMode::DoubleBackward : JvpMode::Forward;
}

namespace {

// LibTorch keeps forward-mode AD levels for the whole process, not per thread: a level opened
// while another thread's is open fails as "nested". So the forward JVPs of threads of one process
// (data-parallel ranks as threads in the tests, a program that trains two models at once) take
// turns; recursive, so that a JVP nested in one thread still gets LibTorch's own error.
std::recursive_mutex forward_ad_turn;

std::pair<torch::Tensor, torch::Tensor> forward_mode_jvp(const TensorFunction& f,
                                                         const std::vector<torch::Tensor>& primals,
                                                         const std::vector<torch::Tensor>& tangents,
                                                         bool create_graph) {
  const std::lock_guard<std::recursive_mutex> turn(forward_ad_turn);
  compat::DualLevel level;
  std::vector<torch::Tensor> duals;
  duals.reserve(primals.size());
  for (size_t i = 0; i < primals.size(); ++i) duals.push_back(compat::make_dual(primals[i], tangents[i], level));
  auto [out, tangent_out] = compat::unpack_dual(f(duals), level);
  if (!tangent_out.defined()) tangent_out = torch::zeros_like(out);
  return {out, create_graph ? tangent_out : tangent_out.detach()};
}

std::pair<torch::Tensor, torch::Tensor> double_backward_jvp(const TensorFunction& f,
                                                            const std::vector<torch::Tensor>& primals,
                                                            const std::vector<torch::Tensor>& tangents,
                                                            bool create_graph) {
  std::vector<torch::Tensor> inputs;
  for (const auto& p : primals) inputs.push_back(p.detach().requires_grad_(true));
  const auto out = f(inputs);
  // J^T w is linear in the dummy cotangent w; differentiating <J^T w, v> in w gives J v.
  const auto w = torch::zeros_like(out, torch::requires_grad());
  const auto vjp = torch::autograd::grad({out}, inputs, {w}, /*retain_graph=*/true, /*create_graph=*/true,
                                         /*allow_unused=*/true);
  auto dot = torch::zeros({}, out.options());
  for (size_t i = 0; i < vjp.size(); ++i)
    if (vjp[i].defined()) dot = dot + (vjp[i] * tangents[i]).sum();
  if (!dot.requires_grad()) return {out, torch::zeros_like(out)};
  auto tangent_out = torch::autograd::grad({dot}, {w}, {}, /*retain_graph=*/true, create_graph, true)[0];
  if (!tangent_out.defined()) tangent_out = torch::zeros_like(out);
  return {out, create_graph ? tangent_out : tangent_out.detach()};
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> jvp(const TensorFunction& f, const std::vector<torch::Tensor>& primals,
                                            const std::vector<torch::Tensor>& tangents, JvpMode mode,
                                            bool create_graph) {
  TORCH_CHECK(primals.size() == tangents.size(), "jvp: ", primals.size(), " primals but ", tangents.size(), " tangents");
  TORCH_CHECK(!primals.empty(), "jvp: no primals");
  // JVPs run in float32 even inside a bf16 training step (train.precision), and through the
  // written-out LayerNorm and softmax (nets/layers.h).
  compat::AutocastScope float32(primals.front().device().type(), /*enabled=*/false);
  const WrittenOutLayers written_out;
  if (mode == JvpMode::Forward) return forward_mode_jvp(f, primals, tangents, create_graph);
  return double_backward_jvp(f, primals, tangents, create_graph);
}

std::pair<torch::Tensor, torch::Tensor> network_jvp(NetworkImpl& net, const NetInput& input, const NetInput& tangent,
                                                    JvpMode mode, bool create_graph) {
  using Field = torch::Tensor NetInput::*;
  const std::vector<Field> fields = {&NetInput::z, &NetInput::t, &NetInput::h, &NetInput::extra, &NetInput::context};
  std::vector<Field> moving;
  std::vector<torch::Tensor> primals, tangents;
  for (const Field field : fields) {
    if (!(tangent.*field).defined()) continue;
    moving.push_back(field);
    primals.push_back(input.*field);
    tangents.push_back(tangent.*field);
  }
  const auto f = [&](const std::vector<torch::Tensor>& values) {
    NetInput moved = input;
    for (size_t i = 0; i < moving.size(); ++i) moved.*moving[i] = values[i];
    return net.forward(moved);
  };
  return jvp(f, primals, tangents, mode, create_graph);
}

}  // namespace onestep
