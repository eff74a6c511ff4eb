// Fuzzes the points CSV loader (make_points_dataset): header, numbers, dimensions, split.
#include "fuzz_support.h"
#include "onestep/data/points_csv.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path path = onestep::fuzz::temp_path("input.csv");
  onestep::fuzz::write_bytes(path, data, size);
  onestep::fuzz::expect_only_user_errors([&] {
    const auto dataset = onestep::make_points_dataset(path.string(), "", 0.5, 0);
    dataset->heldout(4);
  });
  return 0;
}
