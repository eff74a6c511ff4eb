// Network interface and registry. Every network has the signature of spec §0:
// net(z, t, h, c) -> tensor of the output shape, with z: B x in_shape, t and h: B (float),
// c: B (int64) class labels where the label num_classes means "no class" (the null label for
// CFG); an undefined c means the null label for every sample. Networks know nothing of methods.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace onestep {

class Config;

// What a method asks of a network: input and output shape of one sample, number of classes
// (0 = unconditional).
struct NetSpec {
  std::vector<int64_t> in_shape;
  std::vector<int64_t> out_shape;
  int64_t num_classes = 0;
};

class NetworkImpl : public torch::nn::Module {
 public:
  explicit NetworkImpl(NetSpec spec) : spec_(std::move(spec)) {}
  virtual torch::Tensor forward(const torch::Tensor& z, const torch::Tensor& t, const torch::Tensor& h,
                                const torch::Tensor& c) = 0;
  const NetSpec& spec() const { return spec_; }
  // The null label (= number of classes).
  int64_t null_label() const { return spec_.num_classes; }

 private:
  NetSpec spec_;
};
using Network = std::shared_ptr<NetworkImpl>;

// Builds the network named by `model.name`. Throws UserError for an unknown name.
Network make_network(const Config& config, const NetSpec& spec);
std::vector<std::string> network_names();

// Number of trainable parameters.
int64_t count_parameters(const NetworkImpl& net);

}  // namespace onestep
