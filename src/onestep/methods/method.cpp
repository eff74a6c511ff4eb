// Method construction through the registry, the default module set and ModuleSet (see method.h).
#include "onestep/methods/method.h"

#include <stdexcept>

#include "onestep/core/config.h"

namespace onestep {

std::unique_ptr<Method> make_method(const Config& config) {
  return MethodRegistry::instance().get("method", config.get_string("method.name"))(config);
}

ModuleSet Method::build_modules(const Config& config, const DataInfo& data) const {
  ModuleSet modules;
  modules.add("net", make_network(config, net_spec(data), data.data_std));
  return modules;
}

NetSpec Method::net_spec(const DataInfo& data) const {
  NetSpec spec;
  spec.in_shape = spec.out_shape = data.sample_shape;
  spec.num_classes = data.num_classes;
  return spec;
}

LossOutput Method::loss(const LossContext& context, const Batch& batch) {
  return loss_given(context, batch, draws_on(draw(batch, context.gen), batch.x.device()));
}

LossDraws Method::draw(const Batch&, torch::Generator&) const {
  throw std::logic_error("method " + name() + " has no draw(): " + capture_refusal());
}

LossOutput Method::loss_given(const LossContext&, const Batch&, const LossDraws&) {
  throw std::logic_error("method " + name() + " has no loss_given(): " + capture_refusal());
}

LossDraws draws_on(const LossDraws& draws, const torch::Device& device) {
  LossDraws out;
  for (const auto& draw : draws) out.push_back(draw.defined() ? draw.to(device) : draw);
  return out;
}

void ModuleSet::add(const std::string& name, Network module) { modules_.emplace_back(name, std::move(module)); }

NetworkImpl& ModuleSet::operator[](const std::string& name) const {
  for (const auto& [module_name, module] : modules_)
    if (module_name == name) return *module;
  throw std::out_of_range("no module '" + name + "'");
}

std::vector<std::pair<std::string, torch::Tensor>> ModuleSet::named_parameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& [module_name, module] : modules_)
    for (const auto& item : module->named_parameters()) out.emplace_back(module_name + "." + item.key(), item.value());
  return out;
}

std::vector<torch::Tensor> ModuleSet::parameters() const {
  std::vector<torch::Tensor> out;
  for (const auto& [name, tensor] : named_parameters()) out.push_back(tensor);
  return out;
}

void ModuleSet::to(const torch::Device& device) {
  for (auto& item : modules_) item.second->to(device);
}

void ModuleSet::train(bool on) {
  for (auto& item : modules_) item.second->train(on);
}

}  // namespace onestep
