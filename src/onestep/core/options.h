// The config keys of one component, declared next to its options struct. Each key binds one
// field; its default is that field's value in a default-constructed struct, so every default
// exists once, and `read` fills a struct from a config. Components hand `keys()` to their
// registry (core/registry.h).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "onestep/core/config.h"

namespace onestep {

template <class Options>
class OptionSchema {
 public:
  explicit OptionSchema(std::string section)
      : section_(std::move(section)), defaults_(std::make_shared<const Options>()) {}

  OptionSchema& add(const std::string& name, int64_t Options::*field, double min, double max, std::string help) {
    return bind({key(name), ValueType::Int, std::to_string((*defaults_).*field), std::move(help), {}, min, max},
                [field, k = key(name)](Options& o, const Config& c) { o.*field = c.get_int(k); });
  }
  OptionSchema& add(const std::string& name, double Options::*field, double min, double max, std::string help) {
    return bind({key(name), ValueType::Float, format_number((*defaults_).*field), std::move(help), {}, min, max},
                [field, k = key(name)](Options& o, const Config& c) { o.*field = c.get_float(k); });
  }
  OptionSchema& add(const std::string& name, bool Options::*field, std::string help) {
    return bind({key(name), ValueType::Bool, (*defaults_).*field ? "true" : "false", std::move(help), {}},
                [field, k = key(name)](Options& o, const Config& c) { o.*field = c.get_bool(k); });
  }
  // A string; `choices` lists the allowed values (empty: any).
  OptionSchema& add(const std::string& name, std::string Options::*field, std::vector<std::string> choices,
                    std::string help) {
    return bind({key(name), ValueType::String, (*defaults_).*field, std::move(help), std::move(choices)},
                [field, k = key(name)](Options& o, const Config& c) { o.*field = c.get_string(k); });
  }
  // A comma-separated list of integers, each in [min, max] (empty allowed when min <= 0).
  OptionSchema& add(const std::string& name, std::vector<int64_t> Options::*field, double min, double max,
                    std::string help) {
    std::string text;
    for (const int64_t v : (*defaults_).*field) text += (text.empty() ? "" : ",") + std::to_string(v);
    return bind({key(name), ValueType::IntList, text, std::move(help), {}, min, max},
                [field, k = key(name)](Options& o, const Config& c) { o.*field = c.get_int_list(k); });
  }
  // The keys of a nested options struct (e.g. a time sampler inside a method's options).
  template <class Sub>
  OptionSchema& include(Sub Options::*member, const OptionSchema<Sub>& sub) {
    for (const auto& spec : sub.keys()) keys_.push_back(spec);
    readers_.push_back([member, sub](Options& o, const Config& c) { o.*member = sub.read(c); });
    return *this;
  }

  const std::vector<KeySpec>& keys() const { return keys_; }
  Options read(const Config& config) const {
    Options options;
    for (const auto& reader : readers_) reader(options, config);
    return options;
  }

 private:
  std::string key(const std::string& name) const { return section_ + "." + name; }
  OptionSchema& bind(KeySpec spec, std::function<void(Options&, const Config&)> reader) {
    keys_.push_back(std::move(spec));
    readers_.push_back(std::move(reader));
    return *this;
  }

  std::string section_;
  std::shared_ptr<const Options> defaults_;  // a default-constructed struct: the defaults
  std::vector<KeySpec> keys_;
  std::vector<std::function<void(Options&, const Config&)>> readers_;
};

}  // namespace onestep
