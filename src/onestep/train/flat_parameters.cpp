// Parameters and gradients as views of one buffer (see flat_parameters.h).
#include "onestep/train/flat_parameters.h"

#include <stdexcept>

namespace onestep {

FlatParameters::FlatParameters(std::vector<std::pair<std::string, torch::Tensor>> named, bool with_grads)
    : named_(std::move(named)) {
  if (named_.empty()) return;
  torch::NoGradGuard no_grad;
  const auto options = named_.front().second.options();
  int64_t total = 0;
  for (const auto& [name, p] : named_) {
    if (p.scalar_type() != options.dtype().toScalarType() || p.device() != options.device())
      throw std::logic_error("FlatParameters: '" + name + "' differs in dtype or device from the first parameter");
    offsets_.push_back(total);
    total += p.numel();
  }
  offsets_.push_back(total);
  data_ = torch::empty({total}, options.requires_grad(false));
  const auto data_slices = slices(data_);
  for (size_t i = 0; i < named_.size(); ++i) {
    data_slices[i].copy_(named_[i].second);
    named_[i].second.set_data(data_slices[i]);
  }
  if (!with_grads) return;
  grad_ = torch::zeros({total}, options.requires_grad(false));
  grad_slices_ = slices(grad_);
  for (size_t i = 0; i < named_.size(); ++i) named_[i].second.mutable_grad() = grad_slices_[i];
}

const torch::Tensor& FlatParameters::grad() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < named_.size(); ++i) {
    auto& p = named_[i].second;
    if (p.grad().defined() && p.grad().data_ptr() == grad_slices_[i].data_ptr()) continue;
    if (p.grad().defined()) {
      grad_slices_[i].copy_(p.grad());
    } else {
      grad_slices_[i].zero_();
    }
    p.mutable_grad() = grad_slices_[i];
  }
  return grad_;
}

std::vector<torch::Tensor> FlatParameters::slices(const torch::Tensor& buffer) const {
  std::vector<torch::Tensor> out;
  out.reserve(named_.size());
  for (size_t i = 0; i < named_.size(); ++i)
    out.push_back(buffer.narrow(0, offsets_[i], offsets_[i + 1] - offsets_[i]).view(named_[i].second.sizes()));
  return out;
}

}  // namespace onestep
