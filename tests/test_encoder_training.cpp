// `onestep encoder train` (the drifting feature encoder) and drifting on images in its feature
// space: a short training writes weights whose metadata records the command, and which load as
// the drifting encoder by their hash; bad input exits with status 2; a drifting run on
// Fashion-MNIST trains through the committed encoder. Skipped without Debian's Fashion-MNIST.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "onestep/core/file_io.h"
#include "onestep/core/safetensors.h"
#include "onestep/core/sha256.h"
#include "onestep/eval/feature_encoder.h"
#include "onestep/methods/method.h"
#include "onestep/train/checkpoint.h"
#include "test_support.h"

using namespace onestep;
using onestep::testing_support::contains;
using onestep::testing_support::run_onestep;

namespace {

bool has_fashion_mnist() {
  return std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
}

class EncoderTrain : public onestep::testing_support::TempFolderTest {};

}  // namespace

TEST_F(EncoderTrain, WritesWeightsThatLoadAsTheDriftingEncoder) {
  if (!has_fashion_mnist()) GTEST_SKIP() << "no Fashion-MNIST (Debian: dataset-fashion-mnist)";
  const std::string out = path("encoder.safetensors");
  const auto result = run_onestep("encoder train --out " + out + " --steps 3 --batch-size 8 --seed 4");
  ASSERT_EQ(result.status, 0) << result.out;
  EXPECT_TRUE(contains(result.out, "held-out masked reconstruction error"));
  const auto file = read_safetensors(out);
  EXPECT_EQ(file.metadata.at("kind"), "onestep-feature-encoder");
  EXPECT_EQ(file.metadata.at("channels"), "1");
  EXPECT_TRUE(contains(file.metadata.at("command"), "--steps 3 --batch-size 8"));
  EXPECT_GT(std::stod(file.metadata.at("test_mse")), 0.0);
  const FrozenModuleSpec spec{"encoder", out, sha256_hex(read_file(out)),
                              [] { return std::make_shared<FeatureEncoderImpl>(1); }};
  EXPECT_TRUE(std::dynamic_pointer_cast<FeatureEncoderImpl>(load_frozen_module(spec)));
}

TEST_F(EncoderTrain, BadInputExitsWithStatus2) {
  const std::string out = path("encoder.safetensors");
  const auto points = run_onestep("encoder train --out " + out + " --steps 1 data.name=checkerboard");
  EXPECT_EQ(points.status, 2) << points.out;
  EXPECT_TRUE(contains(points.out, "needs images")) << points.out;
  const auto other = run_onestep("encoder train --out " + out + " --steps 1 model.width=3");
  EXPECT_EQ(other.status, 2) << other.out;
  EXPECT_TRUE(contains(other.out, "only data.* keys")) << other.out;
  EXPECT_EQ(run_onestep("encoder train --steps 1").status, 2);
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST_F(EncoderTrain, DriftingTrainsOnFashionMnistThroughTheCommittedEncoder) {
  if (!has_fashion_mnist()) GTEST_SKIP() << "no Fashion-MNIST (Debian: dataset-fashion-mnist)";
  const std::string run = path("run");
  const auto result = run_onestep(
      "train data.name=fashion-mnist method.name=drifting model.name=unet model.channels=8 model.channel_mult=1,2 "
      "model.emb_dim=16 method.n_pos=4 method.n_neg=4 train.batch_size=2 train.steps=2 train.log_every=1 "
      "train.sample_every=0 train.ckpt_every=0 eval.at_end=false --out " + run);
  ASSERT_EQ(result.status, 0) << result.out;
  std::ifstream metrics(run + "/metrics.jsonl");
  int records = 0;
  for (std::string line; std::getline(metrics, line);) {
    const auto record = nlohmann::json::parse(line);
    if (!record.contains("loss")) continue;
    ++records;
    EXPECT_TRUE(std::isfinite(record["loss"].get<double>())) << line;
  }
  EXPECT_EQ(records, 2);
  // Another encoder file than the configured hash is refused before training.
  const auto wrong = run_onestep("train data.name=fashion-mnist method.name=drifting method.encoder_sha256=" +
                                 std::string(64, '0') + " train.steps=1 --out " + path("wrong"));
  EXPECT_EQ(wrong.status, 2) << wrong.out;
  EXPECT_TRUE(contains(wrong.out, "SHA-256")) << wrong.out;
}
