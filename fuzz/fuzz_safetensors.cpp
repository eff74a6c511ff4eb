// Fuzzes the safetensors reader (read_safetensors): header length, JSON header, dtypes, shapes, offsets.
#include "fuzz_support.h"
#include "onestep/core/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path path = onestep::fuzz::temp_path("input.safetensors");
  onestep::fuzz::write_bytes(path, data, size);
  onestep::fuzz::expect_only_user_errors([&] { onestep::read_safetensors(path.string()); });
  return 0;
}
