// Config: defaults, TOML files and overrides, rejection of unknown keys and bad values with
// the key, value and what is allowed named, and the resolved TOML round trip.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "onestep/core/config.h"
#include "onestep/core/error.h"
#include "test_support.h"

using onestep::Config;
using onestep::UserError;

using onestep::testing_support::user_error_message;

TEST(Config, DefaultsAreSetForEveryKey) {
  Config config;
  for (const auto& spec : Config::schema()) EXPECT_NO_THROW(config.get_string(spec.key)) << spec.key;
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
  for (const auto& spec : Config::schema()) EXPECT_EQ(reread.get_string(spec.key), config.get_string(spec.key)) << spec.key;
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

TEST(Config, ReadmeDocumentsEveryKey) {
  std::ifstream in(std::string(ONESTEP_SOURCE_DIR) + "/README.md");
  ASSERT_TRUE(in) << "README.md not found";
  std::stringstream readme;
  readme << in.rdbuf();
  for (const auto& spec : Config::schema())
    EXPECT_NE(readme.str().find("`" + spec.key + "`"), std::string::npos) << spec.key << " is not in README.md";
}
