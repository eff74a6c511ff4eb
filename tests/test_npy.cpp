// Tests for the .npy reader/writer: round trips, the exact header bytes of the NumPy format
// (version 1.0, 64-byte aligned data), reading files written by other tools, and rejections.
#include <gtest/gtest.h>

#include "test_support.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>

#include "onestep/core/error.h"
#include "onestep/core/npy.h"

namespace fs = std::filesystem;

namespace onestep {
namespace {

using testing_support::read_raw;
using testing_support::write_raw;

class NpyTest : public testing_support::TempFolderTest {
 protected:

};

// A version 1.0 (or `major`.0) .npy file with the given header dict and raw data.
std::string make_npy(const std::string& dict, const std::string& data, int major = 1,
                     size_t alignment = 16) {
  const size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  while ((prefix + header.size() + 1) % alignment != 0) header += ' ';
  header += '\n';
  std::string bytes = "\x93NUMPY";
  bytes += static_cast<char>(major);
  bytes += '\0';
  const size_t length_bytes = major == 1 ? 2 : 4;
  for (size_t i = 0; i < length_bytes; ++i) {
    bytes += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  }
  return bytes + header + data;
}

std::string float_bytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

void expect_user_error(const std::function<void()>& action, const std::string& file,
                       const std::string& problem) {
  try {
    action();
    ADD_FAILURE() << "expected UserError mentioning '" << problem << "'";
  } catch (const UserError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find(file), std::string::npos) << message;
    EXPECT_NE(message.find(problem), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

TEST_F(NpyTest, RoundTripsShapes) {
  const std::vector<torch::Tensor> tensors = {
      torch::randn({3, 4}), torch::randn({5}), torch::tensor(2.5f), torch::zeros({2, 0, 3}),
      torch::randn({2, 3, 4, 5})};
  for (size_t i = 0; i < tensors.size(); ++i) {
    const std::string p = path("a" + std::to_string(i) + ".npy");
    write_npy(p, tensors[i]);
    const torch::Tensor loaded = read_npy(p);
    EXPECT_EQ(loaded.scalar_type(), torch::kFloat32);
    EXPECT_EQ(loaded.sizes(), tensors[i].sizes());
    EXPECT_TRUE(torch::equal(loaded, tensors[i])) << i;
  }
}

TEST_F(NpyTest, ConvertsToContiguousFloat32) {
  const torch::Tensor doubles = torch::arange(6, torch::kFloat64).reshape({2, 3});
  write_npy(path("t.npy"), doubles.t());
  const torch::Tensor loaded = read_npy(path("t.npy"));
  EXPECT_TRUE(torch::equal(loaded, doubles.t().to(torch::kFloat32)));
}

TEST_F(NpyTest, HeaderBytesFollowTheSpec) {
  const std::vector<std::pair<torch::Tensor, std::string>> cases = {
      {torch::zeros({3, 4}), "(3, 4)"}, {torch::zeros({5}), "(5,)"}, {torch::tensor(1.0f), "()"}};
  for (const auto& [tensor, shape] : cases) {
    SCOPED_TRACE(shape);
    write_npy(path("h.npy"), tensor);
    const std::string bytes = read_raw(path("h.npy"));
    ASSERT_GE(bytes.size(), 10u);
    EXPECT_EQ(bytes.substr(0, 6), "\x93NUMPY");
    EXPECT_EQ(bytes[6], '\x01');
    EXPECT_EQ(bytes[7], '\x00');
    const size_t header_length =
        static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    const size_t data_offset = 10 + header_length;
    EXPECT_EQ(data_offset % 64, 0u);
    ASSERT_EQ(bytes.size(), data_offset + tensor.numel() * 4);
    const std::string header = bytes.substr(10, header_length);
    const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
    EXPECT_EQ(header.substr(0, dict.size()), dict);
    EXPECT_EQ(header.back(), '\n');
    EXPECT_EQ(header.find_first_not_of(' ', dict.size()), header_length - 1);
  }
  write_npy(path("v.npy"), torch::tensor({1.5f, -2.0f}));
  const std::string bytes = read_raw(path("v.npy"));
  EXPECT_EQ(bytes.substr(bytes.size() - 8), float_bytes({1.5f, -2.0f}));
}

TEST_F(NpyTest, ReadsFilesFromOtherWriters) {
  // numpy < 1.14 style: 16-byte alignment, extra spaces, no trailing comma.
  write_raw(path("a.npy"),
            make_npy("{'descr':'<f4','fortran_order':False,'shape':(2, 2)}",
                     float_bytes({1, 2, 3, 4})));
  EXPECT_TRUE(torch::equal(read_npy(path("a.npy")), torch::tensor({1.f, 2.f, 3.f, 4.f}).reshape({2, 2})));

  // float64 data becomes float32; key order does not matter.
  const std::vector<double> doubles = {0.5, -1.25, 3.0};
  write_raw(path("b.npy"),
            make_npy("{'shape': (3,), 'fortran_order': False, 'descr': '<f8', }",
                     std::string(reinterpret_cast<const char*>(doubles.data()), 24)));
  const torch::Tensor b = read_npy(path("b.npy"));
  EXPECT_EQ(b.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(b, torch::tensor({0.5f, -1.25f, 3.0f})));

  // Version 2.0 with a 4-byte header length, Python 2 long suffix.
  write_raw(path("c.npy"), make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1L, 2L), }",
                                    float_bytes({7, 8}), 2, 64));
  EXPECT_TRUE(torch::equal(read_npy(path("c.npy")), torch::tensor({{7.f, 8.f}})));
}

TEST_F(NpyTest, RejectsMalformedFiles) {
  const std::string p = path("bad.npy");
  const std::string ok_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\x93NUM", "only 4 bytes"},
      {"PK\x03\x04 not numpy at all", "magic"},
      {make_npy(ok_dict, float_bytes({1})), "data is 4 bytes but shape (2,) of <f4 needs 8"},
      {make_npy(ok_dict, float_bytes({1, 2, 3})), "needs 8"},
      {make_npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }", std::string(8, '\0')),
       "dtype '<i8' not supported"},
      {make_npy("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", std::string(4, '\0')),
       "dtype '>f4' not supported"},
      {make_npy("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", std::string(4, '\0')),
       "Fortran-order"},
      {make_npy("{'descr': '<f4', 'shape': (1,), }", std::string(4, '\0')), "missing one of"},
      {make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", ""),
       "non-negative integer"},
      {make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", ""),
       "too large"},
      {make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }", ""),
       "more than 2^63"},
      {make_npy("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,), }", ""), "True or False"},
      {make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}", ""),
       "unexpected or repeated key 'extra'"},
      {make_npy("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", ""),
       "repeated key 'descr'"},
      {make_npy("{'descr': '<f4", ""), "unterminated string"},
      {make_npy(ok_dict + " junk", float_bytes({1, 2})), "trailing characters"},
      {make_npy(ok_dict, float_bytes({1, 2}), 4), "unsupported .npy format version 4.0"},
      {std::string("\x93NUMPY\x01\x00\xff\x7f", 10) + "{}", "header length 32767 exceeds file size 12"},
  };
  for (const auto& [bytes, problem] : cases) {
    SCOPED_TRACE(problem);
    write_raw(p, bytes);
    expect_user_error([&] { read_npy(p); }, p, problem);
  }
  expect_user_error([&] { read_npy(path("missing.npy")); }, path("missing.npy"), "cannot open");
  EXPECT_THROW(read_npy(dir_.string()), UserError);
}

TEST_F(NpyTest, FailedWriteThrowsAndLeavesNothing) {
  const std::string p = path("no_such_dir/x.npy");
  expect_user_error([&] { write_npy(p, torch::zeros({2})); }, p, "cannot write");
  EXPECT_TRUE(fs::is_empty(dir_));
}

}  // namespace
}  // namespace onestep
