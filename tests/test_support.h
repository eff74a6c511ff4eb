// Helpers shared by the tests: a per-test temporary folder, raw file bytes, the message of an
// expected UserError, a seeded generator, substring search, running commands and the onestep
// binary, child processes of it that a test can signal, the registered names of a section
// for tests that iterate a registry, and a stand-in generator network with a fixed output.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "onestep/core/config.h"
#include "onestep/core/error.h"
#include "onestep/core/registry.h"
#include "onestep/methods/method.h"

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

// The "loss" of every metrics.jsonl record of a run, in order.
inline std::vector<double> losses(const std::string& metrics_path) {
  std::vector<double> out;
  std::ifstream in(metrics_path);
  for (std::string line; std::getline(in, line);) {
    const auto record = nlohmann::json::parse(line);
    if (record.contains("loss")) out.push_back(record["loss"].get<double>());
  }
  return out;
}

// The overrides that choose `method`: "method.name=M", and "model.name=N " when the method
// needs a particular network (Method::required_network), each followed by a space.
inline std::string method_overrides(const std::string& method) {
  Config config;
  config.apply_override("method.name=" + method);
  const std::string network = make_method(config)->required_network();
  return "method.name=" + method + " " + (network.empty() ? "" : "model.name=" + network + " ");
}

// Applies method_overrides(method) to `config`.
inline void choose_method(Config& config, const std::string& method) {
  std::istringstream overrides(method_overrides(method));
  for (std::string o; overrides >> o;) config.apply_override(o);
}

// A test-parameter name for a component name: characters other than letters and digits become '_'.
inline std::string parameter_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return name;
}

// The `onestep` binary started with `args` (split at spaces) and the `env` assignments added to
// the environment, its stdout and stderr into `log_path`.
inline pid_t spawn_onestep(const std::string& args, const std::vector<std::pair<std::string, std::string>>& env,
                           const std::string& log_path) {
  std::vector<std::string> words = {ONESTEP_BINARY};
  std::istringstream in(args);
  for (std::string word; in >> word;) words.push_back(word);
  const pid_t pid = fork();
  if (pid == 0) {
    for (const auto& [name, value] : env) setenv(name.c_str(), value.c_str(), 1);
    const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<char*> argv;
    for (auto& word : words) argv.push_back(word.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// The exit status of `pid` (128 + signal number when a signal ended it), or -1 when it is still
// running after `limit` (it is then killed).
inline int wait_for_exit(pid_t pid, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Waits until the file at `path` has at least `lines` lines (false after `limit`).
inline bool wait_for_lines(const std::string& path, size_t lines, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream in(path);
    size_t count = 0;
    for (std::string line; std::getline(in, line);) ++count;
    if (count >= lines) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// A "network" whose output is a trainable tensor (N x 2 points, or N x C x H x W images),
// whatever its input: a drifting generator whose samples a test sets.
struct FixedOutput : NetworkImpl {
  explicit FixedOutput(torch::Tensor value, int64_t num_classes = 0) : NetworkImpl({{32}, {2}, num_classes}) {
    out = register_parameter("out", std::move(value));
  }
  torch::Tensor forward(const NetInput&) override { return out; }
  std::vector<torch::Tensor> output_parameters() override { return {}; }
  torch::Tensor out;
};

}  // namespace onestep::testing_support
