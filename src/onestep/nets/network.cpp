// Network registry: builds the network named by `model.name` from the config.
#include "onestep/nets/network.h"

#include <algorithm>

#include "onestep/core/config.h"
#include "onestep/core/error.h"
#include "onestep/nets/dit.h"
#include "onestep/nets/mlp.h"
#include "onestep/nets/unet.h"

namespace onestep {

std::vector<std::string> network_names() { return {"mlp", "unet", "dit"}; }

namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw UserError("config: " + message);
}

void require_image_shape(const NetSpec& spec, const std::string& name) {
  require(spec.in_shape.size() == 3, "model.name = '" + name + "' needs image data (C x H x W); this data is " +
                                         std::to_string(spec.in_shape.size()) + "-D per sample (use mlp)");
}

}  // namespace

Network make_network(const Config& config, const NetSpec& spec) {
  const std::string& name = config.get_string("model.name");
  if (name == "mlp") {
    MlpOptions options;
    options.width = config.get_int("model.width");
    options.depth = config.get_int("model.depth");
    options.emb_dim = config.get_int("model.emb_dim");
    options.time_max_period = config.get_float("model.time_max_period");
    options.time_scale = config.get_float("model.time_scale");
    options.fourier_features = config.get_int("model.fourier_features");
    options.fourier_scale = config.get_float("model.fourier_scale");
    options.residual = config.get_bool("model.residual");
    return std::make_shared<MlpImpl>(spec, options);
  }
  if (name == "unet") {
    require_image_shape(spec, name);
    UnetOptions options;
    options.channels = config.get_int("model.channels");
    options.channel_mult = config.get_int_list("model.channel_mult");
    options.num_res_blocks = config.get_int("model.num_res_blocks");
    options.attention_resolutions = config.get_int_list("model.attention_resolutions");
    options.emb_dim = config.get_int("model.emb_dim");
    options.heads = config.get_int("model.heads");
    options.time_max_period = config.get_float("model.time_max_period");
    options.time_scale = config.get_float("model.time_scale");
    for (const int64_t mult : options.channel_mult)
      require((options.channels * mult) % options.heads == 0,
              "model.channels x model.channel_mult (" + std::to_string(options.channels * mult) +
                  ") must be divisible by model.heads = " + std::to_string(options.heads));
    std::vector<int64_t> level_sizes = {spec.in_shape[1]};  // each level halves the height, rounding up
    while (level_sizes.size() < options.channel_mult.size()) level_sizes.push_back((level_sizes.back() + 1) / 2);
    for (const int64_t resolution : options.attention_resolutions) {
      if (std::find(level_sizes.begin(), level_sizes.end(), resolution) != level_sizes.end()) continue;
      std::string sizes;
      for (const int64_t size : level_sizes) sizes += (sizes.empty() ? "" : ", ") + std::to_string(size);
      require(false, "model.attention_resolutions: " + std::to_string(resolution) +
                         " is not the size of a U-Net level; this data's levels are " + sizes);
    }
    return std::make_shared<UnetImpl>(spec, options);
  }
  if (name == "dit") {
    require_image_shape(spec, name);
    DitOptions options;
    options.patch_size = config.get_int("model.patch_size");
    options.width = config.get_int("model.width");
    options.depth = config.get_int("model.depth");
    options.heads = config.get_int("model.heads");
    options.mlp_ratio = config.get_float("model.mlp_ratio");
    options.norm = config.get_string("model.norm");
    options.qk_norm = config.get_bool("model.qk_norm");
    options.mod_norm = config.get_bool("model.mod_norm");
    options.time_max_period = config.get_float("model.time_max_period");
    options.time_scale = config.get_float("model.time_scale");
    require(options.width % options.heads == 0 && options.width % 4 == 0,
            "model.width = " + std::to_string(options.width) + " must be a multiple of 4 and of model.heads = " +
                std::to_string(options.heads));
    require(spec.in_shape[1] % options.patch_size == 0 && spec.in_shape[2] % options.patch_size == 0,
            "model.patch_size = " + std::to_string(options.patch_size) + " must divide the image size " +
                std::to_string(spec.in_shape[1]) + "x" + std::to_string(spec.in_shape[2]));
    return std::make_shared<DitImpl>(spec, options);
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
