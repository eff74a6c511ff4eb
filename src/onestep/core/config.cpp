// Config: the trainer's keys, validation against the chosen components' keys, TOML loading
// (toml++), command-line overrides and the resolved TOML dump. README's "Config keys" section
// lists every key (`onestep info --keys` prints them).
#include "onestep/core/config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "onestep/core/error.h"
#include "onestep/core/registry.h"

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

std::vector<KeySpec> build_general_keys() {
  return {
      string_key("data.name", "checkerboard", {}, "the dataset (onestep info lists them)"),
      string_key("model.name", "mlp", {}, "the network kind (onestep info lists them)"),
      string_key("method.name", "meanflow", {}, "the training method (onestep info lists them)"),
      // [train]
      int_key("train.steps", 4000, 0, 1e12, "optimizer steps"),
      int_key("train.batch_size", 256, 1, 1 << 24, "samples per step (all processes and micro-batches together)"),
      int_key("train.accumulate", 1, 1, 1 << 20,
              "micro-batches per step in each process (gradient accumulation), each drawing data, noise and "
              "times from its own stream"),
      string_key("train.optimizer", "adam", {"adam", "adamw"}, "adam: L2 weight decay; adamw: decoupled"),
      float_key("train.lr", "1e-3", 0, 1e6, "peak learning rate"),
      float_key("train.beta1", "0.9", 0, 0.999999, "Adam beta1"),
      float_key("train.beta2", "0.999", 0, 0.999999, "Adam beta2"),
      float_key("train.weight_decay", "0", 0, 10, "weight decay"),
      int_key("train.warmup", 200, 0, 1e12, "steps of linear learning-rate warm-up"),
      string_key("train.lr_schedule", "constant", {"constant", "cosine"}, "after the warm-up: constant, or cosine decay to 0"),
      float_key("train.grad_clip", "1.0", 0, kInf, "clip the global gradient norm to this (0: off)"),
      float_key("train.ema_decay", "0.999", 0, 1, "decay of the EMA weights used for evaluation and sampling"),
      bool_key("train.ema_warmup", false,
               "EMA decay min(train.ema_decay, (1 + n) / (10 + n)) at the n-th step, so that a short run's EMA "
               "does not keep a share of the initial weights (0.999^3000 = 5% without it)"),
      int_key("train.seed", 0, 0, 9.0e15, "seed of initialisation, data, noise and time draws"),
      int_key("train.threads", 0, 0, 1024, "CPU threads (0: all cores): intra-op and, with OpenBLAS, the matrix products (OPENBLAS_NUM_THREADS overrides)"),
      string_key("train.device", "cpu", {"cpu", "cuda", "auto"}, "where to train"),
      string_key("train.cpu_gemm", "auto", {"auto", "onednn", "blas"},
                 "float32 CPU matrix products: oneDNN's sgemm (auto: where this build routes them there) or "
                 "LibTorch's BLAS"),
      string_key("train.cpu_gelu", "onestep", {"onestep", "libtorch"},
                 "tanh-approximate GELU of float32 CPU tensors (dit, causal): onestep's kernel or "
                 "LibTorch's gelu (2.5-8x slower; the docs' figures dated before 2026-11-29 used it)"),
      string_key("train.cpu_memory", "keep", {"keep", "release"},
                 "freed CPU memory: keep it in the process for the next step (glibc's malloc: no mapping below "
                 "32 MiB, no trimming below 1 GiB free) or release it to the system at once (glibc's defaults: "
                 "a page fault per page of every step's tensors)"),
      string_key("train.cpu_wait", "sleep", {"sleep", "spin"},
                 "idle OpenMP workers on more than one CPU thread: sleep at once, or spin about 30 us first "
                 "(faster steps when the run has the cores to itself, far slower when other processes share them)"),
      string_key("train.precision", "fp32", {"fp32", "bf16"},
                 "bf16: autocast the loss's forward passes to bfloat16 (JVPs stay float32)"),
      bool_key("train.tf32", false, "allow TF32 tensor cores for float32 matrix products on CUDA"),
      bool_key("train.cuda_graph", false,
               "CUDA: capture the step's device work as CUDA graphs at the second step and replay them, so that "
               "the host no longer launches each kernel (methods whose random draws come before their device work: "
               "fm, meanflow, tvm)"),
      int_key("train.log_every", 100, 1, 1e12, "steps between metrics.jsonl records and progress lines"),
      int_key("train.sample_every", 1000, 0, 1e12, "steps between sample plots (0: only at the end)"),
      int_key("train.ckpt_every", 1000, 0, 1e12, "steps between checkpoints (0: only at the end)"),
      int_key("train.dist_timeout", 600, 1, 1e7,
              "seconds a process of a multi-process run waits for the others before it stops with an error"),
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
      int_key("eval.every", 0, 0, 1e12,
              "steps between evaluations during training, at every eval.nfe on eval.every_num samples, written "
              "to metrics.jsonl and report.html (0: none)"),
      int_key("eval.every_num", 1000, 2, 1e9, "generated and held-out samples per metric of the evaluations during training"),
  };
}

// The sections that choose a component with their `name` key.
const std::vector<std::string>& component_sections() {
  static const std::vector<std::string> sections = {"data", "model", "method"};
  return sections;
}

std::string section_of(const std::string& key) { return key.substr(0, key.find('.')); }

// Every declaration of `key`: the trainer's, or that of each component declaring it.
std::vector<const KeySpec*> declarations(const std::string& key) {
  std::vector<const KeySpec*> out;
  for (const auto& spec : Config::general_keys())
    if (spec.key == key) out.push_back(&spec);
  for (const auto* info : components(section_of(key)))
    for (const auto& spec : info->keys)
      if (spec.key == key) out.push_back(&spec);
  return out;
}

[[noreturn]] void unknown_key(const std::string& key, const std::string& origin) {
  const std::string section = section_of(key);
  std::set<std::string> known;
  for (const auto& spec : Config::general_keys())
    if (section_of(spec.key) == section) known.insert(spec.key);
  for (const auto* info : components(section))
    for (const auto& spec : info->keys) known.insert(spec.key);
  std::string list;
  if (known.empty()) {
    std::set<std::string> sections;
    for (const auto& spec : Config::general_keys()) sections.insert(section_of(spec.key));
    for (const auto& s : sections) list += (list.empty() ? "[" : ", [") + s + "]";
    throw UserError(origin + ": unknown key '" + key + "'; known sections: " + list);
  }
  for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
  throw UserError(origin + ": unknown key '" + key + "'; known keys: " + list);
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

}  // namespace

std::string format_number(double value) {
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

namespace {

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
      return format_number(parsed);
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
  if (auto v = node.as_floating_point()) return format_number(v->get());
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

// Whether a quote after `line` (the text since the last newline) opens a string for the check
// below: first on the line (a quoted key) or right after `key =`.
bool string_may_open_after(const std::string& line) {
  size_t i = line.find_first_not_of(" \t");
  if (i == std::string::npos) return true;
  const size_t key_end = line.find_first_not_of(
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.", i);
  if (key_end == i || key_end == std::string::npos) return false;
  i = line.find_first_not_of(" \t", key_end);
  return i != std::string::npos && line[i] == '=' && line.find_first_not_of(" \t", i + 1) == std::string::npos;
}

// toml++ 3.3 (Debian 12) reaches __builtin_unreachable, undefined behaviour, when it tests some
// non-ASCII characters for whitespace (marzer/tomlplusplus#190, #295): anywhere outside strings
// and comments (also inside a malformed bare value such as `1="...`, which it scans to its end),
// and after a backslash in a multi-line basic string. Such text is rejected here, before parsing.
// Strings are recognised conservatively, only where a config puts them (string_may_open_after).
// TOML 1.0 allows no non-ASCII outside strings and comments, so the valid TOML refused is
// non-ASCII in other strings (in arrays, inline tables, after a quoted key), none of which a
// config needs, or first after a line-ending backslash.
void reject_non_ascii_toml_cannot_parse(const std::string& text, const std::string& origin) {
  const auto fail = [&](size_t at, const std::string& what) {
    const auto line = 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(at), '\n');
    throw UserError(origin + ":" + std::to_string(line) + ": invalid TOML: " + what);
  };
  const auto starts = [&](size_t at, const char* token) { return text.compare(at, std::strlen(token), token) == 0; };
  const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  enum class State { Plain, Comment, Basic, Literal, MultiBasic, MultiLiteral };
  State state = State::Plain;
  size_t line_start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    switch (state) {
      case State::Plain:
        if (static_cast<unsigned char>(c) >= 0x80) {
          fail(i, "non-ASCII character outside a string or comment (expected a key, value or comment)");
        }
        if (c == '\n') line_start = i + 1;
        if (c == '#') state = State::Comment;
        if ((c == '"' || c == '\'') && string_may_open_after(text.substr(line_start, i - line_start))) {
          if (c == '"') state = starts(i, "\"\"\"") ? State::MultiBasic : State::Basic;
          if (c == '\'') state = starts(i, "'''") ? State::MultiLiteral : State::Literal;
          if (state == State::MultiBasic || state == State::MultiLiteral) i += 2;
        }
        break;
      case State::Comment:
        if (c == '\n') {
          state = State::Plain;
          line_start = i + 1;
        }
        break;
      case State::Basic:
        if (c == '\\') ++i;  // the escaped character
        else if (c == '"' || c == '\n') state = State::Plain;
        break;
      case State::Literal:
        if (c == '\'' || c == '\n') state = State::Plain;
        break;
      case State::MultiBasic:
        if (c == '\\') {
          size_t next = i + 1;
          while (next < text.size() && is_space(text[next])) ++next;
          if (next < text.size() && static_cast<unsigned char>(text[next]) >= 0x80) {
            fail(next, "non-ASCII character after a backslash in a multi-line string (toml++ 3.3 cannot "
                       "parse it; escape it as \\uXXXX)");
          }
          i = next == i + 1 ? next : next - 1;  // skip the escaped character, or the whitespace
        } else if (starts(i, "\"\"\"")) {
          while (i + 1 < text.size() && text[i + 1] == '"') ++i;  // up to two quotes may end the content
          state = State::Plain;
        }
        break;
      case State::MultiLiteral:
        if (starts(i, "'''")) {
          while (i + 1 < text.size() && text[i + 1] == '\'') ++i;
          state = State::Plain;
        }
        break;
    }
  }
}

}  // namespace

const std::vector<KeySpec>& Config::general_keys() {
  static const std::vector<KeySpec> keys = [] {
    auto specs = build_general_keys();
    for (auto& spec : specs) spec.default_value = canonical_value(spec, spec.default_value, "schema");
    return specs;
  }();
  return keys;
}

std::vector<KeySpec> Config::keys() const {
  std::vector<KeySpec> out;
  for (const auto& spec : general_keys()) {
    out.push_back(spec);
    const std::string section = section_of(spec.key);
    if (spec.key != section + ".name") continue;
    if (const auto* info = find_component(section, text(spec.key)))
      out.insert(out.end(), info->keys.begin(), info->keys.end());
  }
  return out;
}

const std::string& Config::text(const std::string& key) const {
  const auto it = values_.find(key);
  if (it != values_.end()) return it->second.text;
  for (const auto& spec : general_keys())
    if (spec.key == key) return spec.default_value;
  const std::string section = section_of(key);
  if (const auto* info = find_component(section, text(section + ".name")))
    for (const auto& spec : info->keys)
      if (spec.key == key) return spec.default_value;
  throw std::logic_error("config key '" + key + "' is not a key of the chosen components");
}

void Config::set(const std::string& key, const std::string& value, const std::string& origin) {
  const auto specs = declarations(key);
  if (specs.empty()) unknown_key(key, origin);
  // The value must suit at least one declaration here; validate() checks it against the chosen one.
  std::string canonical;
  for (size_t i = 0; i < specs.size(); ++i) {
    try {
      canonical = canonical_value(*specs[i], value, origin);
      break;
    } catch (const UserError&) {
      if (i + 1 == specs.size()) throw;
    }
  }
  values_[key] = {canonical, origin};
}

void Config::validate() const {
  for (const auto& section : component_sections()) chosen_component(section, text(section + ".name"));
  const auto active = keys();
  for (const auto& [key, value] : values_) {
    // C++17 lambdas cannot capture a structured binding by name (clang rejects it): init-capture.
    const auto it = std::find_if(active.begin(), active.end(), [&key = key](const KeySpec& spec) { return spec.key == key; });
    if (it != active.end()) {
      canonical_value(*it, value.text, value.origin);
      continue;
    }
    const std::string section = section_of(key);
    const ComponentInfo& info = chosen_component(section, text(section + ".name"));
    std::string own;
    for (const auto& spec : info.keys) own += (own.empty() ? "" : ", ") + spec.key;
    throw UserError(value.origin + ": key '" + key + "' does not apply to " + section + ".name = '" +
                    text(section + ".name") + "' (its keys: " + (own.empty() ? "none" : own) + ")");
  }
}

void Config::drop_inapplicable_keys() {
  const auto active = keys();
  for (auto it = values_.begin(); it != values_.end();) {
    const bool applies =
        std::any_of(active.begin(), active.end(), [&](const KeySpec& spec) { return spec.key == it->first; });
    it = applies ? std::next(it) : values_.erase(it);
  }
}

void Config::apply_override(const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw UserError("override '" + assignment + "': expected section.key=value");
  set(assignment.substr(0, eq), assignment.substr(eq + 1), "override");
}

void Config::apply_toml(const std::string& toml_text, const std::string& origin,
                        std::map<std::string, std::string>* unknown) {
  reject_non_ascii_toml_cannot_parse(toml_text, origin);
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
      const auto specs = declarations(full);
      if (specs.empty() && unknown) {
        const KeySpec as_text{full, ValueType::String, "", "", {}};
        (*unknown)[full] = toml_node_text(node, as_text, origin);
        continue;
      }
      if (specs.empty()) unknown_key(full, origin);
      set(full, toml_node_text(node, *specs.front(), origin), origin);
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

int64_t Config::get_int(const std::string& key) const { return std::stoll(text(key)); }
double Config::get_float(const std::string& key) const { return std::stod(text(key)); }
const std::string& Config::get_string(const std::string& key) const { return text(key); }
bool Config::get_bool(const std::string& key) const { return text(key) == "true"; }

std::vector<int64_t> Config::get_int_list(const std::string& key) const {
  std::vector<int64_t> out;
  std::stringstream in(text(key));
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::stoll(item));
  return out;
}

std::string Config::to_toml() const {
  std::string out = "# onestep resolved config: every key, defaults written out.\n";
  std::string section;
  for (const auto& spec : keys()) {
    const std::string this_section = spec.key.substr(0, spec.key.find('.'));
    if (this_section != section) {
      section = this_section;
      out += "\n[" + section + "]\n";
    }
    const std::string& value = text(spec.key);
    out += spec.key.substr(section.size() + 1) + " = " +
           (spec.type == ValueType::String || spec.type == ValueType::IntList ? quote_toml(value) : value) + "  # " + spec.help + "\n";
  }
  return out;
}

}  // namespace onestep
