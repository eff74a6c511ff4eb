// The Python twin (bench/python) against `onestep bench`: for the toy MLP (plain, and residual
// with Fourier features), the U-Net and the DiT, under fm and meanflow, the twin built from
// onestep's report has exactly onestep's parameter count, runs two training steps, and its
// step-0 loss is within 20% of onestep's (initialisations and random streams differ), also
// under bf16 autocast (train.precision); the twin
// pairs noise with data as drawn, so the shipped toy config runs with method.coupling=independent. Needs
// Debian's python3-torch (scripts/packages.txt); skipped where $PYTHON (default /usr/bin/python3)
// cannot import torch.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <string>

#include "test_support.h"

namespace {

using onestep::testing_support::run_command;
using onestep::testing_support::run_onestep;

std::string python() {
  const char* env = std::getenv("PYTHON");
  return env ? env : "/usr/bin/python3";
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

struct TwinCase {
  std::string name;
  std::string args;  // onestep bench arguments
};

class PythonTwin : public onestep::testing_support::TempFolderTest, public ::testing::WithParamInterface<TwinCase> {};

TEST_P(PythonTwin, MatchesParameterCountAndStepZeroLoss) {
  if (run_command(python() + " -c 'import torch'").status != 0)
    GTEST_SKIP() << python() << " cannot import torch (Debian: apt-get install python3-torch)";
  const std::string ours = path("onestep.json"), twin = path("twin.json");
  const auto bench = run_onestep("bench --warmup 0 --iters 1 " + GetParam().args + " --json " + ours);
  ASSERT_EQ(bench.status, 0) << bench.out;
  const auto result = run_command("cd " + std::string(ONESTEP_SOURCE_DIR) + " && " + python() +
                                " bench/python/bench.py --from-onestep " + ours + " --warmup 0 --iters 1 --json " + twin);
  ASSERT_EQ(result.status, 0) << result.out;
  const auto a = read_json(ours), b = read_json(twin);
  EXPECT_EQ(b["tool"], "python-twin");
  for (const auto& [key, value] : a.items()) EXPECT_TRUE(b.contains(key)) << key << " missing in the twin's report";
  EXPECT_EQ(a["parameters"], b["parameters"]);
  const double loss = a["loss_step0"], twin_loss = b["loss_step0"];
  EXPECT_LT(std::abs(twin_loss - loss), 0.2 * std::abs(loss)) << "onestep " << loss << ", twin " << twin_loss;
}

// `onestep bench` arguments for a shipped config (under configs/) with overrides.
std::string shipped(const std::string& config, const std::string& overrides) {
  return "-c " + std::string(ONESTEP_SOURCE_DIR) + "/configs/" + config + " " + overrides;
}

const std::string kSmallUnet = "train.batch_size=8 model.channels=8 model.emb_dim=16 model.heads=2";
// The DiT on Fashion-MNIST; MeanFlow with CFG folded into training and the adaptive weight.
const std::string kSmallDit =
    "data.name=fashion-mnist train.batch_size=8 model.name=dit model.width=32 model.depth=2 model.heads=2 "
    "model.patch_size=7";
const std::string kGuidedMeanFlow = " method.name=meanflow method.cfg_omega=2 method.adaptive_p=1 method.ratio=0.25";

INSTANTIATE_TEST_SUITE_P(
    Networks, PythonTwin,
    ::testing::Values(TwinCase{"MlpFm", "method.name=fm model.width=32 model.depth=2 train.batch_size=256"},
                      TwinCase{"ResidualFourierMlpMeanFlow", shipped("toy/meanflow-checkerboard.toml", "model.width=32 method.coupling=independent")},
                      TwinCase{"UnetFm", shipped("fmnist/fm.toml", kSmallUnet)},
                      TwinCase{"UnetMeanFlow", shipped("fmnist/meanflow.toml", kSmallUnet)},
                      TwinCase{"DitFm", kSmallDit + " method.name=fm"},
                      TwinCase{"DitMeanFlow", kSmallDit + kGuidedMeanFlow},
                      // bf16 autocast on both sides, the JVP in float32 (with the model's tangent).
                      TwinCase{"ResidualFourierMlpMeanFlowBf16",
                               shipped("toy/meanflow-checkerboard.toml",
                                       "model.width=32 method.coupling=independent train.precision=bf16")},
                      TwinCase{"UnetFmBf16", shipped("fmnist/fm.toml", kSmallUnet + " train.precision=bf16")}),
    [](const ::testing::TestParamInfo<TwinCase>& info) { return info.param.name; });

}  // namespace
