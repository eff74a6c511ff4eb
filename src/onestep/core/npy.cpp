// NumPy .npy reader and writer: writes version 1.0 float32 files with the header padded so
// the data starts at a multiple of 64 bytes; reads little-endian float32/float64 C-order
// files (versions 1.0, 2.0, 3.0) with a small parser for the header's Python dict literal.
#include "onestep/core/npy.h"

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <vector>

#include "onestep/core/file_io.h"
#include "onestep/core/error.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "npy data is read and written as little-endian raw bytes");

namespace onestep {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;
constexpr int64_t kMaxHeaderBytes = 1 << 20;
constexpr size_t kHeaderAlignment = 64;

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(shape[i]);
  }
  if (shape.size() == 1) text += ",";
  return text + ")";
}

// Parses the header dict, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }.
class HeaderParser {
 public:
  HeaderParser(const std::string& path, const std::string& text) : path_(path), text_(text) {}

  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;

  void parse() {
    bool seen_descr = false, seen_order = false, seen_shape = false;
    expect('{');
    while (!consume('}')) {
      const std::string key = parse_string();
      expect(':');
      if (key == "descr" && !seen_descr) {
        descr = parse_string();
        seen_descr = true;
      } else if (key == "fortran_order" && !seen_order) {
        fortran_order = parse_bool();
        seen_order = true;
      } else if (key == "shape" && !seen_shape) {
        shape = parse_shape();
        seen_shape = true;
      } else {
        fail("unexpected or repeated key '" + key + "'");
      }
      if (!consume(',')) {
        expect('}');
        break;
      }
    }
    skip_space();
    if (pos_ != text_.size()) fail("trailing characters after the dict");
    if (!seen_descr || !seen_order || !seen_shape) {
      fail("missing one of the keys 'descr', 'fortran_order', 'shape'");
    }
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const {
    throw UserError(path_ + ": bad .npy header: " + problem);
  }

  void skip_space() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }

  bool consume(char c) {
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  void expect(char c) {
    if (!consume(c)) fail(std::string("expected '") + c + "' at offset " + std::to_string(pos_));
  }

  std::string parse_string() {
    skip_space();
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"')) {
      fail("expected a quoted string at offset " + std::to_string(pos_));
    }
    const char quote = text_[pos_++];
    const size_t end = text_.find(quote, pos_);
    if (end == std::string::npos) fail("unterminated string");
    std::string value = text_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return value;
  }

  bool parse_bool() {
    skip_space();
    for (const auto& [word, value] : {std::pair<const char*, bool>{"True", true}, {"False", false}}) {
      const size_t length = std::strlen(word);
      if (text_.compare(pos_, length, word) == 0) {
        pos_ += length;
        return value;
      }
    }
    fail("expected True or False at offset " + std::to_string(pos_));
  }

  std::vector<int64_t> parse_shape() {
    std::vector<int64_t> dims;
    expect('(');
    while (!consume(')')) {
      skip_space();
      if (pos_ >= text_.size() || !std::isdigit(static_cast<unsigned char>(text_[pos_]))) {
        fail("expected a non-negative integer in the shape at offset " + std::to_string(pos_));
      }
      int64_t dim = 0;
      while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) {
        if (__builtin_mul_overflow(dim, 10, &dim) ||
            __builtin_add_overflow(dim, text_[pos_] - '0', &dim)) {
          fail("shape dimension too large");
        }
        ++pos_;
      }
      if (pos_ < text_.size() && text_[pos_] == 'L') ++pos_;  // Python 2 long suffix
      dims.push_back(dim);
      if (!consume(',')) {
        expect(')');
        break;
      }
    }
    return dims;
  }

  const std::string& path_;
  const std::string& text_;
  size_t pos_ = 0;
};

}  // namespace

void write_npy(const std::string& path, const torch::Tensor& tensor) {
  const torch::Tensor data = tensor.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " +
                       shape_text(data.sizes().vec()) + ", }";
  const size_t prefix_size = kMagicSize + 2 + 2;  // magic, version, header length
  const size_t unpadded = prefix_size + header.size() + 1;  // + final newline
  header.append((kHeaderAlignment - unpadded % kHeaderAlignment) % kHeaderAlignment, ' ');
  header += '\n';
  if (header.size() > std::numeric_limits<uint16_t>::max()) {
    throw UserError(path + ": array has too many dimensions for a version 1.0 .npy header");
  }

  std::string bytes(kMagic, kMagicSize);
  bytes += '\x01';
  bytes += '\x00';
  bytes += static_cast<char>(header.size() & 0xff);
  bytes += static_cast<char>(header.size() >> 8);
  bytes += header;
  bytes.append(static_cast<const char*>(data.data_ptr()),
               static_cast<size_t>(data.numel()) * sizeof(float));
  write_file_atomically(path, bytes);
}

torch::Tensor read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(path + ": cannot open (" + std::strerror(errno) + ")");
  in.seekg(0, std::ios::end);
  const int64_t file_size = static_cast<int64_t>(in.tellg());
  if (!in || file_size < 0) throw UserError(path + ": cannot determine the file size");

  unsigned char prefix[12];
  if (file_size < 10) throw UserError(path + ": not a .npy file (only " +
                                      std::to_string(file_size) + " bytes)");
  read_bytes(in, path, 0, prefix, 10);
  if (std::memcmp(prefix, kMagic, kMagicSize) != 0) {
    throw UserError(path + ": not a .npy file (missing the \\x93NUMPY magic)");
  }
  const int major = prefix[6];
  int64_t prefix_size = 0;
  int64_t header_length = 0;
  if (major == 1) {
    prefix_size = 10;
    header_length = prefix[8] | (prefix[9] << 8);
  } else if (major == 2 || major == 3) {
    prefix_size = 12;
    if (file_size < prefix_size) throw UserError(path + ": .npy file truncated in its header");
    read_bytes(in, path, 0, prefix, 12);
    header_length = static_cast<int64_t>(prefix[8]) | (static_cast<int64_t>(prefix[9]) << 8) |
                    (static_cast<int64_t>(prefix[10]) << 16) |
                    (static_cast<int64_t>(prefix[11]) << 24);
  } else {
    throw UserError(path + ": unsupported .npy format version " + std::to_string(major) + "." +
                    std::to_string(prefix[7]));
  }
  if (header_length > file_size - prefix_size) {
    throw UserError(path + ": .npy header length " + std::to_string(header_length) +
                    " exceeds file size " + std::to_string(file_size));
  }
  if (header_length > kMaxHeaderBytes) {
    throw UserError(path + ": .npy header length " + std::to_string(header_length) +
                    " is implausibly large");
  }
  std::string header(static_cast<size_t>(header_length), '\0');
  read_bytes(in, path, prefix_size, header.data(), header_length);

  HeaderParser parser(path, header);
  parser.parse();
  if (parser.descr != "<f4" && parser.descr != "<f8") {
    throw UserError(path + ": .npy dtype '" + parser.descr +
                    "' not supported (expected little-endian float32 '<f4' or float64 '<f8')");
  }
  if (parser.fortran_order) {
    throw UserError(path + ": Fortran-order .npy arrays are not supported (save in C order)");
  }
  const bool is_double = parser.descr == "<f8";
  const int64_t item_size = is_double ? 8 : 4;
  int64_t expected_bytes = item_size;
  for (int64_t dim : parser.shape) {
    if (__builtin_mul_overflow(expected_bytes, dim, &expected_bytes)) {
      expected_bytes = -1;  // too large for any file, unless another dimension is 0
      break;
    }
  }
  for (int64_t dim : parser.shape) {
    if (dim == 0) expected_bytes = 0;
  }
  const int64_t data_offset = prefix_size + header_length;
  const int64_t data_bytes = file_size - data_offset;
  if (data_bytes != expected_bytes) {
    throw UserError(path + ": .npy data is " + std::to_string(data_bytes) + " bytes but shape " +
                    shape_text(parser.shape) + " of " + parser.descr + " needs " +
                    (expected_bytes < 0 ? "more than 2^63" : std::to_string(expected_bytes)));
  }
  torch::Tensor result =
      torch::empty(parser.shape, is_double ? torch::kFloat64 : torch::kFloat32);
  if (data_bytes > 0) read_bytes(in, path, data_offset, result.data_ptr(), data_bytes);
  return is_double ? result.to(torch::kFloat32) : result;
}

}  // namespace onestep
