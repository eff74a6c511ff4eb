// Config schema, TOML loading (toml++), command-line overrides and the resolved TOML dump.
// The schema below is the single list of keys; README's "Config keys" section mirrors it
// (`onestep info --keys` prints it).
#include "onestep/core/config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "onestep/core/error.h"

namespace onestep {
namespace {

KeySpec int_key(std::string key, int64_t def, double min, double max, std::string help) {
  return {std::move(key), ValueType::Int, std::to_string(def), std::move(help), {}, min, max};
}
KeySpec float_key(std::string key, const char* def, double min, double max, std::string help) {
  return {std::move(key), ValueType::Float, def, std::move(help), {}, min, max};
}
KeySpec string_key(std::string key, std::string def, std::vector<std::string> choices, std::string help) {
  return {std::move(key), ValueType::String, std::move(def), std::move(help), std::move(choices)};
}
KeySpec bool_key(std::string key, bool def, std::string help) {
  return {std::move(key), ValueType::Bool, def ? "true" : "false", std::move(help), {}};
}

constexpr double kInf = std::numeric_limits<double>::infinity();

std::vector<KeySpec> build_schema() {
  return {
      // [data]
      string_key("data.name", "checkerboard", {},
                 "checkerboard | moons | 8gaussians | spirals | swissroll | gaussian | points:PATH.csv | "
                 "fashion-mnist | folder:DIR"),
      float_key("data.sigma", "1.0", 1e-6, kInf, "standard deviation of the `gaussian` data"),
      int_key("data.dim", 2, 1, 1 << 20, "dimension of the `gaussian` data"),
      string_key("data.test_path", "", {}, "held-out CSV for `points:` data (empty: split off data.test_fraction)"),
      float_key("data.test_fraction", "0.1", 1e-6, 1 - 1e-6, "share of a `points:` CSV or `folder:` held out for evaluation"),
      int_key("data.split_seed", 0, 0, 9.0e15, "seed of the train/held-out split of a `points:` CSV or `folder:`"),
      string_key("data.path", "/usr/share/datasets/fashion-mnist", {}, "folder of the Fashion-MNIST IDX files"),
      int_key("data.size", 32, 1, 4096, "`folder:` images are resized (antialiased) and centre-cropped to size x size"),
      bool_key("data.hflip", false, "random horizontal flips of training images"),
      // [model]
      string_key("model.name", "mlp", {}, "network kind: mlp | unet | dit"),
      int_key("model.width", 256, 1, 1 << 16, "mlp: hidden width; dit: token width"),
      int_key("model.depth", 4, 1, 64, "mlp: hidden layers; dit: transformer blocks"),
      bool_key("model.residual", false, "mlp: pre-LayerNorm residual blocks (depth blocks of two width x width layers)"),
      int_key("model.fourier_features", 0, 0, 1 << 14, "mlp: random Fourier features of the input coordinates (0: off)"),
      float_key("model.fourier_scale", "1", 1e-6, 1e6, "mlp: std of the Fourier feature frequencies (cycles per unit)"),
      int_key("model.emb_dim", 64, 2, 1 << 14, "mlp, unet: width of each of the t, h and class embeddings"),
      int_key("model.channels", 64, 1, 1 << 14, "unet: channels of the first level"),
      {"model.channel_mult", ValueType::IntList, "1,2,2", "unet: channel multiplier per level", {}, 1, 64},
      int_key("model.num_res_blocks", 2, 1, 16, "unet: residual blocks per level"),
      {"model.attention_resolutions", ValueType::IntList, "",
       "unet: level sizes whose blocks add self-attention (the middle block always has it)", {}, 0, 4096},
      int_key("model.heads", 4, 1, 256, "unet, dit: attention heads"),
      int_key("model.patch_size", 2, 1, 64, "dit: patch size"),
      float_key("model.mlp_ratio", "4", 0.25, 64, "dit: MLP width over token width"),
      string_key("model.norm", "layernorm", {"layernorm", "rmsnorm"}, "dit: token normalisation (rmsnorm: affine-free)"),
      bool_key("model.qk_norm", false, "dit: RMS-normalise queries and keys per head"),
      bool_key("model.mod_norm", false, "dit: RMS-normalise the adaLN modulation (TVM's Lipschitz-minded DiT)"),
      float_key("model.time_max_period", "10000", 1, 1e9,
                "sinusoidal t and h embeddings use frequencies from 1 down to 1/time_max_period"),
      float_key("model.time_scale", "1", 1e-6, 1e6,
                "t and h are multiplied by this before embedding (1: raw t in [0,1]; 1000: diffusion convention)"),
      // [method]
      string_key("method.name", "meanflow", {}, "training method: fm | meanflow"),
      string_key("method.time_sampler", "logit-normal", {"logit-normal", "uniform"}, "distribution of t"),
      float_key("method.time_mu", "-0.4", -10, 10, "mean of the logit-normal time sampler"),
      float_key("method.time_sigma", "1.0", 1e-3, 10, "std of the logit-normal time sampler"),
      float_key("method.label_dropout", "0.1", 0, 1, "probability of replacing the class by the null label (conditional data)"),
      float_key("method.ratio", "0.25", 0, 1, "meanflow: share of the batch with r != t"),
      float_key("method.adaptive_p", "1.0", 0, 10, "meanflow: adaptive loss weight power p (0: plain L2)"),
      float_key("method.adaptive_c", "1e-3", 1e-12, 10, "meanflow: adaptive loss weight constant c"),
      float_key("method.cfg_omega", "1.0", 0, 100, "meanflow: CFG scale omega folded into training (1: off)"),
      float_key("method.cfg_kappa", "0.0", 0, 0.999, "meanflow: CFG mixing kappa (effective scale omega/(1-kappa))"),
      float_key("method.cfg_t_lo", "0.0", 0, 1, "meanflow: CFG applies for t in [cfg_t_lo, cfg_t_hi]"),
      float_key("method.cfg_t_hi", "1.0", 0, 1, "meanflow: upper end of the CFG interval"),
      string_key("method.jvp", "forward", {"forward", "double-backward"},
                 "JVP implementation: forward-mode AD, or double backward for ops without a forward formula"),
      string_key("method.tangent", "v,0,1", {"v,0,1", "v,0,0", "v,1,0", "v,1,1"},
                 "meanflow: JVP tangent on (z, r, t); only v,0,1 is correct (the others are for the ablation)"),
      string_key("method.sampler", "euler", {"euler", "heun"}, "fm: ODE sampler (heun: 2 NFE per step, Euler last step)"),
      float_key("method.cfg_scale", "1.0", 0, 100, "fm: classifier-free guidance scale at sampling (1: off)"),
      // [train]
      int_key("train.steps", 4000, 0, 1e12, "optimizer steps"),
      int_key("train.batch_size", 256, 1, 1 << 24, "samples per step"),
      string_key("train.optimizer", "adam", {"adam", "adamw"}, "adam: L2 weight decay; adamw: decoupled"),
      float_key("train.lr", "1e-3", 0, 1e6, "peak learning rate"),
      float_key("train.beta1", "0.9", 0, 0.999999, "Adam beta1"),
      float_key("train.beta2", "0.999", 0, 0.999999, "Adam beta2"),
      float_key("train.weight_decay", "0", 0, 10, "weight decay"),
      int_key("train.warmup", 200, 0, 1e12, "steps of linear learning-rate warm-up"),
      string_key("train.lr_schedule", "constant", {"constant", "cosine"}, "after the warm-up: constant, or cosine decay to 0"),
      float_key("train.grad_clip", "1.0", 0, kInf, "clip the global gradient norm to this (0: off)"),
      float_key("train.ema_decay", "0.999", 0, 1, "decay of the EMA weights used for evaluation and sampling"),
      int_key("train.seed", 0, 0, 9.0e15, "seed of initialisation, data, noise and time draws"),
      int_key("train.threads", 0, 0, 1024, "intra-op CPU threads (0: all cores)"),
      string_key("train.device", "cpu", {"cpu", "cuda", "auto"}, "where to train"),
      int_key("train.log_every", 100, 1, 1e12, "steps between metrics.jsonl records and progress lines"),
      int_key("train.sample_every", 1000, 0, 1e12, "steps between sample plots (0: only at the end)"),
      int_key("train.ckpt_every", 1000, 0, 1e12, "steps between checkpoints (0: only at the end)"),
      int_key("train.max_nonfinite", 20, 1, 1e12, "consecutive non-finite losses (steps skipped) that stop the run"),
      // [eval]
      {"eval.nfe", ValueType::IntList, "1,2,4", "NFE values evaluated (comma-separated list)", {}, 1, 1e6},
      int_key("eval.num", 10000, 2, 1e9, "generated and held-out samples per metric"),
      int_key("eval.seed", 1, 0, 9.0e15, "seed of the evaluation noise"),
      string_key("eval.evaluator", "", {},
                 "image evaluator weights (empty: the committed evaluators/fashion-mnist.safetensors)"),
      string_key("eval.cache_dir", "", {}, "cache of reference image features (empty: ~/.cache/onestep)"),
      bool_key("eval.use_ema", true, "evaluate and sample with the EMA weights"),
      bool_key("eval.at_end", true, "evaluate at the end of training (written to metrics.jsonl and report.html)"),
  };
}

const KeySpec& find_key(const std::string& key, const std::string& origin) {
  for (const auto& spec : Config::schema())
    if (spec.key == key) return spec;
  const auto dot = key.find('.');
  const std::string section = dot == std::string::npos ? "" : key.substr(0, dot);
  std::string known;
  for (const auto& spec : Config::schema()) {
    if (spec.key.rfind(section + ".", 0) == 0 || section.empty()) known += (known.empty() ? "" : ", ") + spec.key;
  }
  if (known.empty()) {
    std::set<std::string> sections;
    for (const auto& spec : Config::schema()) sections.insert(spec.key.substr(0, spec.key.find('.')));
    for (const auto& s : sections) known += (known.empty() ? "[" : ", [") + s + "]";
    throw UserError(origin + ": unknown key '" + key + "'; known sections: " + known);
  }
  throw UserError(origin + ": unknown key '" + key + "'; known keys: " + known);
}

std::string type_name(ValueType type) {
  switch (type) {
    case ValueType::Int: return "an integer";
    case ValueType::Float: return "a number";
    case ValueType::Bool: return "true or false";
    case ValueType::String: return "a string";
    case ValueType::IntList: return "a comma-separated list of positive integers";
  }
  return "?";
}

// Shortest text that reads back as the same double.
std::string format_double(double value) {
  std::string text;
  for (int precision = 6; precision <= 17; ++precision) {
    std::ostringstream out;
    out.precision(precision);
    out << value;
    text = out.str();
    if (std::stod(text) == value) break;
  }
  if (text.find_first_of(".eEn") == std::string::npos) text += ".0";
  return text;
}

// Validates `value` for `spec` and returns its canonical text form.
std::string canonical_value(const KeySpec& spec, const std::string& value, const std::string& origin) {
  const auto bad = [&](const std::string& expected) {
    return UserError(origin + ": key '" + spec.key + "' = '" + value + "': expected " + expected);
  };
  const auto range = [&]() {
    std::ostringstream out;
    out << "a value in [" << spec.min << ", " << spec.max << "]";
    return out.str();
  };
  switch (spec.type) {
    case ValueType::Int: {
      size_t used = 0;
      long long parsed = 0;
      try {
        parsed = std::stoll(value, &used);
      } catch (const std::exception&) {
        throw bad(type_name(spec.type));
      }
      if (used != value.size()) throw bad(type_name(spec.type));
      if (parsed < spec.min || parsed > spec.max) throw bad("an integer in [" + std::to_string((long long)spec.min) + ", " + std::to_string((long long)spec.max) + "]");
      return std::to_string(parsed);
    }
    case ValueType::Float: {
      size_t used = 0;
      double parsed = 0;
      try {
        parsed = std::stod(value, &used);
      } catch (const std::exception&) {
        throw bad(type_name(spec.type));
      }
      if (used != value.size() || !std::isfinite(parsed)) throw bad("a finite number");
      if (parsed < spec.min || parsed > spec.max) throw bad(range());
      return format_double(parsed);
    }
    case ValueType::Bool:
      if (value == "true" || value == "1") return "true";
      if (value == "false" || value == "0") return "false";
      throw bad(type_name(spec.type));
    case ValueType::IntList: {
      std::string canonical;
      std::stringstream in(value);
      std::string item;
      while (std::getline(in, item, ',')) {
        size_t used = 0;
        long long parsed = 0;
        try {
          parsed = std::stoll(item, &used);
        } catch (const std::exception&) {
          throw bad(type_name(spec.type));
        }
        if (used != item.size() || parsed < spec.min || parsed > spec.max) throw bad(type_name(spec.type));
        canonical += (canonical.empty() ? "" : ",") + std::to_string(parsed);
      }
      if (canonical.empty() && spec.min > 0) throw bad(type_name(spec.type));
      return canonical;
    }
    case ValueType::String:
      if (!spec.choices.empty() && std::find(spec.choices.begin(), spec.choices.end(), value) == spec.choices.end()) {
        std::string allowed;
        for (const auto& c : spec.choices) allowed += (allowed.empty() ? "" : " | ") + c;
        throw bad("one of " + allowed);
      }
      return value;
  }
  return value;
}

std::string toml_node_text(const toml::node& node, const KeySpec& spec, const std::string& origin) {
  if (auto v = node.as_integer()) return std::to_string(v->get());
  if (auto v = node.as_floating_point()) return format_double(v->get());
  if (auto v = node.as_boolean()) return v->get() ? "true" : "false";
  if (auto v = node.as_string()) return v->get();
  if (auto v = node.as_array()) {
    std::string joined;
    for (const auto& item : *v) {
      if (!item.is_integer()) throw UserError(origin + ": key '" + spec.key + "': array items must be integers");
      joined += (joined.empty() ? "" : ",") + std::to_string(item.as_integer()->get());
    }
    return joined;
  }
  throw UserError(origin + ": key '" + spec.key + "': expected " + type_name(spec.type));
}

std::string quote_toml(const std::string& text) {
  std::string out = "\"";
  for (char ch : text) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out + "\"";
}

}  // namespace

const std::vector<KeySpec>& Config::schema() {
  static const std::vector<KeySpec> schema = build_schema();
  return schema;
}

Config::Config() {
  for (const auto& spec : schema()) values_[spec.key] = canonical_value(spec, spec.default_value, "schema");
}

void Config::set(const std::string& key, const std::string& value, const std::string& origin) {
  const KeySpec& spec = find_key(key, origin);
  values_[key] = canonical_value(spec, value, origin);
}

void Config::apply_override(const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw UserError("override '" + assignment + "': expected section.key=value");
  set(assignment.substr(0, eq), assignment.substr(eq + 1), "override");
}

void Config::apply_toml(const std::string& toml_text, const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(toml_text, origin);
  } catch (const toml::parse_error& err) {
    throw UserError(origin + ":" + std::to_string(err.source().begin.line) + ": invalid TOML: " +
                    std::string(err.description()));
  }
  for (const auto& [section_key, section_node] : root) {
    const std::string section(section_key.str());
    const auto* table = section_node.as_table();
    if (!table) throw UserError(origin + ": top-level key '" + section + "' must be a section like [" + section + "]");
    for (const auto& [key, node] : *table) {
      const std::string full = section + "." + std::string(key.str());
      const KeySpec& spec = find_key(full, origin);
      values_[full] = canonical_value(spec, toml_node_text(node, spec, origin), origin);
    }
  }
}

void Config::apply_toml_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(path + ": cannot open config file");
  std::stringstream buffer;
  buffer << in.rdbuf();
  apply_toml(buffer.str(), path);
}

int64_t Config::get_int(const std::string& key) const { return std::stoll(values_.at(key)); }
double Config::get_float(const std::string& key) const { return std::stod(values_.at(key)); }
const std::string& Config::get_string(const std::string& key) const { return values_.at(key); }
bool Config::get_bool(const std::string& key) const { return values_.at(key) == "true"; }

std::vector<int64_t> Config::get_int_list(const std::string& key) const {
  std::vector<int64_t> out;
  std::stringstream in(values_.at(key));
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::stoll(item));
  return out;
}

std::string Config::to_toml() const {
  std::string out = "# onestep resolved config: every key, defaults written out.\n";
  std::string section;
  for (const auto& spec : schema()) {
    const std::string this_section = spec.key.substr(0, spec.key.find('.'));
    if (this_section != section) {
      section = this_section;
      out += "\n[" + section + "]\n";
    }
    const std::string& value = values_.at(spec.key);
    out += spec.key.substr(section.size() + 1) + " = " +
           (spec.type == ValueType::String || spec.type == ValueType::IntList ? quote_toml(value) : value) + "  # " + spec.help + "\n";
  }
  return out;
}

}  // namespace onestep
