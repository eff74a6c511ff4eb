// Component registries. Every dataset, network and method registers itself from its own source
// file: a name, how a config names it, a one-line description, its config keys (each with its
// default, range and meaning, declared next to its options struct) and a factory. The config
// validates keys against the chosen component, and `onestep info`, the README key check, the
// "known: ..." messages and the registry-driven tests all read these lists.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "onestep/core/config.h"

namespace onestep {

struct ComponentInfo {
  std::string section;      // "data", "model" or "method": chosen by the key `<section>.name`
  std::string name;         // "mlp"; a name ending in ':' is a prefix ("points:" selects "points:a.csv")
  std::string usage;        // how a config names it, e.g. "points:PATH.csv" (default: name)
  std::string description;  // one line
  std::vector<KeySpec> keys;
};

// Adds a component to the catalogue of its section (called by Registry::add).
void register_component(ComponentInfo info);
// The components of a section, sorted by name.
std::vector<const ComponentInfo*> components(const std::string& section);
// The component that `value` (the value of `<section>.name`) selects; nullptr when none does.
const ComponentInfo* find_component(const std::string& section, const std::string& value);
// As find_component, but throws UserError naming the key, the value and the known names.
const ComponentInfo& chosen_component(const std::string& section, const std::string& value);
// "a, b, c": the usages of a section's components, for messages.
std::string component_usages(const std::string& section);

// A registry of factories of one kind (one per Factory type): components add themselves with a
// static `[[maybe_unused]] const bool registered = Registry<F>::instance().add(...)`.
template <class Factory>
class Registry {
 public:
  static Registry& instance() {
    static Registry registry;
    return registry;
  }
  bool add(ComponentInfo info, Factory factory) {
    factories_[info.section + "." + info.name] = std::move(factory);
    register_component(std::move(info));
    return true;
  }
  // The factory of the component that `value` selects; UserError for an unknown name.
  const Factory& get(const std::string& section, const std::string& value) const {
    const ComponentInfo& info = chosen_component(section, value);
    return factories_.at(info.section + "." + info.name);
  }

 private:
  std::map<std::string, Factory> factories_;
};

}  // namespace onestep
