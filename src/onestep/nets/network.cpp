// Network registry: builds the network named by `model.name` from the config.
#include "onestep/nets/network.h"

#include "onestep/core/config.h"
#include "onestep/core/error.h"
#include "onestep/nets/mlp.h"

namespace onestep {

std::vector<std::string> network_names() { return {"mlp"}; }

Network make_network(const Config& config, const NetSpec& spec) {
  const std::string& name = config.get_string("model.name");
  if (name == "mlp") {
    MlpOptions options;
    options.width = config.get_int("model.width");
    options.depth = config.get_int("model.depth");
    options.emb_dim = config.get_int("model.emb_dim");
    options.time_max_period = config.get_float("model.time_max_period");
    options.time_scale = config.get_float("model.time_scale");
    return std::make_shared<MlpImpl>(spec, options);
  }
  std::string known;
  for (const auto& n : network_names()) known += (known.empty() ? "" : ", ") + n;
  throw UserError("config: key 'model.name' = '" + name + "': unknown network; known: " + known);
}

int64_t count_parameters(const NetworkImpl& net) {
  int64_t count = 0;
  for (const auto& p : net.parameters()) count += p.numel();
  return count;
}

}  // namespace onestep
