// Config: the one configuration of a run, sections [data] [model] [method] [train] [eval].
// The trainer's keys (train.*, eval.* and the three `<section>.name` keys) are declared in
// config.cpp; every other key belongs to the dataset, network or method that the name keys
// choose and is declared by that component (core/registry.h), with its type, default, allowed
// values and help text. A TOML file and `key=value` overrides are checked against them, and
// the resolved config (every key of the chosen components, defaults written out) is written
// back as TOML.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace onestep {

enum class ValueType { Int, Float, String, Bool, IntList };

struct KeySpec {
  std::string key;            // "section.name"
  ValueType type;
  std::string default_value;  // canonical text form
  std::string help;
  std::vector<std::string> choices;  // for strings: allowed values (empty = any)
  double min = -1e300;               // for numbers: allowed range, inclusive
  double max = 1e300;
};

// Shortest decimal text that reads back as the same double ("1e-3", "0.25", "4.0").
std::string format_number(double value);

class Config {
 public:
  // The trainer's keys, in documentation order.
  static const std::vector<KeySpec>& general_keys();
  // The keys this config may hold now: the trainer's and those of the chosen components.
  std::vector<KeySpec> keys() const;

  // Applies a TOML document; `origin` (a file name) is named in errors. Unknown keys, wrong
  // types and out-of-range values throw UserError naming origin, key, value and what is allowed.
  // With `unknown`, keys that no component declares are collected there instead (the configs of
  // older checkpoints).
  void apply_toml(const std::string& toml_text, const std::string& origin,
                  std::map<std::string, std::string>* unknown = nullptr);
  void apply_toml_file(const std::string& path);
  // Applies one `section.key=value` override from the command line.
  void apply_override(const std::string& assignment);
  // Sets one key from its text form, validating it against every component that declares it.
  void set(const std::string& key, const std::string& value, const std::string& origin = "override");
  // Checks the config as a whole: the chosen components exist, and every key that was set
  // belongs to one of them (`method.name=fm method.ratio=0.5` is an error naming the key and
  // the method) with a value in that component's range. Throws UserError.
  void validate() const;
  // Forgets keys that the chosen components do not declare (configs of older checkpoints).
  void drop_inapplicable_keys();

  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  // A comma-separated list of integers, e.g. eval.nfe = "1,2,4" (may be empty where allowed).
  std::vector<int64_t> get_int_list(const std::string& key) const;

  // The resolved config as TOML, every key written out, with help texts as comments.
  std::string to_toml() const;

 private:
  struct Value {
    std::string text;    // canonical form
    std::string origin;  // file or "override", for errors
  };
  // The value of `key`: set, or the default of the component that declares it now.
  const std::string& text(const std::string& key) const;

  std::map<std::string, Value> values_;
};

}  // namespace onestep
