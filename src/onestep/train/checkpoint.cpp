// Checkpoint writing and checked loading (see checkpoint.h).
#include "onestep/train/checkpoint.h"

#include <filesystem>
#include <sstream>

#include "onestep/core/error.h"
#include "onestep/core/file_io.h"
#include "onestep/core/sha256.h"
#include "onestep/train/optimizer.h"

namespace onestep {
namespace {

void add_modules(SafetensorsFile& file, const ModuleSet& modules, const std::string& prefix) {
  for (const auto& [name, module] : modules.items()) {
    const std::string base = prefix + "." + name + ".";
    for (const auto& item : module->named_parameters()) file.tensors[base + item.key()] = item.value().detach().cpu();
    for (const auto& item : module->named_buffers()) file.tensors[base + item.key()] = item.value().detach().cpu();
  }
}

// Loads tensors "<prefix><name>" of `tensors` into the module's parameters and buffers.
void load_tensors(torch::nn::Module& module, const std::map<std::string, torch::Tensor>& tensors,
                  const std::string& prefix, const std::string& origin) {
  torch::NoGradGuard no_grad;
  const auto load = [&](const std::string& name, torch::Tensor& target) {
    const auto it = tensors.find(prefix + name);
    if (it == tensors.end()) throw UserError(origin + ": missing tensor '" + prefix + name + "'");
    if (it->second.sizes() != target.sizes() || it->second.scalar_type() != target.scalar_type())
      throw UserError(origin + ": tensor '" + prefix + name + "' is " +
                      std::string(c10::toString(it->second.scalar_type())) + c10::str(it->second.sizes()) +
                      ", the network expects " + std::string(c10::toString(target.scalar_type())) +
                      c10::str(target.sizes()));
    target.copy_(it->second);
  };
  for (auto& item : module.named_parameters()) load(item.key(), item.value());
  for (auto& item : module.named_buffers()) load(item.key(), item.value());
}

// Format 1 held one network: its tensors move under the module "net", and the U-Net's
// attention_resolutions (pixel sizes of levels) become attention_levels (level indices) and
// its conditioning is added before the norm (model.scale_shift = false).
void migrate_version_1(Checkpoint& checkpoint, const std::map<std::string, std::string>& old_keys) {
  std::map<std::string, torch::Tensor> renamed;
  for (auto& [name, tensor] : checkpoint.file.tensors) {
    const auto dot = name.find('.');
    const std::string prefix = name.substr(0, dot);
    const bool moves = prefix == "model" || prefix == "ema" || prefix == "target_ema" ||
                       (prefix == "optimizer" && name != "optimizer.step");
    renamed[moves ? prefix + ".net." + name.substr(dot + 1) : name] = tensor;
  }
  checkpoint.file.tensors = std::move(renamed);
  if (checkpoint.config.get_string("model.name") == "unet")  // format 1 U-Nets added the conditioning
    checkpoint.config.set("model.scale_shift", "false", checkpoint.path);
  const auto old = old_keys.find("model.attention_resolutions");
  if (old != old_keys.end() && !old->second.empty() && checkpoint.sample_shape.size() == 3) {
    const auto levels = checkpoint.config.get_int_list("model.channel_mult").size();
    std::vector<int64_t> sizes = {checkpoint.sample_shape[1]};
    while (sizes.size() < levels) sizes.push_back((sizes.back() + 1) / 2);
    std::string attention_levels;
    std::stringstream in(old->second);
    for (std::string item; std::getline(in, item, ',');)
      for (size_t level = 0; level < sizes.size(); ++level)
        if (sizes[level] == std::stoll(item)) attention_levels += (attention_levels.empty() ? "" : ",") + std::to_string(level);
    checkpoint.config.set("model.attention_levels", attention_levels, checkpoint.path);
  }
}

std::string to_hex(const torch::Tensor& bytes) {
  static const char* digits = "0123456789abcdef";
  const auto contiguous = bytes.contiguous();
  const auto* data = contiguous.data_ptr<uint8_t>();
  std::string out;
  out.reserve(2 * contiguous.numel());
  for (int64_t i = 0; i < contiguous.numel(); ++i) {
    out += digits[data[i] >> 4];
    out += digits[data[i] & 15];
  }
  return out;
}

torch::Tensor from_hex(const std::string& hex, const std::string& origin) {
  if (hex.size() % 2 != 0) throw UserError(origin + ": metadata 'rng_state' is not a hex string");
  auto out = torch::empty({static_cast<int64_t>(hex.size() / 2)}, torch::kUInt8);
  auto* data = out.data_ptr<uint8_t>();
  const auto nibble = [&](char ch) -> int {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    throw UserError(origin + ": metadata 'rng_state' is not a hex string");
  };
  for (size_t i = 0; i < hex.size() / 2; ++i) data[i] = static_cast<uint8_t>(nibble(hex[2 * i]) * 16 + nibble(hex[2 * i + 1]));
  return out;
}

const std::string& metadata(const Checkpoint& checkpoint, const std::string& key) {
  const auto it = checkpoint.file.metadata.find(key);
  if (it == checkpoint.file.metadata.end())
    throw UserError(checkpoint.path + ": not an onestep checkpoint (metadata '" + key + "' missing)");
  return it->second;
}

}  // namespace

void save_checkpoint(const std::string& path, const CheckpointContents& contents) {
  SafetensorsFile file;
  add_modules(file, contents.model, "model");
  add_modules(file, contents.ema, "ema");
  if (contents.target_ema) add_modules(file, *contents.target_ema, "target_ema");
  for (const auto& [name, tensor] : contents.optimizer.state()) file.tensors["optimizer." + name] = tensor.detach().cpu();
  file.metadata["format_version"] = std::to_string(kCheckpointFormatVersion);
  file.metadata["config"] = contents.config.to_toml();
  file.metadata["step"] = std::to_string(contents.step);
  for (size_t k = 0; k < contents.rng_states.size(); ++k)
    file.metadata[k == 0 ? "rng_state" : "rng_state_" + std::to_string(k)] = to_hex(contents.rng_states[k]);
  std::string shape;
  for (const int64_t d : contents.sample_shape) shape += (shape.empty() ? "" : ",") + std::to_string(d);
  file.metadata["sample_shape"] = shape;
  file.metadata["num_classes"] = std::to_string(contents.num_classes);
  file.metadata["producer"] = "onestep";
  write_safetensors(path, file);
}

Checkpoint read_checkpoint(const std::string& path) {
  Checkpoint checkpoint;
  checkpoint.path = std::filesystem::is_directory(path) ? (std::filesystem::path(path) / kCheckpointFileName).string() : path;
  if (!std::filesystem::exists(checkpoint.path)) throw UserError(checkpoint.path + ": checkpoint file not found");
  checkpoint.file = read_safetensors(checkpoint.path);
  const std::string version = metadata(checkpoint, "format_version");
  if (version != std::to_string(kCheckpointFormatVersion) && version != "1")
    throw UserError(checkpoint.path + ": checkpoint format_version " + version + ", this onestep reads versions 1 to " +
                    std::to_string(kCheckpointFormatVersion));
  std::map<std::string, std::string> old_keys;
  checkpoint.config.apply_toml(metadata(checkpoint, "config"), checkpoint.path + " (embedded config)",
                               version == "1" ? &old_keys : nullptr);
  const auto integer = [&](const std::string& key, const std::string& text) {
    size_t used = 0;
    int64_t value = -1;
    try {
      value = std::stoll(text, &used);
    } catch (const std::logic_error&) {
      used = 0;
    }
    if (used == 0 || used != text.size() || value < 0)
      throw UserError(checkpoint.path + ": metadata '" + key + "' = '" + text + "' is not a non-negative integer");
    return value;
  };
  checkpoint.step = integer("step", metadata(checkpoint, "step"));
  checkpoint.num_classes = integer("num_classes", metadata(checkpoint, "num_classes"));
  std::stringstream shape(metadata(checkpoint, "sample_shape"));
  for (std::string item; std::getline(shape, item, ',');) checkpoint.sample_shape.push_back(integer("sample_shape", item));
  if (checkpoint.sample_shape.empty()) throw UserError(checkpoint.path + ": metadata 'sample_shape' is empty");
  if (version == "1") migrate_version_1(checkpoint, old_keys);
  checkpoint.config.drop_inapplicable_keys();
  checkpoint.config.validate();
  return checkpoint;
}

void load_modules(ModuleSet& modules, const Checkpoint& checkpoint, const std::string& prefix) {
  for (const auto& [name, module] : modules.items())
    load_tensors(*module, checkpoint.file.tensors, prefix + "." + name + ".", checkpoint.path);
}

std::vector<torch::Tensor> load_training_state(Adam& optimizer, const Checkpoint& checkpoint) {
  std::map<std::string, torch::Tensor> state;
  const std::string prefix = "optimizer.";
  for (const auto& [name, tensor] : checkpoint.file.tensors)
    if (name.rfind(prefix, 0) == 0) state[name.substr(prefix.size())] = tensor;
  optimizer.load_state(state, checkpoint.path);
  std::vector<torch::Tensor> states = {from_hex(metadata(checkpoint, "rng_state"), checkpoint.path)};
  for (auto it = checkpoint.file.metadata.find("rng_state_1"); it != checkpoint.file.metadata.end();
       it = checkpoint.file.metadata.find("rng_state_" + std::to_string(states.size())))
    states.push_back(from_hex(it->second, checkpoint.path));
  return states;
}

std::shared_ptr<torch::nn::Module> load_frozen_module(const FrozenModuleSpec& spec) {
  if (!std::filesystem::exists(spec.path))
    throw UserError(spec.path + ": weights of the frozen module '" + spec.name + "' not found");
  const std::string hash = sha256_hex(read_file(spec.path));
  if (hash != spec.sha256)
    throw UserError(spec.path + ": SHA-256 " + hash + " differs from the expected " + spec.sha256 +
                    " of the frozen module '" + spec.name + "'");
  auto module = spec.build();
  load_tensors(*module, read_safetensors(spec.path).tensors, "", spec.path);
  for (auto& p : module->parameters()) p.set_requires_grad(false);
  module->eval();
  return module;
}

}  // namespace onestep
