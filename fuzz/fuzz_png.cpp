// Fuzzes the image loader of the image-folder dataset (make_image_folder_dataset): PNG (and any
// other format stb_image detects) decoding, alpha compositing, resizing.
#include "fuzz_support.h"
#include "onestep/data/image_datasets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A folder holding the input as its one image: it is decoded and resized, then the split
  // (one image cannot be split) is rejected with a UserError.
  static const std::filesystem::path dir = [] {
    const std::filesystem::path folder = onestep::fuzz::temp_path("images");
    std::filesystem::create_directories(folder);
    return folder;
  }();
  onestep::fuzz::write_bytes(dir / "input.png", data, size);
  onestep::fuzz::expect_only_user_errors(
      [&] { onestep::make_image_folder_dataset(dir.string(), 8, false, 0.5, 0); });
  return 0;
}
