// Image datasets: Fashion-MNIST from IDX files and PNG/JPEG folders decoded with stb_image,
// with our own separable antialiasing resizer (area averaging down, bilinear up) and a
// seeded train/held-out split. Batches are drawn from uint8 storage and converted on the fly.
#include "onestep/data/image_datasets.h"

#include "onestep/core/config.h"

#include <ATen/CPUGeneratorImpl.h>
#include <stb/stb_image.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <utility>
#include <vector>

#include "onestep/core/error.h"
#include "onestep/data/idx.h"

namespace onestep {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kFashionClasses = 10;
constexpr int64_t kMaxImageSize = 4096;
constexpr int64_t kMaxSourcePixels = int64_t{1} << 28;  // refuse absurdly large pictures

// Float32 in [-1, 1] from uint8 pixels.
torch::Tensor to_unit_range(const torch::Tensor& pixels) {
  return pixels.to(torch::kFloat).div_(127.5).sub_(1.0);
}

class ImageDataset final : public Dataset {
 public:
  // `train`/`test`: N x C x H x W uint8; labels: N int64, or undefined when unconditional.
  ImageDataset(torch::Tensor train, torch::Tensor train_labels, torch::Tensor test,
               torch::Tensor test_labels, int64_t num_classes, bool hflip, std::string description)
      : train_(std::move(train)),
        train_labels_(std::move(train_labels)),
        test_(std::move(test)),
        test_labels_(std::move(test_labels)),
        num_classes_(num_classes),
        hflip_(hflip),
        description_(std::move(description)) {}

  std::vector<int64_t> sample_shape() const override { return train_.sizes().slice(1).vec(); }

  int64_t num_classes() const override { return num_classes_; }

  Batch train_batch(int64_t n, torch::Generator& gen) override {
    auto rows = torch::randint(0, train_.size(0), {n}, gen, torch::kLong);
    torch::Tensor x = to_unit_range(train_.index_select(0, rows));
    if (hflip_) {
      auto flip = (torch::rand({n}, gen) < 0.5).view({n, 1, 1, 1});
      x = torch::where(flip, x.flip({3}), x);
    }
    torch::Tensor y;
    if (train_labels_.defined()) y = train_labels_.index_select(0, rows);
    return {x, y};
  }

  Batch heldout(int64_t n) override {
    const int64_t count = std::min(std::max<int64_t>(n, 0), test_.size(0));
    torch::Tensor y;
    if (test_labels_.defined()) y = test_labels_.narrow(0, 0, count).clone();
    return {to_unit_range(test_.narrow(0, 0, count)), y};
  }

  std::string describe() const override { return description_; }

 private:
  torch::Tensor train_;
  torch::Tensor train_labels_;
  torch::Tensor test_;
  torch::Tensor test_labels_;
  int64_t num_classes_;
  bool hflip_;
  std::string description_;
};

// "60000 train / 10000 test, 1x28x28" for N x C x H x W tensors.
std::string split_summary(const torch::Tensor& train, const torch::Tensor& test) {
  std::ostringstream text;
  text << train.size(0) << " train / " << test.size(0) << " test, " << train.size(1) << "x"
       << train.size(2) << "x" << train.size(3);
  return text.str();
}

// ---- Fashion-MNIST ----

// `dir`/`name`.gz, else `dir`/`name`.
std::string find_idx_file(const fs::path& dir, const std::string& name) {
  for (const std::string& candidate : {name + ".gz", name}) {
    if (fs::exists(dir / candidate)) return (dir / candidate).string();
  }
  throw UserError(dir.string() + ": missing " + name + ".gz (or uncompressed " + name + ")");
}

struct LabelledImages {
  torch::Tensor images;  // N x 1 x H x W uint8
  torch::Tensor labels;  // N int64
};

LabelledImages read_fashion_split(const fs::path& dir, const std::string& prefix) {
  const std::string image_path = find_idx_file(dir, prefix + "-images-idx3-ubyte");
  const std::string label_path = find_idx_file(dir, prefix + "-labels-idx1-ubyte");
  torch::Tensor images = read_idx(image_path);
  torch::Tensor labels = read_idx(label_path);
  if (images.dim() != 3) {
    throw UserError(image_path + ": expected 3 dimensions (images x rows x columns), found " +
                    std::to_string(images.dim()));
  }
  if (labels.dim() != 1) {
    throw UserError(label_path + ": expected 1 dimension (labels), found " +
                    std::to_string(labels.dim()));
  }
  if (images.size(0) != labels.size(0)) {
    throw UserError(image_path + " holds " + std::to_string(images.size(0)) + " images but " +
                    label_path + " holds " + std::to_string(labels.size(0)) + " labels");
  }
  if (images.numel() == 0) throw UserError(image_path + ": no images");
  const int64_t max_label = labels.max().item<int64_t>();
  if (max_label >= kFashionClasses) {
    throw UserError(label_path + ": label " + std::to_string(max_label) + " out of range 0.." +
                    std::to_string(kFashionClasses - 1));
  }
  return {images.unsqueeze(1), labels.to(torch::kLong)};
}

// ---- Image folders ----

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

bool is_hidden(const fs::path& path) {
  const std::string name = path.filename().string();
  return !name.empty() && name[0] == '.';
}

bool is_image_file(const fs::directory_entry& entry) {
  const std::string extension = lowercase(entry.path().extension().string());
  return !is_hidden(entry.path()) && entry.is_regular_file() &&
         (extension == ".png" || extension == ".jpg" || extension == ".jpeg");
}

// Image files anywhere under `folder`, skipping hidden files and folders, sorted by path.
std::vector<fs::path> images_under(const fs::path& folder) {
  std::vector<fs::path> images;
  for (auto it = fs::recursive_directory_iterator(folder); it != fs::recursive_directory_iterator();
       ++it) {
    if (is_hidden(it->path()) && it->is_directory()) it.disable_recursion_pending();
    if (is_image_file(*it)) images.push_back(it->path());
  }
  std::sort(images.begin(), images.end());
  return images;
}

// The source pixels first, first + 1, ... and their weights that make one output pixel of a
// 1-D resampling.
struct Taps {
  int64_t first = 0;
  std::vector<float> weights;
};

// Taps for output pixels begin..begin+count-1 of an axis resampled from n_in to n_out pixels:
// each output pixel averages the source pixels its footprint covers (area averaging) when
// shrinking, and interpolates linearly between pixel centres when enlarging.
std::vector<Taps> axis_taps(int64_t n_in, int64_t n_out, int64_t begin, int64_t count) {
  std::vector<Taps> taps(static_cast<size_t>(count));
  const double scale = static_cast<double>(n_in) / static_cast<double>(n_out);
  for (int64_t j = begin; j < begin + count; ++j) {
    Taps& tap = taps[static_cast<size_t>(j - begin)];
    if (n_out <= n_in) {
      const double lo = static_cast<double>(j) * scale;
      const double hi = lo + scale;
      tap.first = static_cast<int64_t>(std::floor(lo));
      const auto last = std::min(n_in, static_cast<int64_t>(std::ceil(hi)));
      for (int64_t i = tap.first; i < last; ++i) {
        const double overlap = std::min(hi, i + 1.0) - std::max(lo, static_cast<double>(i));
        tap.weights.push_back(static_cast<float>(std::max(overlap, 0.0) / scale));
      }
    } else {
      const double x = std::clamp((static_cast<double>(j) + 0.5) * scale - 0.5, 0.0,
                                  static_cast<double>(n_in - 1));
      tap.first = static_cast<int64_t>(std::floor(x));
      const auto frac = static_cast<float>(x - static_cast<double>(tap.first));
      tap.weights.push_back(1.0f - frac);
      if (tap.first + 1 < n_in) tap.weights.push_back(frac);
    }
  }
  return taps;
}

// Resizes C x H x W float pixels so the shorter side is `size`, then keeps the centred
// `size` x `size` square (only the kept rows and columns are computed). Separable: rows
// first, then columns; the work is proportional to the source pixels.
torch::Tensor resize_and_crop(const torch::Tensor& image, int64_t size) {
  const int64_t channels = image.size(0);
  const int64_t height = image.size(1);
  const int64_t width = image.size(2);
  const int64_t shorter = std::min(height, width);
  const auto scaled = [&](int64_t length) {
    return std::max(size, static_cast<int64_t>(
                              std::llround(static_cast<double>(length) * static_cast<double>(size) /
                                           static_cast<double>(shorter))));
  };
  const int64_t new_height = scaled(height);
  const int64_t new_width = scaled(width);
  const std::vector<Taps> row_taps = axis_taps(height, new_height, (new_height - size) / 2, size);
  const std::vector<Taps> col_taps = axis_taps(width, new_width, (new_width - size) / 2, size);

  const torch::Tensor source = image.contiguous();
  torch::Tensor narrowed = torch::empty({channels, height, size});
  const float* in = source.data_ptr<float>();
  float* mid = narrowed.data_ptr<float>();
  for (int64_t line = 0; line < channels * height; ++line) {
    const float* from = in + line * width;
    float* to = mid + line * size;
    for (int64_t x = 0; x < size; ++x) {
      const Taps& tap = col_taps[static_cast<size_t>(x)];
      float sum = 0.0f;
      for (size_t k = 0; k < tap.weights.size(); ++k) sum += tap.weights[k] * from[tap.first + k];
      to[x] = sum;
    }
  }
  torch::Tensor result = torch::zeros({channels, size, size});
  float* out = result.data_ptr<float>();
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t y = 0; y < size; ++y) {
      const Taps& tap = row_taps[static_cast<size_t>(y)];
      float* to = out + (c * size + y) * size;
      for (size_t k = 0; k < tap.weights.size(); ++k) {
        const float weight = tap.weights[k];
        const float* from = mid + (c * height + tap.first + static_cast<int64_t>(k)) * size;
        for (int64_t x = 0; x < size; ++x) to[x] += weight * from[x];
      }
    }
  }
  return result;
}

// Blends colour channels (... x H x W, float 0..255) over white by `alpha` (H x W, 0..255).
torch::Tensor over_white(const torch::Tensor& colour, const torch::Tensor& alpha) {
  torch::Tensor a = alpha / 255.0;
  return colour * a + 255.0 * (1.0 - a);
}

std::vector<uint8_t> read_file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(path.string() + ": cannot open file");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  if (in.bad()) throw UserError(path.string() + ": cannot read file");
  return bytes;
}

// Decodes `path` to C x H x W float pixels in 0..255: 1 channel for grey images, 3 for
// colour or any image with alpha (composited over white).
torch::Tensor load_image(const fs::path& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  if (bytes.size() > static_cast<size_t>(INT_MAX)) {
    throw UserError(path.string() + ": file too large (" + std::to_string(bytes.size()) +
                    " bytes)");
  }
  const int length = static_cast<int>(bytes.size());
  int width = 0, height = 0, channels = 0;
  if (stbi_info_from_memory(bytes.data(), length, &width, &height, &channels) &&
      static_cast<int64_t>(width) * height > kMaxSourcePixels) {
    throw UserError(path.string() + ": image too large (" + std::to_string(width) + "x" +
                    std::to_string(height) + " pixels)");
  }
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(
      stbi_load_from_memory(bytes.data(), length, &width, &height, &channels, 0), stbi_image_free);
  if (!pixels) {
    throw UserError(path.string() + ": cannot decode image (stb_image: " + stbi_failure_reason() +
                    ")");
  }
  // stb_image decodes a bare PNM header such as "P5" to an image without pixels.
  if (width < 1 || height < 1) {
    throw UserError(path.string() + ": image has no pixels (" + std::to_string(width) + "x" +
                    std::to_string(height) + ")");
  }
  torch::Tensor hwc = torch::from_blob(pixels.get(), {height, width, channels}, torch::kUInt8)
                          .to(torch::kFloat)
                          .permute({2, 0, 1});
  switch (channels) {
    case 1:
      return hwc.contiguous();
    case 2:
      return over_white(hwc[0], hwc[1]).unsqueeze(0).expand({3, height, width}).contiguous();
    case 3:
      return hwc.contiguous();
    default:
      return over_white(hwc.narrow(0, 0, 3), hwc[3]).contiguous();
  }
}

// Loads and resizes every image: N x C x size x size uint8, C = 3 if any image has colour.
torch::Tensor load_images(const std::vector<fs::path>& paths, int64_t size) {
  std::vector<torch::Tensor> images;
  bool any_colour = false;
  for (const fs::path& path : paths) {
    torch::Tensor image = resize_and_crop(load_image(path), size);
    images.push_back(image.round_().clamp_(0, 255).to(torch::kUInt8));
    any_colour |= image.size(0) == 3;
  }
  if (any_colour) {
    for (torch::Tensor& image : images) image = image.expand({3, size, size});
  }
  return torch::stack(images);
}

std::string join_names(const std::vector<std::string>& names, size_t max_shown) {
  std::string text;
  for (size_t i = 0; i < names.size() && i < max_shown; ++i) text += (i ? ", " : "") + names[i];
  if (names.size() > max_shown) text += ", ...";
  return text;
}

}  // namespace

std::unique_ptr<Dataset> make_fashion_mnist_dataset(const std::string& dir, bool hflip) {
  if (!fs::is_directory(dir)) {
    throw UserError(dir +
                    ": no such folder (Fashion-MNIST comes with the Debian package "
                    "dataset-fashion-mnist)");
  }
  LabelledImages train = read_fashion_split(dir, "train");
  LabelledImages test = read_fashion_split(dir, "t10k");
  if (test.images.sizes().slice(1) != train.images.sizes().slice(1)) {
    throw UserError(dir + ": test images are " + std::to_string(test.images.size(2)) + "x" +
                    std::to_string(test.images.size(3)) + " but training images are " +
                    std::to_string(train.images.size(2)) + "x" +
                    std::to_string(train.images.size(3)));
  }
  std::string description = "fashion-mnist (" + split_summary(train.images, test.images) + ", " +
                            std::to_string(kFashionClasses) + " classes" +
                            (hflip ? ", random horizontal flips)" : ")");
  return std::make_unique<ImageDataset>(train.images, train.labels, test.images, test.labels,
                                        kFashionClasses, hflip, std::move(description));
}

std::unique_ptr<Dataset> make_image_folder_dataset(const std::string& dir, int64_t size, bool hflip,
                                                   double test_fraction, uint64_t split_seed) {
  if (size < 1 || size > kMaxImageSize) {
    throw UserError(dir + ": image size must be in 1.." + std::to_string(kMaxImageSize) + ", got " +
                    std::to_string(size));
  }
  if (!(test_fraction > 0 && test_fraction < 1)) {
    std::ostringstream msg;
    msg << dir << ": test_fraction must be in (0, 1), got " << test_fraction;
    throw UserError(msg.str());
  }
  if (!fs::exists(dir)) throw UserError(dir + ": no such folder");
  if (!fs::is_directory(dir)) throw UserError(dir + ": not a folder");

  std::vector<fs::path> paths;
  std::vector<int64_t> labels;
  std::vector<std::string> class_names;
  std::vector<fs::path> loose_images;
  try {
    std::vector<fs::path> sub_folders;
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (is_image_file(entry)) loose_images.push_back(entry.path());
      if (entry.is_directory() && !is_hidden(entry.path())) sub_folders.push_back(entry.path());
    }
    std::sort(sub_folders.begin(), sub_folders.end());
    std::sort(loose_images.begin(), loose_images.end());
    for (const fs::path& folder : sub_folders) {
      const std::vector<fs::path> images = images_under(folder);
      if (images.empty()) continue;
      paths.insert(paths.end(), images.begin(), images.end());
      labels.insert(labels.end(), images.size(), static_cast<int64_t>(class_names.size()));
      class_names.push_back(folder.filename().string());
    }
  } catch (const fs::filesystem_error& e) {
    throw UserError(dir + ": cannot list folder (" + e.code().message() + ")");
  }
  if (!class_names.empty() && !loose_images.empty()) {
    throw UserError(loose_images.front().string() +
                    ": image directly in a dataset folder that has class sub-folders (" +
                    join_names(class_names, 5) + "); move it into a class folder or remove it");
  }
  if (class_names.empty()) paths = loose_images;
  if (paths.empty()) throw UserError(dir + ": no PNG or JPEG images (*.png, *.jpg, *.jpeg)");

  const torch::Tensor images = load_images(paths, size);
  const auto total = static_cast<int64_t>(paths.size());
  const auto num_test = static_cast<int64_t>(std::llround(test_fraction * total));
  if (num_test < 1 || num_test > total - 1) {
    std::ostringstream msg;
    msg << dir << ": " << total << " images cannot be split with test_fraction " << test_fraction
        << " (need at least one training and one held-out image)";
    throw UserError(msg.str());
  }
  auto split_gen = at::make_generator<at::CPUGeneratorImpl>(split_seed);
  const torch::Tensor order = torch::randperm(total, split_gen, torch::kLong);
  const torch::Tensor test_rows = order.narrow(0, 0, num_test);
  const torch::Tensor train_rows = order.narrow(0, num_test, total - num_test);
  const torch::Tensor train = images.index_select(0, train_rows);
  const torch::Tensor test = images.index_select(0, test_rows);
  torch::Tensor train_labels;
  torch::Tensor test_labels;
  if (!class_names.empty()) {
    const torch::Tensor all_labels = torch::tensor(labels, torch::kLong);
    train_labels = all_labels.index_select(0, train_rows);
    test_labels = all_labels.index_select(0, test_rows);
  }
  std::string description = "image folder " + dir + " (" + split_summary(train, test) + ", ";
  description += class_names.empty() ? "unconditional"
                                     : std::to_string(class_names.size()) +
                                           " classes: " + join_names(class_names, 5);
  description += hflip ? ", random horizontal flips)" : ")";
  const auto num_classes = static_cast<int64_t>(class_names.size());
  return std::make_unique<ImageDataset>(train, train_labels, test, test_labels, num_classes, hflip,
                                        std::move(description));
}

namespace {

struct FashionMnistOptions {
  std::string path = "/usr/share/datasets/fashion-mnist";
  bool hflip = false;
  static const OptionSchema<FashionMnistOptions>& schema() {
    static const auto schema = OptionSchema<FashionMnistOptions>("data")
                                   .add("path", &FashionMnistOptions::path, {}, "folder of the Fashion-MNIST IDX files")
                                   .add("hflip", &FashionMnistOptions::hflip, "random horizontal flips of training images");
    return schema;
  }
};

struct ImageFolderOptions {
  int64_t size = 32;
  bool hflip = false;
  HeldOutSplitOptions split;
  static const OptionSchema<ImageFolderOptions>& schema() {
    static const auto schema =
        OptionSchema<ImageFolderOptions>("data")
            .add("size", &ImageFolderOptions::size, 1, 4096,
                 "`folder:` images are resized (antialiased) and centre-cropped to size x size")
            .add("hflip", &ImageFolderOptions::hflip, "random horizontal flips of training images")
            .include(&ImageFolderOptions::split, HeldOutSplitOptions::schema());
    return schema;
  }
};

[[maybe_unused]] const bool fashion_registered = DatasetRegistry::instance().add(
    {"data", "fashion-mnist", "", "Fashion-MNIST, 28x28 grey, 10 classes (Debian's dataset-fashion-mnist)",
     FashionMnistOptions::schema().keys()},
    [](const Config& config, const std::string&) {
      const auto options = FashionMnistOptions::schema().read(config);
      return make_fashion_mnist_dataset(options.path, options.hflip);
    });

[[maybe_unused]] const bool folder_registered = DatasetRegistry::instance().add(
    {"data", "folder:", "folder:DIR", "PNG/JPEG images of a folder (class sub-folders: class-conditional)",
     ImageFolderOptions::schema().keys()},
    [](const Config& config, const std::string& name) {
      const auto options = ImageFolderOptions::schema().read(config);
      return make_image_folder_dataset(name.substr(std::string("folder:").size()), options.size, options.hflip,
                                       options.split.test_fraction, static_cast<uint64_t>(options.split.split_seed));
    });

}  // namespace

}  // namespace onestep
