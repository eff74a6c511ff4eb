// Tests for the safetensors reader/writer and the atomic file helper: round trips, the exact
// on-disk layout, rejection of malformed files, and atomic-write guarantees.
#include <gtest/gtest.h>

#include "test_support.h"
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>

#include "onestep/core/file_io.h"
#include "onestep/core/error.h"
#include "onestep/core/safetensors.h"

namespace fs = std::filesystem;

namespace onestep {
namespace {

using testing_support::read_raw;
using testing_support::write_raw;

class SafetensorsTest : public testing_support::TempFolderTest {
 protected:

  // A safetensors file with the given header text (unpadded) and data section.
  static std::string make_file(const std::string& header, const std::string& data) {
    std::string bytes;
    for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xff));
    return bytes + header + data;
  }

  std::vector<std::string> dir_entries() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir_)) {
      names.push_back(entry.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

};

// Runs `action`, expecting a UserError whose message names `file` and contains `problem`.
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

TEST_F(SafetensorsTest, RoundTripsDtypesShapesAndMetadata) {
  SafetensorsFile file;
  file.tensors["f64"] = torch::randn({2, 3}, torch::kFloat64);
  file.tensors["f32_scalar"] = torch::tensor(3.5f);
  file.tensors["f16"] = torch::randn({4}).to(torch::kFloat16);
  file.tensors["bf16"] = torch::randn({2, 2}).to(torch::kBFloat16);
  file.tensors["i64"] = torch::tensor(std::vector<int64_t>{-5, 0, int64_t{1} << 40});
  file.tensors["i32_empty"] = torch::zeros({2, 0}, torch::kInt32);
  file.tensors["i16"] = torch::tensor({-300, 300}, torch::kInt16);
  file.tensors["i8"] = torch::tensor({-128, 127}, torch::kInt8);
  file.tensors["u8"] = torch::arange(0, 256, torch::kInt64).to(torch::kUInt8).reshape({16, 16});
  file.tensors["bool"] = torch::tensor({true, false, true});
  file.tensors["f32_3d"] = torch::randn({2, 3, 4});
  file.metadata = {{"format", "onestep"}, {"step", "12"}, {"empty", ""}};

  write_safetensors(path("model.safetensors"), file);
  const SafetensorsFile loaded = read_safetensors(path("model.safetensors"));

  EXPECT_EQ(loaded.metadata, file.metadata);
  ASSERT_EQ(loaded.tensors.size(), file.tensors.size());
  for (const auto& [name, expected] : file.tensors) {
    ASSERT_EQ(loaded.tensors.count(name), 1u) << name;
    const torch::Tensor& actual = loaded.tensors.at(name);
    EXPECT_EQ(actual.scalar_type(), expected.scalar_type()) << name;
    EXPECT_EQ(actual.sizes(), expected.sizes()) << name;
    EXPECT_TRUE(actual.is_contiguous()) << name;
    EXPECT_TRUE(torch::equal(actual, expected)) << name;
  }
  EXPECT_EQ(loaded.tensors.at("f32_scalar").dim(), 0);
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"model.safetensors"});
}

TEST_F(SafetensorsTest, WritesNonContiguousTensorsAndEmptyFiles) {
  SafetensorsFile file;
  const torch::Tensor base = torch::arange(12, torch::kFloat32).reshape({3, 4});
  file.tensors["t"] = base.t();  // non-contiguous view
  write_safetensors(path("t.safetensors"), file);
  EXPECT_TRUE(torch::equal(read_safetensors(path("t.safetensors")).tensors.at("t"), base.t()));

  write_safetensors(path("empty.safetensors"), SafetensorsFile{});
  const SafetensorsFile empty = read_safetensors(path("empty.safetensors"));
  EXPECT_TRUE(empty.tensors.empty());
  EXPECT_TRUE(empty.metadata.empty());
}

TEST_F(SafetensorsTest, FileLayoutFollowsTheFormat) {
  SafetensorsFile file;
  file.tensors["b"] = torch::tensor({1.0f, 2.0f, 3.0f});        // 12 bytes
  file.tensors["a"] = torch::tensor({7}, torch::kInt16);        // 2 bytes
  file.metadata["note"] = "hello";
  write_safetensors(path("layout.safetensors"), file);
  const std::string bytes = read_raw(path("layout.safetensors"));

  ASSERT_GE(bytes.size(), 8u);
  uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) {
    header_length = (header_length << 8) | static_cast<unsigned char>(bytes[i]);
  }
  EXPECT_EQ(header_length % 8, 0u);
  ASSERT_EQ(bytes.size(), 8 + header_length + 14);
  const std::string header_text = bytes.substr(8, header_length);
  EXPECT_EQ(header_text.front(), '{');
  EXPECT_EQ(header_text.find_last_not_of(' '), header_text.find_last_of('}'));

  const nlohmann::json header = nlohmann::json::parse(header_text);
  EXPECT_EQ(header["__metadata__"], nlohmann::json({{"note", "hello"}}));
  // Sorted by name: "a" first at offset 0, then "b".
  EXPECT_EQ(header["a"]["dtype"], "I16");
  EXPECT_EQ(header["a"]["shape"], nlohmann::json({1}));
  EXPECT_EQ(header["a"]["data_offsets"], nlohmann::json({0, 2}));
  EXPECT_EQ(header["b"]["dtype"], "F32");
  EXPECT_EQ(header["b"]["shape"], nlohmann::json({3}));
  EXPECT_EQ(header["b"]["data_offsets"], nlohmann::json({2, 14}));
  const std::string data = bytes.substr(8 + header_length);
  EXPECT_EQ(data.substr(0, 2), std::string("\x07\x00", 2));
  float second = 0;
  std::memcpy(&second, data.data() + 2 + 4, 4);
  EXPECT_EQ(second, 2.0f);
}

TEST_F(SafetensorsTest, ReadsHandWrittenFileWithUnpaddedHeader) {
  const std::string p = path("hand.safetensors");
  write_raw(p, make_file(R"({"x":{"dtype":"U8","shape":[2,2],"data_offsets":[0,4]}})",
                         std::string("\x01\x02\x03\x04", 4)));
  const SafetensorsFile file = read_safetensors(p);
  EXPECT_TRUE(torch::equal(file.tensors.at("x"),
                           torch::tensor({1, 2, 3, 4}, torch::kUInt8).reshape({2, 2})));
}

TEST_F(SafetensorsTest, RejectsShortAndTruncatedFiles) {
  const std::string p = path("bad.safetensors");
  write_raw(p, "abc");
  expect_user_error([&] { read_safetensors(p); }, p, "too short");

  SafetensorsFile file;
  file.tensors["w"] = torch::randn({16});
  write_safetensors(p, file);
  const std::string bytes = read_raw(p);
  write_raw(p, bytes.substr(0, bytes.size() - 5));
  expect_user_error([&] { read_safetensors(p); }, p, "data_offsets");

  expect_user_error([&] { read_safetensors(path("missing.safetensors")); },
                    path("missing.safetensors"), "cannot open");
  EXPECT_THROW(read_safetensors(dir_.string()), UserError);
}

TEST_F(SafetensorsTest, RejectsHeaderLengthBeyondFile) {
  const std::string p = path("bad.safetensors");
  std::string bytes(8, '\0');
  bytes[0] = static_cast<char>(9999 & 0xff);
  bytes[1] = static_cast<char>(9999 >> 8);
  write_raw(p, bytes + "{}");
  expect_user_error([&] { read_safetensors(p); }, p, "header length 9999 exceeds file size 10");

  write_raw(p, std::string(8, '\xff') + "{}");  // 2^64 - 1
  expect_user_error([&] { read_safetensors(p); }, p, "exceeds file size");
}

TEST_F(SafetensorsTest, RejectsInvalidHeaders) {
  const std::string p = path("bad.safetensors");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{not json", "not valid JSON"},
      {"[1, 2]", "not a JSON object"},
      {R"({"x": 5})", "not a JSON object"},
      {R"({"x":{"shape":[1],"data_offsets":[0,4]}})", "missing field 'dtype'"},
      {R"({"x":{"dtype":"F32","data_offsets":[0,4]}})", "missing field 'shape'"},
      {R"({"x":{"dtype":"F32","shape":[1]}})", "missing field 'data_offsets'"},
      {R"({"x":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", "'dtype' is not a string"},
      {R"({"x":{"dtype":"F8","shape":[1],"data_offsets":[0,4]}})", "unsupported dtype 'F8'"},
      {R"({"x":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})", "'shape' is not an array"},
      {R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "invalid dimension -1"},
      {R"({"x":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", "invalid dimension"},
      {R"({"x":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,4]}})",
       "too large"},
      {R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", "not a pair"},
      {R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", "not a pair"},
      {R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", "begin after end"},
      {R"({"__metadata__":{"step":12}})", "'__metadata__' value for 'step' is not a string"},
      {R"({"__metadata__":[1]})", "'__metadata__' is not a JSON object"},
  };
  for (const auto& [header, problem] : cases) {
    SCOPED_TRACE(header);
    write_raw(p, make_file(header, std::string(4, '\0')));
    expect_user_error([&] { read_safetensors(p); }, p, problem);
  }
}

TEST_F(SafetensorsTest, RejectsOffsetsOutOfRangeAndMismatchedByteRanges) {
  const std::string p = path("bad.safetensors");
  // Offsets end beyond the 4-byte data section.
  write_raw(p, make_file(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                         std::string(4, '\0')));
  expect_user_error([&] { read_safetensors(p); }, p, "beyond the data section of 4 bytes");

  // dtype/shape need 12 bytes, the byte range holds 8.
  write_raw(p, make_file(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                         std::string(8, '\0')));
  expect_user_error([&] { read_safetensors(p); }, p, "needs 12");

  // Overlapping tensors.
  write_raw(p, make_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                         R"("b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
                         std::string(4, '\0')));
  expect_user_error([&] { read_safetensors(p); }, p, "overlap");

  // A gap between tensors.
  write_raw(p, make_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                         R"("b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
                         std::string(4, '\0')));
  expect_user_error([&] { read_safetensors(p); }, p, "gap");

  // Trailing bytes not covered by any tensor.
  write_raw(p, make_file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
                         std::string(4, '\0')));
  expect_user_error([&] { read_safetensors(p); }, p, "tensors cover 2 bytes");
}

TEST_F(SafetensorsTest, FailedWriteLeavesExistingFileAndNoTemporaryFile) {
  const std::string p = path("keep.safetensors");
  SafetensorsFile good;
  good.tensors["w"] = torch::ones({3});
  write_safetensors(p, good);
  const std::string before = read_raw(p);

  SafetensorsFile bad;
  bad.tensors["z"] = torch::zeros({2}, torch::kComplexFloat);
  expect_user_error([&] { write_safetensors(p, bad); }, p, "unsupported dtype");
  EXPECT_EQ(read_raw(p), before);
  SafetensorsFile bad_name;
  bad_name.tensors["\xff\xfe"] = torch::zeros({1});
  expect_user_error([&] { write_safetensors(p, bad_name); }, p, "valid UTF-8");
  EXPECT_EQ(read_raw(p), before);
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"keep.safetensors"});

  const std::string nowhere = path("no_such_dir/model.safetensors");
  expect_user_error([&] { write_safetensors(nowhere, good); }, nowhere, "No such file");
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"keep.safetensors"});
}

TEST_F(SafetensorsTest, AtomicWriteReplacesFilesAndCleansUpOnFailure) {
  const std::string p = path("data.bin");
  write_file_atomically(p, "first");
  write_file_atomically(p, std::string("sec\0nd", 6));
  EXPECT_EQ(read_raw(p), std::string("sec\0nd", 6));
  write_file_atomically(p, "");
  EXPECT_EQ(read_raw(p), "");
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"data.bin"});

  // The target is a non-empty directory: the rename fails, the temporary file is removed and
  // the directory is untouched.
  fs::create_directories(dir_ / "occupied");
  write_raw(path("occupied/inner.txt"), "inner");
  expect_user_error([&] { write_file_atomically(path("occupied"), "x"); }, path("occupied"),
                    "rename");
  EXPECT_EQ(dir_entries(), (std::vector<std::string>{"data.bin", "occupied"}));
  EXPECT_EQ(read_raw(path("occupied/inner.txt")), "inner");
}

}  // namespace
}  // namespace onestep
