// Safetensors reader and writer: bounds-checked header parsing, data read straight into
// freshly allocated tensors, atomic writes with a space-padded header.
#include "onestep/core/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <vector>

#include "onestep/core/file_io.h"
#include "onestep/core/error.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian; this code copies raw bytes");

namespace onestep {

namespace {

using nlohmann::json;

// Headers larger than this are rejected before allocating (same limit as the reference code).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DtypeInfo {
  const char* name;
  torch::ScalarType scalar_type;
  int64_t element_size;
};

const std::vector<DtypeInfo>& dtype_table() {
  static const std::vector<DtypeInfo> table = {
      {"F64", torch::kFloat64, 8}, {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
      {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8}, {"I32", torch::kInt32, 4},
      {"I16", torch::kInt16, 2},   {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
      {"BOOL", torch::kBool, 1},
  };
  return table;
}

const DtypeInfo* find_dtype(const std::string& name) {
  for (const DtypeInfo& info : dtype_table()) {
    if (name == info.name) return &info;
  }
  return nullptr;
}

const DtypeInfo* find_dtype(torch::ScalarType scalar_type) {
  for (const DtypeInfo& info : dtype_table()) {
    if (scalar_type == info.scalar_type) return &info;
  }
  return nullptr;
}

// Reads a JSON number that must be a non-negative integer fitting in int64.
bool json_to_size(const json& value, int64_t* out) {
  if (value.is_number_unsigned()) {
    const uint64_t v = value.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(v);
    return true;
  }
  if (value.is_number_integer()) {
    const int64_t v = value.get<int64_t>();
    if (v < 0) return false;
    *out = v;
    return true;
  }
  return false;
}

struct Entry {
  std::string name;
  const DtypeInfo* dtype;
  std::vector<int64_t> shape;
  int64_t begin;
  int64_t end;
};

Entry parse_entry(const std::string& path, const std::string& name, const json& value) {
  const std::string where = path + ": tensor '" + name + "': ";
  if (!value.is_object()) throw UserError(where + "header entry is not a JSON object");
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!value.contains(field)) throw UserError(where + "missing field '" + field + "'");
  }
  Entry entry;
  entry.name = name;

  const json& dtype = value.at("dtype");
  if (!dtype.is_string()) throw UserError(where + "'dtype' is not a string");
  entry.dtype = find_dtype(dtype.get<std::string>());
  if (entry.dtype == nullptr) {
    throw UserError(where + "unsupported dtype '" + dtype.get<std::string>() +
                    "' (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
  }

  const json& shape = value.at("shape");
  if (!shape.is_array()) throw UserError(where + "'shape' is not an array");
  int64_t numel = 1;
  bool numel_overflow = false;
  for (const json& dim : shape) {
    int64_t size = 0;
    if (!json_to_size(dim, &size)) {
      throw UserError(where + "shape " + shape.dump() + " has an invalid dimension " + dim.dump());
    }
    entry.shape.push_back(size);
    numel_overflow = numel_overflow || __builtin_mul_overflow(numel, size, &numel);
  }
  int64_t byte_count = 0;
  if (numel_overflow || __builtin_mul_overflow(numel, entry.dtype->element_size, &byte_count)) {
    // A zero dimension makes the product 0 even after an overflow of earlier dimensions.
    if (std::find(entry.shape.begin(), entry.shape.end(), 0) == entry.shape.end()) {
      throw UserError(where + "shape " + shape.dump() + " is too large");
    }
    byte_count = 0;
  }

  const json& offsets = value.at("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2 || !json_to_size(offsets[0], &entry.begin) ||
      !json_to_size(offsets[1], &entry.end)) {
    throw UserError(where + "'data_offsets' " + offsets.dump() +
                    " is not a pair of non-negative integers");
  }
  if (entry.begin > entry.end) {
    throw UserError(where + "data_offsets " + offsets.dump() + " has begin after end");
  }
  if (entry.end - entry.begin != byte_count) {
    throw UserError(where + "data_offsets " + offsets.dump() + " span " +
                    std::to_string(entry.end - entry.begin) + " bytes but dtype " +
                    entry.dtype->name + " with shape " + shape.dump() + " needs " +
                    std::to_string(byte_count));
  }
  return entry;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const json& value) {
  if (!value.is_object()) throw UserError(path + ": '__metadata__' is not a JSON object");
  std::map<std::string, std::string> metadata;
  for (const auto& item : value.items()) {
    if (!item.value().is_string()) {
      throw UserError(path + ": '__metadata__' value for '" + item.key() + "' is not a string");
    }
    metadata[item.key()] = item.value().get<std::string>();
  }
  return metadata;
}

}  // namespace

void write_safetensors(const std::string& path, const SafetensorsFile& file) {
  json header = json::object();
  if (!file.metadata.empty()) header["__metadata__"] = file.metadata;

  std::vector<torch::Tensor> contiguous;  // in name order, same as file.tensors
  int64_t offset = 0;
  for (const auto& [name, tensor] : file.tensors) {
    if (name == "__metadata__") {
      throw UserError(path + ": tensor name '__metadata__' is reserved by the format");
    }
    if (!tensor.defined()) throw UserError(path + ": tensor '" + name + "' is undefined");
    const DtypeInfo* dtype = find_dtype(tensor.scalar_type());
    if (dtype == nullptr) {
      throw UserError(path + ": tensor '" + name + "' has unsupported dtype " +
                      std::string(c10::toString(tensor.scalar_type())));
    }
    torch::Tensor cpu = tensor.detach().to(torch::kCPU).contiguous();
    const int64_t byte_count = cpu.numel() * dtype->element_size;
    header[name] = {{"dtype", dtype->name},
                    {"shape", cpu.sizes().vec()},
                    {"data_offsets", {offset, offset + byte_count}}};
    offset += byte_count;
    contiguous.push_back(std::move(cpu));
  }

  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const json::type_error&) {
    throw UserError(path + ": tensor names and metadata must be valid UTF-8");
  }
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  std::string bytes;
  bytes.reserve(8 + header_text.size() + static_cast<size_t>(offset));
  const uint64_t header_length = header_text.size();
  for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((header_length >> (8 * i)) & 0xff));
  bytes += header_text;
  for (const torch::Tensor& tensor : contiguous) {
    bytes.append(static_cast<const char*>(tensor.data_ptr()),
                 static_cast<size_t>(tensor.numel() * tensor.element_size()));
  }
  write_file_atomically(path, bytes);
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(path + ": cannot open (" + std::strerror(errno) + ")");
  in.seekg(0, std::ios::end);
  const int64_t file_size = static_cast<int64_t>(in.tellg());
  if (!in || file_size < 0) throw UserError(path + ": cannot determine the file size");
  if (file_size < 8) {
    throw UserError(path + ": file is " + std::to_string(file_size) +
                    " bytes, too short for the 8-byte header length");
  }

  unsigned char length_bytes[8];
  read_bytes(in, path, 0, length_bytes, 8);
  uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | length_bytes[i];
  if (header_length > static_cast<uint64_t>(file_size - 8)) {
    throw UserError(path + ": header length " + std::to_string(header_length) +
                    " exceeds file size " + std::to_string(file_size));
  }
  if (header_length > kMaxHeaderBytes) {
    throw UserError(path + ": header length " + std::to_string(header_length) +
                    " exceeds the limit of " + std::to_string(kMaxHeaderBytes) + " bytes");
  }
  std::string header_text(header_length, '\0');
  read_bytes(in, path, 8, header_text.data(), static_cast<int64_t>(header_length));

  const json header = json::parse(header_text, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) throw UserError(path + ": header is not valid JSON");
  if (!header.is_object()) throw UserError(path + ": header is not a JSON object");

  SafetensorsFile result;
  std::vector<Entry> entries;
  for (const auto& item : header.items()) {
    if (item.key() == "__metadata__") {
      result.metadata = parse_metadata(path, item.value());
    } else {
      entries.push_back(parse_entry(path, item.key(), item.value()));
    }
  }

  // The tensors must tile the data section exactly: no gaps, no overlaps, nothing beyond.
  const int64_t data_start = 8 + static_cast<int64_t>(header_length);
  const int64_t data_size = file_size - data_start;
  std::vector<const Entry*> by_offset;
  for (const Entry& entry : entries) by_offset.push_back(&entry);
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  int64_t covered = 0;
  for (const Entry* entry : by_offset) {
    if (entry->end > data_size) {
      throw UserError(path + ": tensor '" + entry->name + "': data_offsets [" +
                      std::to_string(entry->begin) + "," + std::to_string(entry->end) +
                      "] beyond the data section of " + std::to_string(data_size) + " bytes");
    }
    if (entry->begin != covered) {
      throw UserError(path + ": tensor '" + entry->name + "': data_offsets begin at " +
                      std::to_string(entry->begin) + " but the previous tensor ends at " +
                      std::to_string(covered) +
                      (entry->begin < covered ? " (overlap)" : " (gap)"));
    }
    covered = entry->end;
  }
  if (covered != data_size) {
    throw UserError(path + ": tensors cover " + std::to_string(covered) +
                    " bytes but the data section has " + std::to_string(data_size));
  }

  for (const Entry& entry : entries) {
    torch::Tensor tensor =
        torch::empty(entry.shape, torch::TensorOptions().dtype(entry.dtype->scalar_type));
    if (entry.end > entry.begin) {
      read_bytes(in, path, data_start + entry.begin, tensor.data_ptr(), entry.end - entry.begin);
    }
    result.tensors.emplace(entry.name, std::move(tensor));
  }
  return result;
}

}  // namespace onestep
