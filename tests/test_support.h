// Helpers shared by the tests: a per-test temporary folder, raw file bytes, the message of an
// expected UserError, a seeded generator and substring search.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>
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

// The names of every registered method (tests parameterised over the registry).
inline std::vector<std::string> registered_methods() {
  std::vector<std::string> names;
  for (const auto* info : components("method")) names.push_back(info->name);
  return names;
}

}  // namespace onestep::testing_support
