// Shared by the fuzz targets: the rule that every rejected input ends as a UserError (any other
// exception aborts, so that libFuzzer reports it with the input), and per-process temporary
// files for loaders that read from a path.
#pragma once

#include <torch/torch.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "onestep/core/error.h"

namespace onestep::fuzz {

// Runs `load`: returning or throwing UserError is accepted; any other exception is a bug.
template <class Load>
void expect_only_user_errors(Load&& load) {
  try {
    load();
  } catch (const UserError&) {
    // The expected rejection of a malformed input.
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz: exception other than UserError escaped: %s\n", e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "fuzz: non-standard exception escaped\n");
    std::abort();
  }
}

// A path in the temporary folder, unique to this process: "onestep-fuzz-<pid>-<name>".
inline std::filesystem::path temp_path(const std::string& name) {
  return std::filesystem::temp_directory_path() /
         ("onestep-fuzz-" + std::to_string(getpid()) + "-" + name);
}

inline void write_bytes(const std::filesystem::path& path, const uint8_t* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) {
    std::fprintf(stderr, "fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
}

}  // namespace onestep::fuzz

// One intra-op thread: the loaders' tensor work is small, and runs stay reproducible.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  torch::set_num_threads(1);
  return 0;
}
