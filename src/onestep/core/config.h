// Config: the one configuration of a run, sections [data] [model] [method] [train] [eval].
// Every key is declared once in the schema (config.cpp) with its type, default, allowed
// values and help text; a TOML file and `key=value` overrides are checked against it, and the
// fully resolved config (every default written out) is written back as TOML.
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

class Config {
 public:
  // A config holding every default.
  Config();

  // The schema: every key a config may hold, in documentation order.
  static const std::vector<KeySpec>& schema();

  // Applies a TOML document; `origin` (a file name) is named in errors. Unknown keys, wrong
  // types and out-of-range values throw UserError naming origin, key, value and what is allowed.
  void apply_toml(const std::string& toml_text, const std::string& origin);
  void apply_toml_file(const std::string& path);
  // Applies one `section.key=value` override from the command line.
  void apply_override(const std::string& assignment);
  // Sets one key from its text form, validating it.
  void set(const std::string& key, const std::string& value, const std::string& origin = "override");

  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  // A comma-separated list of integers, e.g. eval.nfe = "1,2,4" (may be empty where allowed).
  std::vector<int64_t> get_int_list(const std::string& key) const;

  // The resolved config as TOML, every key written out, with help texts as comments.
  std::string to_toml() const;

 private:
  std::map<std::string, std::string> values_;
};

}  // namespace onestep
