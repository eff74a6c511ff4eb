// Config: defaults, TOML files and overrides, rejection of unknown keys and bad values with
// the key, value and what is allowed named, keys checked against the chosen components, one
// default per component key, and the resolved TOML round trip; the README lists every key
// of every registered component.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "onestep/core/config.h"
#include "onestep/core/error.h"
#include "onestep/core/registry.h"
#include "test_support.h"

using onestep::Config;
using onestep::UserError;

using onestep::testing_support::user_error_message;

TEST(Config, DefaultsAreSetForEveryKey) {
  Config config;
  for (const auto& spec : config.keys()) EXPECT_NO_THROW(config.get_string(spec.key)) << spec.key;
  EXPECT_EQ(config.get_string("method.name"), "meanflow");
  EXPECT_EQ(config.get_int("train.batch_size"), 256);
  EXPECT_EQ(config.get_int_list("eval.nfe"), (std::vector<int64_t>{1, 2, 4}));
}

TEST(Config, TomlAndOverridesApply) {
  Config config;
  config.apply_toml("[train]\nsteps = 10\nlr = 5e-4\n[method]\nname = \"fm\"\n[eval]\nnfe = [1, 4, 50]\n", "test.toml");
  config.apply_override("train.lr=0.002");
  config.apply_override("eval.use_ema=false");
  EXPECT_EQ(config.get_int("train.steps"), 10);
  EXPECT_DOUBLE_EQ(config.get_float("train.lr"), 0.002);
  EXPECT_EQ(config.get_string("method.name"), "fm");
  EXPECT_FALSE(config.get_bool("eval.use_ema"));
  EXPECT_EQ(config.get_int_list("eval.nfe"), (std::vector<int64_t>{1, 4, 50}));
  config.apply_override("eval.nfe=2,8");
  EXPECT_EQ(config.get_int_list("eval.nfe"), (std::vector<int64_t>{2, 8}));
}

TEST(Config, ResolvedTomlRoundTrips) {
  Config config;
  config.apply_override("train.lr=0.0003");
  config.apply_override("data.name=points:/tmp/some \"file\".csv");
  Config reread;
  reread.apply_toml(config.to_toml(), "resolved");
  for (const auto& spec : config.keys()) EXPECT_EQ(reread.get_string(spec.key), config.get_string(spec.key)) << spec.key;
}

TEST(Config, KeysAreCheckedAgainstTheChosenComponents) {
  Config config;
  config.apply_override("method.name=fm");
  config.apply_override("method.ratio=0.5");  // a MeanFlow key
  const std::string message = user_error_message([&] { config.validate(); });
  EXPECT_NE(message.find("method.ratio"), std::string::npos) << message;
  EXPECT_NE(message.find("'fm'"), std::string::npos) << message;
  EXPECT_NE(message.find("method.cfg_scale"), std::string::npos) << message;  // fm's own keys are listed
  config.apply_override("method.name=meanflow");
  EXPECT_NO_THROW(config.validate());
  EXPECT_DOUBLE_EQ(config.get_float("method.ratio"), 0.5);
  // Unknown component names list the registered ones.
  config.apply_override("model.name=resnet");
  const std::string unknown = user_error_message([&] { config.validate(); });
  EXPECT_NE(unknown.find("resnet"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("dit"), std::string::npos) << unknown;
  // Keys of an unchosen component are not in the resolved config.
  Config fresh;
  fresh.apply_override("method.name=fm");
  EXPECT_EQ(fresh.to_toml().find("ratio"), std::string::npos);
  EXPECT_NE(fresh.to_toml().find("cfg_scale"), std::string::npos);
}

TEST(Config, EachComponentKeyHasOneDefaultItsComponentUses) {
  // The defaults come from the options structs: the DiT's depth and the U-Net's emb_dim are
  // what the networks are built with when the keys are not set.
  Config config;
  config.apply_override("model.name=dit");
  EXPECT_EQ(config.get_int("model.depth"), 4);
  config.apply_override("model.name=unet");
  EXPECT_EQ(config.get_int("model.emb_dim"), 64);
  // Every component's keys are valid keys of a config that chooses it, with their defaults.
  for (const std::string section : {"data", "model", "method"}) {
    for (const auto* info : onestep::components(section)) {
      Config chosen;
      chosen.apply_override(section + ".name=" + (info->name.back() == ':' ? info->name + "x" : info->name));
      EXPECT_NO_THROW(chosen.validate()) << info->name;
      for (const auto& spec : info->keys) EXPECT_EQ(chosen.get_string(spec.key), spec.default_value) << spec.key;
    }
  }
}

TEST(Config, UnknownKeyNamesKeyOriginAndKnownKeys) {
  Config config;
  const std::string message = user_error_message([&] { config.apply_toml("[model]\nwidht = 3\n", "my.toml"); });
  EXPECT_NE(message.find("my.toml"), std::string::npos) << message;
  EXPECT_NE(message.find("model.widht"), std::string::npos) << message;
  EXPECT_NE(message.find("model.width"), std::string::npos) << message;
  EXPECT_NE(user_error_message([&] { config.apply_override("trian.steps=3"); }).find("known sections"), std::string::npos);
}

TEST(Config, BadValuesNameKeyValueAndExpectation) {
  Config config;
  const std::string not_int = user_error_message([&] { config.apply_override("train.steps=ten"); });
  EXPECT_NE(not_int.find("train.steps"), std::string::npos);
  EXPECT_NE(not_int.find("'ten'"), std::string::npos);
  EXPECT_NE(not_int.find("integer"), std::string::npos);
  const std::string out_of_range = user_error_message([&] { config.apply_override("method.ratio=1.5"); });
  EXPECT_NE(out_of_range.find("[0, 1]"), std::string::npos) << out_of_range;
  const std::string bad_choice = user_error_message([&] { config.apply_override("method.sampler=rk4"); });
  EXPECT_NE(bad_choice.find("euler | heun"), std::string::npos) << bad_choice;
  EXPECT_NE(user_error_message([&] { config.apply_override("eval.nfe=1,0"); }).find("positive"), std::string::npos);
  EXPECT_NE(user_error_message([&] { config.apply_override("train.lr=nan"); }).find("finite"), std::string::npos);
  EXPECT_NE(user_error_message([&] { config.apply_override("no_equals_sign"); }).find("section.key=value"), std::string::npos);
  EXPECT_NE(user_error_message([&] { config.apply_toml("[train]\nsteps = \n", "broken.toml"); }).find("broken.toml:2"),
            std::string::npos);
  EXPECT_NE(user_error_message([&] { config.apply_toml("steps = 3\n", "flat.toml"); }).find("must be a section"),
            std::string::npos);
  // A rejected value leaves the previous one in place.
  EXPECT_EQ(config.get_int("train.steps"), 4000);
}

// Found by fuzz/fuzz_config.cpp: toml++ 3.3 reached __builtin_unreachable on these inputs.
TEST(Config, NonAsciiThatTomlPlusPlusMishandlesIsAUserError) {
  Config config;
  const std::string bare_key =
      user_error_message([&] { config.apply_toml("[train]\nsteps = 80\nbatch_s\xc9\xa4ta = 1\n", "fuzz.toml"); });
  EXPECT_NE(bare_key.find("fuzz.toml:3: invalid TOML: non-ASCII character outside a string"), std::string::npos)
      << bare_key;
  const std::string in_bare_value =
      user_error_message([&] { config.apply_toml("[data]\nname = 0x2x'\xc2\xbd'\n", "bare.toml"); });
  EXPECT_NE(in_bare_value.find("bare.toml:2: invalid TOML: non-ASCII character outside a string"), std::string::npos)
      << in_bare_value;
  const std::string after_backslash =
      user_error_message([&] { config.apply_toml("[data]\nname = \"\"\"\\\n\xc2\xa7\"\"\"\n", "ml.toml"); });
  EXPECT_NE(after_backslash.find("ml.toml:3: invalid TOML: non-ASCII character after a backslash"), std::string::npos)
      << after_backslash;
  // Strings and comments may hold any UTF-8.
  config.apply_toml("# \xc2\xa7 caf\xc3\xa9\n[data]\nname = \"points:caf\xc3\xa9.csv\"  # \xc3\xa9\n", "ok.toml");
  EXPECT_EQ(config.get_string("data.name"), "points:caf\xc3\xa9.csv");
}

TEST(Config, ShippedConfigsAreValid) {
  int count = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(std::string(ONESTEP_SOURCE_DIR) + "/configs")) {
    if (entry.path().extension() != ".toml") continue;
    Config config;
    EXPECT_NO_THROW({
      config.apply_toml_file(entry.path().string());
      config.validate();
    }) << entry.path();
    ++count;
  }
  EXPECT_GE(count, 10);
}

TEST(Config, ReadmeDocumentsEveryKey) {
  std::ifstream in(std::string(ONESTEP_SOURCE_DIR) + "/README.md");
  ASSERT_TRUE(in) << "README.md not found";
  std::stringstream readme;
  readme << in.rdbuf();
  for (const auto& spec : Config::general_keys())
    EXPECT_NE(readme.str().find("`" + spec.key + "`"), std::string::npos) << spec.key << " is not in README.md";
  for (const std::string section : {"data", "model", "method"}) {
    for (const auto* info : onestep::components(section)) {
      EXPECT_NE(readme.str().find("`" + info->usage + "`"), std::string::npos) << info->usage << " is not in README.md";
      for (const auto& spec : info->keys)
        EXPECT_NE(readme.str().find("`" + spec.key + "`"), std::string::npos) << spec.key << " is not in README.md";
    }
  }
}
