// Network interface and registry. Every network has the signature of spec §0, generalised to
// one input struct: net(z, t, h, c, extra, context) -> B x out_shape, with z: B x in_shape,
// t and h: B (float), c: B (int64) class labels where the label num_classes means "no class"
// (the null label for CFG; an undefined c means the null label for every sample), extra:
// B x num_extra scalar conditions (e.g. a guidance scale) and context: B x context_dim features
// (e.g. a backbone's output for a flow head). Networks know nothing of methods; each registers
// itself with its options' keys (core/registry.h).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "onestep/core/registry.h"

namespace onestep {

class Config;

// How a network's output layer starts: the network's own choice (zero for unet and dit, the
// framework default for mlp), zero, the framework default, or the default rescaled so that the
// output's standard deviation at initialisation matches the data's (spec §5's trap).
enum class OutputInit { Network, Zero, Default, DataScale };

// What a method asks of a network.
struct NetSpec {
  std::vector<int64_t> in_shape;   // one sample of z
  std::vector<int64_t> out_shape;  // one sample of the output
  int64_t num_classes = 0;         // 0 = unconditional
  int64_t num_extra = 0;           // scalar conditions besides t and h
  int64_t context_dim = 0;         // features of the context input (0: none)
  OutputInit output_init = OutputInit::Network;
};

// One batch of network inputs; optional fields may be undefined.
struct NetInput {
  NetInput() = default;
  NetInput(torch::Tensor z, torch::Tensor t, torch::Tensor h, torch::Tensor c = {}, torch::Tensor extra = {},
           torch::Tensor context = {})
      : z(std::move(z)), t(std::move(t)), h(std::move(h)), c(std::move(c)), extra(std::move(extra)),
        context(std::move(context)) {}
  torch::Tensor z, t, h;
  torch::Tensor c;        // optional
  torch::Tensor extra;    // B x num_extra
  torch::Tensor context;  // B x context_dim
};

class NetworkImpl : public torch::nn::Module {
 public:
  explicit NetworkImpl(NetSpec spec) : spec_(std::move(spec)) {}
  virtual torch::Tensor forward(const NetInput& input) = 0;
  // The weight and bias of the output layer (for OutputInit).
  virtual std::vector<torch::Tensor> output_parameters() = 0;
  const NetSpec& spec() const { return spec_; }
  // The null label (= number of classes).
  int64_t null_label() const { return spec_.num_classes; }

  // Activation tracking (TVM logs it: without the Lipschitz options activations can blow up):
  // while on, each forward records the largest root-mean-square of its hidden activations
  // (block outputs) as a 0-d tensor, without a host sync; undefined when off.
  void track_activations(bool on) {
    tracking_ = on;
    peak_activation_rms_ = torch::Tensor();
  }
  const torch::Tensor& peak_activation_rms() const { return peak_activation_rms_; }

 protected:
  // Networks call this on every block output.
  void note_activation(const torch::Tensor& x) {
    if (!tracking_) return;
    const auto rms = x.detach().pow(2).mean().sqrt();
    peak_activation_rms_ = peak_activation_rms_.defined() ? torch::maximum(peak_activation_rms_, rms) : rms;
  }

 private:
  NetSpec spec_;
  bool tracking_ = false;
  torch::Tensor peak_activation_rms_;
};
using Network = std::shared_ptr<NetworkImpl>;

// Builds a network from the config for a spec; throws UserError for options that do not fit it.
using NetworkFactory = std::function<Network(const Config&, const NetSpec&)>;
using NetworkRegistry = Registry<NetworkFactory>;

// Builds the network named by `model.name` and initialises its output layer as the spec asks
// (`data_std`: the data's standard deviation, for OutputInit::DataScale). Throws UserError for
// an unknown name.
Network make_network(const Config& config, const NetSpec& spec, double data_std = 1.0);

// Number of trainable parameters.
int64_t count_parameters(const torch::nn::Module& net);

// Checks shared by the image networks: C x H x W samples.
void require_image_shape(const NetSpec& spec, const std::string& network);

}  // namespace onestep
