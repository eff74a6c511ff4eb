// Checkpoint migration and frozen modules: a format-1 checkpoint (one network under model.*,
// every key of the old schema in its config, U-Net attention named in pixels) reads as the
// current format; a frozen module loads only when its file's SHA-256 matches, and its weights
// then equal the file's and take no gradient.
#include <gtest/gtest.h>

#include "onestep/core/config.h"
#include "onestep/core/file_io.h"
#include "onestep/core/safetensors.h"
#include "onestep/core/sha256.h"
#include "onestep/nets/network.h"
#include "onestep/train/checkpoint.h"
#include "test_support.h"

using namespace onestep;
using testing_support::contains;
using testing_support::user_error_message;

class CheckpointTest : public testing_support::TempFolderTest {};

TEST_F(CheckpointTest, VersionOneFilesAreMigrated) {
  SafetensorsFile file;
  file.tensors["model.input.weight"] = torch::ones({2, 2});
  file.tensors["ema.input.weight"] = torch::zeros({2, 2});
  file.tensors["optimizer.input.weight.exp_avg"] = torch::ones({2, 2});
  file.tensors["optimizer.step"] = torch::tensor({int64_t{7}});
  file.metadata = {{"format_version", "1"},
                   {"step", "7"},
                   {"sample_shape", "1,28,28"},
                   {"num_classes", "10"},
                   {"rng_state", "00"},
                   // An old resolved config: every key of the old schema, inapplicable ones too.
                   {"config",
                    "[data]\nname = \"fashion-mnist\"\nsigma = 1.0\n[model]\nname = \"unet\"\nwidth = 256\n"
                    "channel_mult = \"1,2,2\"\nattention_resolutions = \"7\"\nemb_dim = 128\n"
                    "[method]\nname = \"fm\"\nratio = 0.25\n[train]\nsteps = 10\n"}};
  write_safetensors(path("v1.safetensors"), file);
  const Checkpoint checkpoint = read_checkpoint(path("v1.safetensors"));
  EXPECT_TRUE(checkpoint.file.tensors.count("model.net.input.weight"));
  EXPECT_TRUE(checkpoint.file.tensors.count("ema.net.input.weight"));
  EXPECT_TRUE(checkpoint.file.tensors.count("optimizer.net.input.weight.exp_avg"));
  EXPECT_TRUE(checkpoint.file.tensors.count("optimizer.step"));
  EXPECT_EQ(checkpoint.config.get_string("model.attention_levels"), "2");  // 28 -> 14 -> 7: level 2
  EXPECT_EQ(checkpoint.config.get_int("model.emb_dim"), 128);
  EXPECT_FALSE(checkpoint.config.get_bool("model.scale_shift"));  // the architecture they were trained with
  EXPECT_EQ(checkpoint.config.to_toml().find("\nratio ="), std::string::npos);  // not an fm key
  EXPECT_EQ(checkpoint.config.to_toml().find("\nsigma ="), std::string::npos);  // not a fashion-mnist key
  EXPECT_EQ(checkpoint.config.to_toml().find("\nwidth ="), std::string::npos);  // not a unet key
}

TEST_F(CheckpointTest, UnknownVersionsAreRefused) {
  SafetensorsFile file;
  file.metadata = {{"format_version", "9"}};
  write_safetensors(path("v9.safetensors"), file);
  EXPECT_TRUE(contains(user_error_message([&] { read_checkpoint(path("v9.safetensors")); }), "format_version 9"));
}

TEST_F(CheckpointTest, FrozenModulesLoadOnlyWithTheirHash) {
  Config config;
  torch::manual_seed(1);
  const auto build = [&] { return std::static_pointer_cast<torch::nn::Module>(make_network(config, {{2}, {2}, 0})); };
  const auto original = build();
  SafetensorsFile file;
  for (const auto& item : original->named_parameters()) file.tensors[item.key()] = item.value().detach().clone();
  for (const auto& item : original->named_buffers()) file.tensors[item.key()] = item.value().detach().clone();
  write_safetensors(path("encoder.safetensors"), file);
  const std::string hash = sha256_hex(read_file(path("encoder.safetensors")));

  torch::manual_seed(2);  // other initial weights, replaced by the file's
  const auto loaded = load_frozen_module({"encoder", path("encoder.safetensors"), hash, build});
  const auto a = original->parameters(), b = loaded->parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i], b[i])) << i;
    EXPECT_FALSE(b[i].requires_grad()) << i;
  }
  const std::string wrong = user_error_message(
      [&] { load_frozen_module({"encoder", path("encoder.safetensors"), std::string(64, '0'), build}); });
  EXPECT_TRUE(contains(wrong, "SHA-256")) << wrong;
  EXPECT_TRUE(contains(wrong, "encoder")) << wrong;
  EXPECT_TRUE(contains(user_error_message([&] { load_frozen_module({"encoder", path("none"), hash, build}); }),
                       "not found"));
}
