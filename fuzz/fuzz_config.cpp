// Fuzzes the config: a TOML text (Config::apply_toml), then after a line "--" one
// Config::apply_override per line, then Config::validate and Config::to_toml.
#include "fuzz_support.h"
#include "onestep/core/config.h"

#include <map>
#include <sstream>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t separator = input.find("\n--\n");
  const std::string toml = input.substr(0, separator);
  const std::string overrides = separator == std::string::npos ? "" : input.substr(separator + 4);
  onestep::fuzz::expect_only_user_errors([&] {
    onestep::Config config;
    // Keys of networks and methods (not compiled into the fuzz targets) are collected here.
    std::map<std::string, std::string> unknown;
    config.apply_toml(toml, "fuzz.toml", &unknown);
    std::istringstream lines(overrides);
    for (std::string line; std::getline(lines, line);) config.apply_override(line);
    config.validate();
    config.to_toml();
  });
  return 0;
}
