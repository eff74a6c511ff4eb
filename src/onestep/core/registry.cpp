// The catalogue behind every component registry (see registry.h).
#include "onestep/core/registry.h"

#include <algorithm>
#include <memory>

#include "onestep/core/error.h"

namespace onestep {
namespace {

std::vector<std::unique_ptr<ComponentInfo>>& catalogue() {
  static std::vector<std::unique_ptr<ComponentInfo>> all;
  return all;
}

bool selects(const ComponentInfo& info, const std::string& value) {
  if (!info.name.empty() && info.name.back() == ':') return value.rfind(info.name, 0) == 0 && value.size() > info.name.size();
  return value == info.name;
}

}  // namespace

void register_component(ComponentInfo info) {
  if (info.usage.empty()) info.usage = info.name;
  catalogue().push_back(std::make_unique<ComponentInfo>(std::move(info)));
}

std::vector<const ComponentInfo*> components(const std::string& section) {
  std::vector<const ComponentInfo*> out;
  for (const auto& info : catalogue())
    if (info->section == section) out.push_back(info.get());
  std::sort(out.begin(), out.end(), [](const ComponentInfo* a, const ComponentInfo* b) { return a->name < b->name; });
  return out;
}

const ComponentInfo* find_component(const std::string& section, const std::string& value) {
  for (const auto* info : components(section))
    if (selects(*info, value)) return info;
  return nullptr;
}

std::string component_usages(const std::string& section) {
  std::string known;
  for (const auto* info : components(section)) known += (known.empty() ? "" : ", ") + info->usage;
  return known;
}

const ComponentInfo& chosen_component(const std::string& section, const std::string& value) {
  if (const auto* info = find_component(section, value)) return *info;
  static const std::map<std::string, std::string> kinds = {{"data", "dataset"}, {"model", "network"}, {"method", "method"}};
  const auto kind = kinds.count(section) ? kinds.at(section) : section;
  throw UserError("config: key '" + section + ".name' = '" + value + "': unknown " + kind + "; known: " +
                  component_usages(section));
}

}  // namespace onestep
