// Tests for the image evaluator: SHA-256 test vectors, evaluator weights round trip and
// rejection of bad files, image metrics on tiny synthetic sets (identical sets, class accuracy,
// the reference cache), and the committed Fashion-MNIST evaluator: its accuracy, and Frechet
// distances on real test images (two halves close, noise far, rising with blur and noise).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "onestep/core/error.h"
#include "onestep/core/safetensors.h"
#include "onestep/core/sha256.h"
#include "onestep/data/image_datasets.h"
#include "onestep/eval/evaluator.h"
#include "onestep/eval/feature_metrics.h"
#include "onestep/eval/image_metrics.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace onestep {
namespace {

TEST(Sha256Test, StandardVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256Test, IncrementalUpdatesMatchOneShot) {
  const std::string text(1000, 'x');
  Sha256 hasher;
  for (size_t start = 0, chunk = 1; start < text.size(); start += chunk, chunk = chunk % 97 + 13) {
    hasher.update(text.data() + start, std::min(chunk, text.size() - start));
  }
  EXPECT_EQ(hasher.hex_digest(), sha256_hex(text));
}

class EvaluatorTest : public testing_support::TempFolderTest {
 protected:
  // A randomly initialised evaluator with non-trivial BatchNorm statistics, saved to `file`.
  EvaluatorNet save_random_evaluator(const std::string& file) {
    torch::manual_seed(7);
    EvaluatorNet net;
    net->train();
    {
      torch::NoGradGuard no_grad;
      net->forward(torch::rand({16, 1, 28, 28}) * 2 - 1);
    }
    net->eval();
    save_evaluator(net, file, 0.5, "test", 7);
    return net;
  }

  static torch::Tensor random_images(int64_t n, uint64_t seed) {
    torch::manual_seed(seed);
    return torch::rand({n, 1, 28, 28}) * 2 - 1;
  }

  // Expects Evaluator::load(file) to throw a UserError whose message names `file`.
  static void expect_load_error(const std::string& file) {
    try {
      Evaluator::load(file);
      ADD_FAILURE() << "loading " << file << " did not throw";
    } catch (const UserError& error) {
      EXPECT_NE(std::string(error.what()).find(file), std::string::npos) << error.what();
    }
  }
};

TEST_F(EvaluatorTest, SaveLoadRoundTripGivesIdenticalFeatures) {
  const std::string file = path("evaluator.safetensors");
  EvaluatorNet net = save_random_evaluator(file);
  const auto images = random_images(600, 1);  // more than one inference batch
  torch::Tensor expected;
  {
    torch::NoGradGuard no_grad;
    expected = torch::cat({net->features(images.narrow(0, 0, 100)), net->features(images.narrow(0, 100, 500))});
  }
  Evaluator evaluator = Evaluator::load(file);
  // Within one inference batch the results are bit-identical; across batch sizes the
  // convolution may round differently.
  EXPECT_TRUE(torch::equal(evaluator.features(images.narrow(0, 0, 100)), expected.narrow(0, 0, 100)));
  EXPECT_TRUE(torch::allclose(evaluator.features(images), expected, 1e-5, 1e-6));
  EXPECT_EQ(evaluator.logits(images).sizes(), (torch::IntArrayRef{600, 10}));
  EXPECT_EQ(evaluator.dataset(), "fashion-mnist");

  std::ifstream in(file, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(evaluator.sha256(), sha256_hex(bytes));

  const SafetensorsFile stored = read_safetensors(file);
  EXPECT_EQ(stored.metadata.at("kind"), "onestep-evaluator");
  EXPECT_EQ(stored.metadata.at("format_version"), "1");
  EXPECT_EQ(stored.metadata.at("test_accuracy"), "0.5000");
  EXPECT_EQ(stored.metadata.at("seed"), "7");
  EXPECT_THROW(evaluator.features(torch::zeros({2, 3, 28, 28})), UserError);
}

TEST_F(EvaluatorTest, BadFilesThrowUserErrorNamingTheFile) {
  const std::string good = path("evaluator.safetensors");
  save_random_evaluator(good);
  expect_load_error(path("missing.safetensors"));

  std::ifstream in(good, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string truncated = path("truncated.safetensors");
  std::ofstream(truncated, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  expect_load_error(truncated);

  SafetensorsFile file = read_safetensors(good);
  file.metadata["kind"] = "onestep-checkpoint";
  const std::string other_kind = path("other_kind.safetensors");
  write_safetensors(other_kind, file);
  expect_load_error(other_kind);

  file = read_safetensors(good);
  file.tensors.erase("head.weight");
  const std::string missing_tensor = path("missing_tensor.safetensors");
  write_safetensors(missing_tensor, file);
  expect_load_error(missing_tensor);

  file = read_safetensors(good);
  file.tensors["head.weight"] = torch::zeros({10, 3});
  const std::string wrong_shape = path("wrong_shape.safetensors");
  write_safetensors(wrong_shape, file);
  expect_load_error(wrong_shape);
}

TEST_F(EvaluatorTest, IdenticalSetsGiveZeroDistanceAndFullPrecisionRecall) {
  save_random_evaluator(path("evaluator.safetensors"));
  Evaluator evaluator = Evaluator::load(path("evaluator.safetensors"));
  const auto images = random_images(40, 2);
  const auto metrics = image_metrics(evaluator, images, torch::Tensor(), images, path("cache"));
  ASSERT_EQ(metrics.size(), 4u);
  EXPECT_EQ(metrics[0].first, "fd");
  EXPECT_EQ(metrics[1].first, "kid");
  EXPECT_EQ(metrics[2].first, "precision");
  EXPECT_EQ(metrics[3].first, "recall");
  EXPECT_NEAR(metrics[0].second, 0.0, 1e-6);
  EXPECT_DOUBLE_EQ(metrics[2].second, 1.0);
  EXPECT_DOUBLE_EQ(metrics[3].second, 1.0);

  const auto other = random_images(40, 3) * 0.2;
  const auto different = image_metrics(evaluator, other, torch::Tensor(), images, path("cache"));
  EXPECT_GT(different[0].second, 1e-3);
}

TEST_F(EvaluatorTest, ClassAccuracyIsTheShareClassifiedAsRequested) {
  save_random_evaluator(path("evaluator.safetensors"));
  Evaluator evaluator = Evaluator::load(path("evaluator.safetensors"));
  const auto samples = random_images(30, 4);
  const auto predicted = evaluator.logits(samples).argmax(1);
  auto labels = torch::randint(0, 10, {30}, torch::kLong);
  labels.narrow(0, 0, 12).copy_(predicted.narrow(0, 0, 12));  // at least 12 of 30 right
  int64_t right = 0;
  for (int64_t i = 0; i < 30; ++i) right += predicted[i].item<int64_t>() == labels[i].item<int64_t>();
  const auto metrics = image_metrics(evaluator, samples, labels, random_images(20, 5), path("cache"));
  ASSERT_EQ(metrics.size(), 5u);
  EXPECT_EQ(metrics[4].first, "class_accuracy");
  EXPECT_DOUBLE_EQ(metrics[4].second, static_cast<double>(right) / 30.0);
  EXPECT_THROW(image_metrics(evaluator, samples, labels.narrow(0, 0, 5), samples, path("cache")), UserError);
}

TEST_F(EvaluatorTest, ReferenceCacheIsWrittenAndReused) {
  save_random_evaluator(path("evaluator.safetensors"));
  Evaluator evaluator = Evaluator::load(path("evaluator.safetensors"));
  const auto samples = random_images(24, 6);
  const auto reference = random_images(32, 7);
  const std::string cache = reference_cache_path(evaluator, path("cache"), 32);
  EXPECT_EQ(fs::path(cache).filename().string(),
            "fashion-mnist-" + evaluator.sha256().substr(0, 16) + "-32.safetensors");
  const auto first = image_metrics(evaluator, samples, torch::Tensor(), reference, path("cache"));
  ASSERT_TRUE(fs::exists(cache));
  const auto written = fs::last_write_time(cache);
  const auto second = image_metrics(evaluator, samples, torch::Tensor(), reference, path("cache"));
  EXPECT_EQ(fs::last_write_time(cache), written);  // read, not rewritten
  ASSERT_EQ(first.size(), second.size());
  for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(first[i].second, second[i].second) << first[i].first;

  // A different reference set of the same size replaces the stale cache.
  const auto changed = image_metrics(evaluator, samples, torch::Tensor(), random_images(32, 8), path("cache"));
  EXPECT_NE(changed[0].second, first[0].second);
  EXPECT_EQ(read_safetensors(cache).tensors.at("features").size(0), 32);
}

// The committed evaluator and the installed Fashion-MNIST test split; skipped when absent.
class CommittedEvaluatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(file_)) GTEST_SKIP() << file_ << " is absent";
    if (!fs::exists(data_dir_)) GTEST_SKIP() << data_dir_ << " is absent";
  }
  const std::string file_ = std::string(ONESTEP_SOURCE_DIR) + "/evaluators/fashion-mnist.safetensors";
  const std::string data_dir_ = "/usr/share/datasets/fashion-mnist";
};

TEST_F(CommittedEvaluatorTest, ReachesTheStatedTestAccuracy) {
  EXPECT_LT(fs::file_size(file_), 5u * 1000 * 1000);
  Evaluator evaluator = Evaluator::load(file_);
  EXPECT_EQ(evaluator.sha256().size(), 64u);
  const Batch test = make_fashion_mnist_dataset(data_dir_, false)->heldout(2000);
  const double accuracy =
      evaluator.logits(test.x).argmax(1).eq(test.y).to(torch::kDouble).mean().item<double>();
  EXPECT_GE(accuracy, 0.93);
}

// A separable Gaussian blur of N x 1 x H x W images with standard deviation `sigma` pixels
// (reflected borders).
torch::Tensor gaussian_blur(const torch::Tensor& images, double sigma) {
  const auto radius = static_cast<int64_t>(std::ceil(3 * sigma));
  auto kernel = torch::exp(-torch::arange(-radius, radius + 1, torch::kFloat).pow(2) / (2 * sigma * sigma));
  kernel = kernel / kernel.sum();
  namespace F = torch::nn::functional;
  auto x = F::pad(images, F::PadFuncOptions({radius, radius, radius, radius}).mode(torch::kReflect));
  x = F::conv2d(x, kernel.view({1, 1, 1, -1}));
  return F::conv2d(x, kernel.view({1, 1, -1, 1}));
}

TEST_F(CommittedEvaluatorTest, FrechetDistanceRanksRealImagesNoiseAndCorruptions) {
  Evaluator evaluator = Evaluator::load(file_);
  const torch::Tensor test = make_fashion_mnist_dataset(data_dir_, false)->heldout(10000).x;
  const torch::Tensor half = test.slice(0, 0, 5000);
  const FeatureStatistics other_half = feature_statistics(evaluator.features(test.slice(0, 5000, 10000)));
  const auto fd = [&](const torch::Tensor& images) {
    return frechet_distance(feature_statistics(evaluator.features(images)), other_half);
  };
  const double halves = fd(half);
  auto gen = at::detail::createCPUGenerator(3);
  const double noise = fd(torch::randn(half.sizes(), gen).clamp(-1, 1));
  EXPECT_GT(noise, 100 * halves) << "halves " << halves << ", noise " << noise;
  double previous = halves;
  for (const double sigma : {0.5, 1.0, 1.5, 2.5}) {
    const double blurred = fd(gaussian_blur(half, sigma));
    EXPECT_GT(blurred, previous) << "blur sigma " << sigma;
    previous = blurred;
  }
  previous = halves;
  for (const double std : {0.05, 0.1, 0.2, 0.4}) {
    const double noisy = fd((half + std * torch::randn(half.sizes(), gen)).clamp(-1, 1));
    EXPECT_GT(noisy, previous) << "noise std " << std;
    previous = noisy;
  }
}

}  // namespace
}  // namespace onestep
