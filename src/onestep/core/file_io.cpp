// File I/O helpers (see file_io.h): atomic writes (temporary file, fflush + fsync, rename) and
// bounds-checked reads.
#include "onestep/core/file_io.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iterator>

#include "onestep/core/error.h"

namespace onestep {

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& temp_path, const char* what,
                       int error_number) {
  std::remove(temp_path.c_str());
  throw UserError(path + ": cannot write file (" + what + ": " + std::strerror(error_number) +
                  ")");
}

}  // namespace

void write_file_atomically(const std::string& path, const std::string& bytes) {
  const std::string temp_path = path + ".tmp." + std::to_string(::getpid());
  std::FILE* file = std::fopen(temp_path.c_str(), "wb");
  if (file == nullptr) {
    // Nothing was created, but remove() on a missing file is harmless.
    fail(path, temp_path, "open", errno);
  }
  if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), file) != bytes.size()) {
    const int error_number = errno;
    std::fclose(file);
    fail(path, temp_path, "write", error_number);
  }
  if (std::fflush(file) != 0 || ::fsync(::fileno(file)) != 0) {
    const int error_number = errno;
    std::fclose(file);
    fail(path, temp_path, "flush", error_number);
  }
  if (std::fclose(file) != 0) {
    fail(path, temp_path, "close", errno);
  }
  if (std::rename(temp_path.c_str(), path.c_str()) != 0) {
    fail(path, temp_path, "rename", errno);
  }
}

void read_bytes(std::ifstream& in, const std::string& path, int64_t offset, void* out, int64_t count) {
  in.seekg(offset);
  in.read(static_cast<char*>(out), count);
  if (!in || in.gcount() != count) {
    throw UserError(path + ": read of " + std::to_string(count) + " bytes at offset " + std::to_string(offset) +
                    " failed (file truncated?)");
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(path + ": cannot open file");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw UserError(path + ": read error");
  return bytes;
}

}  // namespace onestep
