// Jacobian-vector products of a function of several tensors, and of a network along any of its
// continuous inputs, shared by MeanFlow and TVM.
// `Forward` uses forward-mode AD (dual tensors, one pass); `DoubleBackward` computes
// J v = d/dw <J^T w, v> with two reverse passes, for ops that lack a forward-mode formula.
// The primal output keeps its autograd graph (losses differentiate through it); the tangent
// output keeps its graph only with `create_graph` (TVM differentiates through the JVP).
// Autocast is off inside: JVPs run in float32 even in a bf16 training step.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "onestep/nets/network.h"

namespace onestep {

enum class JvpMode { Forward, DoubleBackward };

JvpMode jvp_mode_from_name(const std::string& name);

using TensorFunction = std::function<torch::Tensor(const std::vector<torch::Tensor>&)>;

// Returns (f(primals), J_f(primals) · tangents).
std::pair<torch::Tensor, torch::Tensor> jvp(const TensorFunction& f, const std::vector<torch::Tensor>& primals,
                                            const std::vector<torch::Tensor>& tangents, JvpMode mode,
                                            bool create_graph);

// JVP of a network: the defined fields of `tangent` (z, t, h, extra, context) carry tangents,
// every other input is held fixed (the class label is discrete). Returns (net(input), J · tangent).
std::pair<torch::Tensor, torch::Tensor> network_jvp(NetworkImpl& net, const NetInput& input, const NetInput& tangent,
                                                    JvpMode mode, bool create_graph);

}  // namespace onestep
