// IDX reader: whole-file read, in-memory gzip inflation through zlib (concatenated gzip
// members allowed), strict header and payload-length checks with one-line messages.
#include "onestep/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "onestep/core/error.h"

namespace onestep {
namespace {

// Largest payload (and largest decompressed file) accepted: 2 GiB.
constexpr uint64_t kMaxIdxBytes = uint64_t{1} << 31;
constexpr uint8_t kUnsignedByteType = 0x08;
constexpr int kMaxDims = 4;
// Largest file (or decompressed stream): the payload plus the longest header.
constexpr uint64_t kMaxFileBytes = kMaxIdxBytes + 4 + 4 * kMaxDims;

std::string hex(uint64_t value, int digits) {
  char text[32];
  std::snprintf(text, sizeof text, "0x%0*llX", digits, static_cast<unsigned long long>(value));
  return text;
}

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(path + ": cannot open file");
  std::error_code error;
  const auto size = std::filesystem::file_size(path, error);
  if (!error && size > kMaxFileBytes) {
    throw UserError(path + ": file larger than the 2 GiB limit (" + std::to_string(size) +
                    " bytes)");
  }
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  if (in.bad()) throw UserError(path + ": cannot read file");
  return bytes;
}

bool is_gzip(const std::vector<uint8_t>& bytes) {
  return bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
}

// Inflates the gzip stream `compressed` (one or more members), at most kMaxFileBytes.
std::vector<uint8_t> gunzip(const std::vector<uint8_t>& compressed, const std::string& path) {
  z_stream stream{};
  if (inflateInit2(&stream, 16 + MAX_WBITS) != Z_OK) {
    throw UserError(path + ": cannot initialise zlib");
  }
  std::vector<uint8_t> out;
  std::vector<uint8_t> chunk(1 << 20);
  stream.next_in = const_cast<Bytef*>(compressed.data());
  stream.avail_in = static_cast<uInt>(compressed.size());
  std::string error;
  for (;;) {
    stream.next_out = chunk.data();
    stream.avail_out = static_cast<uInt>(chunk.size());
    const int status = inflate(&stream, Z_NO_FLUSH);
    out.insert(out.end(), chunk.data(), chunk.data() + (chunk.size() - stream.avail_out));
    if (out.size() > kMaxFileBytes) {
      error = "decompressed data exceeds the 2 GiB limit";
      break;
    }
    if (status == Z_STREAM_END) {
      if (stream.avail_in == 0) break;
      inflateReset(&stream);  // another gzip member follows
      continue;
    }
    if (status == Z_BUF_ERROR && stream.avail_in == 0) {
      error = "truncated gzip stream (unexpected end of compressed data)";
      break;
    }
    if (status != Z_OK) {
      error = std::string("corrupt gzip data (zlib: ") + (stream.msg ? stream.msg : "error") + ")";
      break;
    }
  }
  inflateEnd(&stream);
  if (!error.empty()) throw UserError(path + ": " + error);
  return out;
}

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

const char* idx_type_name(uint8_t type) {
  switch (type) {
    case 0x09:
      return "signed byte";
    case 0x0B:
      return "16-bit integer";
    case 0x0C:
      return "32-bit integer";
    case 0x0D:
      return "float";
    case 0x0E:
      return "double";
    default:
      return nullptr;
  }
}

}  // namespace

torch::Tensor read_idx(const std::string& path) {
  std::vector<uint8_t> bytes = read_file_bytes(path);
  if (is_gzip(bytes)) bytes = gunzip(bytes, path);
  if (bytes.size() < 4) {
    throw UserError(path + ": too short for an IDX header (" + std::to_string(bytes.size()) +
                    " bytes)");
  }
  const uint32_t magic = read_be32(bytes.data());
  const uint8_t type = bytes[2];
  const int dims = bytes[3];
  if (bytes[0] == 0 && bytes[1] == 0 && idx_type_name(type) != nullptr) {
    throw UserError(path + ": unsupported IDX data type " + hex(type, 2) + " (" +
                    idx_type_name(type) + "); only " + hex(kUnsignedByteType, 2) +
                    " (unsigned byte) is supported");
  }
  if (bytes[0] != 0 || bytes[1] != 0 || type != kUnsignedByteType || dims < 1 || dims > kMaxDims) {
    throw UserError(path + ": bad magic number " + hex(magic, 8) +
                    " (expected 0x0000080N for unsigned-byte IDX, N = 1..4 dimensions)");
  }
  const uint64_t header = 4 + 4 * static_cast<uint64_t>(dims);
  if (bytes.size() < header) {
    throw UserError(path + ": truncated header: " + std::to_string(dims) + " dimensions need " +
                    std::to_string(header) + " bytes, found " + std::to_string(bytes.size()));
  }
  std::vector<int64_t> sizes;
  std::string shape;
  // The product of the non-zero sizes is bounded too: LibTorch cannot make even an empty tensor
  // whose other sizes multiply beyond int64 (e.g. 2^27 x 2^29 x 2^19 x 0).
  uint64_t nonzero_product = 1;
  bool empty = false;
  for (int i = 0; i < dims; ++i) {
    const uint32_t size = read_be32(bytes.data() + 4 + 4 * i);
    sizes.push_back(size);
    shape += (i ? " x " : "") + std::to_string(size);
    if (size == 0) empty = true;
    else nonzero_product = std::min(nonzero_product * size, kMaxIdxBytes + 1);  // both factors < 2^32: no overflow
  }
  if (nonzero_product > kMaxIdxBytes) {
    throw UserError(path + ": header sizes " + shape + " exceed the 2 GiB limit of data" +
                    (empty ? " (counting only the non-zero sizes)" : ""));
  }
  const uint64_t expected = empty ? 0 : nonzero_product;
  const uint64_t found = bytes.size() - header;
  if (found != expected) {
    throw UserError(path + ": " + (found < expected ? "truncated" : "trailing data") +
                    ": header promises " + std::to_string(expected) + " bytes of data, found " +
                    std::to_string(found));
  }
  torch::Tensor data = torch::empty(sizes, torch::kUInt8);
  if (expected > 0) std::memcpy(data.data_ptr<uint8_t>(), bytes.data() + header, expected);
  return data;
}

}  // namespace onestep
