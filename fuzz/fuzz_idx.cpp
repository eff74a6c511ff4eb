// Fuzzes the IDX reader (read_idx), raw or gzip: magic number, dimensions, payload length.
#include "fuzz_support.h"
#include "onestep/data/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path path = onestep::fuzz::temp_path("input-idx3-ubyte");
  onestep::fuzz::write_bytes(path, data, size);
  onestep::fuzz::expect_only_user_errors([&] { onestep::read_idx(path.string()); });
  return 0;
}
