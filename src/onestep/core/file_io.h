// File input and output shared by the format readers and writers. Atomic writing: the bytes
// go to a temporary file in the same folder, are flushed to disk, and the temporary file is
// renamed over the target, so readers see either the old file or the complete new one.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>

namespace onestep {

// Writes `bytes` to `path` atomically via `path + ".tmp.<pid>"`. On failure the temporary
// file is removed, an existing file at `path` is left untouched, and UserError is thrown
// naming the path and the system error.
void write_file_atomically(const std::string& path, const std::string& bytes);

// Reads exactly `count` bytes at `offset` of the open file `in` into `out`, or throws
// UserError naming `path` (a truncated file).
void read_bytes(std::ifstream& in, const std::string& path, int64_t offset, void* out, int64_t count);

// The whole content of `path`; throws UserError naming the path when it cannot be read.
std::string read_file(const std::string& path);

}  // namespace onestep
