// Helpers shared by the tests: a per-test temporary folder, raw file bytes, the message of an
// expected UserError, a seeded generator, substring search, running commands and the onestep binary, and
// the registered names of a section for tests that iterate a registry.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "onestep/core/error.h"
#include "onestep/core/registry.h"

namespace onestep::testing_support {

// A fresh folder under the test temp dir, removed at the end of the test.
class TempFolderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("onestep_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  std::filesystem::path dir_;
};

inline void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_raw(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The message of the UserError that `fn` throws; a test failure if it throws nothing.
inline std::string user_error_message(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const UserError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a UserError";
  return "";
}

inline torch::Generator seeded(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// The exit status and output (stdout and stderr together) of a shell command.
struct CommandResult {
  int status;
  std::string out;
};

inline CommandResult run_command(const std::string& command) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  std::string out;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof(buffer), pipe)) out.append(buffer, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// Runs the onestep binary with `args`.
inline CommandResult run_onestep(const std::string& args) { return run_command(std::string(ONESTEP_BINARY) + " " + args); }

// The component names registered in `section` ("method", "model", "data"), sorted.
inline std::vector<std::string> registered_names(const std::string& section) {
  std::vector<std::string> names;
  for (const auto* info : components(section)) names.push_back(info->name);
  return names;
}

// A test-parameter name for a component name: characters other than letters and digits become '_'.
inline std::string parameter_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return name;
}

}  // namespace onestep::testing_support
