// End-to-end tests of the `onestep` binary: every bad input named in the contract exits with
// status 2 and one clear line; sample and eval honour their output formats; every registered
// method (the registry drives the list, each with the network it requires) trains, samples, evaluates and, stopped and resumed,
// gives exactly the losses, weights, EMA and optimizer state of an uninterrupted run; Flow Matching on checkerboard
// gets far better with more NFE; the shipped configs train on a user's point cloud and on a
// user's image folder.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "onestep/core/image_io.h"
#include "onestep/core/npy.h"
#include "onestep/core/registry.h"
#include "onestep/core/safetensors.h"
#include "test_support.h"
#include "onestep/methods/method.h"

namespace fs = std::filesystem;

namespace {

using Result = onestep::testing_support::CommandResult;
using onestep::testing_support::run_command;
using onestep::testing_support::run_onestep;
using onestep::testing_support::losses;

Result run(const std::string& args) { return run_onestep(args); }

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("onestep_cli_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void write(const std::string& name, const std::string& text) const { std::ofstream(dir_ / name) << text; }

  // Expects exit status 2 with exactly one line of output that contains every `needle`.
  void expect_user_error(const std::string& args, const std::vector<std::string>& needles) const {
    const Result result = run(args);
    EXPECT_EQ(result.status, 2) << args << "\n" << result.out;
    EXPECT_EQ(std::count(result.out.begin(), result.out.end(), '\n'), 1) << result.out;
    for (const auto& needle : needles) EXPECT_NE(result.out.find(needle), std::string::npos) << needle << " in " << result.out;
  }

  fs::path dir_;
};

const std::string kTiny = "train.steps=6 train.log_every=1 model.width=16 model.depth=2 eval.num=200 train.sample_every=0";

}  // namespace

TEST_F(Cli, BadConfigInputExitsWithStatus2) {
  expect_user_error("train model.widht=3 --out " + path("r"), {"model.widht", "model.width"});
  expect_user_error("train train.steps=-1 --out " + path("r"), {"train.steps", "'-1'"});
  expect_user_error("train method.name=gan --out " + path("r"), {"method.name", "gan", "meanflow"});
  expect_user_error("train method.name=fm method.ratio=0.5 --out " + path("r"), {"method.ratio", "'fm'"});
  expect_user_error("train model.name=dit --out " + path("r"), {"model.name = 'dit'", "needs image data"});
  expect_user_error("train data.name=cifar --out " + path("r"), {"data.name", "cifar", "checkerboard"});
  write("bad.toml", "[train]\nstepz = 3\n");
  expect_user_error("train -c " + path("bad.toml") + " --out " + path("r"), {"bad.toml", "train.stepz"});
  EXPECT_FALSE(fs::exists(path("r") + "/checkpoint.safetensors"));
}

TEST_F(Cli, BadPointFilesExitWithStatus2) {
  expect_user_error("train data.name=points:" + path("missing.csv") + " --out " + path("r"), {"missing.csv"});
  write("ragged.csv", "1,2\n3,4\n5,6,7\n");
  expect_user_error("train data.name=points:" + path("ragged.csv") + " --out " + path("r"), {"ragged.csv:3", "expected 2"});
  write("words.csv", "1,2\n3,four\n");
  expect_user_error("train data.name=points:" + path("words.csv") + " --out " + path("r"), {"words.csv:2", "four"});
  write("empty.csv", "");
  expect_user_error("train data.name=points:" + path("empty.csv") + " --out " + path("r"), {"empty.csv"});
}

TEST_F(Cli, BadCheckpointsExitWithStatus2) {
  expect_user_error("eval --ckpt " + path("nothing.safetensors"), {"nothing.safetensors", "not found"});
  ASSERT_EQ(run("train " + kTiny + " --out " + path("run")).status, 0);
  const std::string ckpt = path("run/checkpoint.safetensors");
  const auto size = fs::file_size(ckpt);
  fs::copy_file(ckpt, path("truncated.safetensors"));
  fs::resize_file(path("truncated.safetensors"), size / 2);
  expect_user_error("eval --ckpt " + path("truncated.safetensors"), {"truncated.safetensors"});
  write("garbage.safetensors", "this is not a checkpoint");
  expect_user_error("sample --ckpt " + path("garbage.safetensors") + " --out " + path("s.npy"), {"garbage.safetensors"});
  // A run folder is never overwritten by a new run.
  expect_user_error("train " + kTiny + " --out " + path("run"), {"already holds a run", "--resume"});
  expect_user_error("sample --ckpt " + path("run") + " --out " + path("s.txt"), {"s.txt", ".png or .npy"});
  expect_user_error("sample --ckpt " + path("run") + " --out " + path("s.npy") + " --class 3", {"--class"});
}

// eval.every scores the model during training (metrics.jsonl, report.html, each with the share of
// the initial weights still in the EMA) without touching the run: the losses equal those of a run
// without it.
TEST_F(Cli, EvaluatesDuringTrainingWithoutChangingTheRun) {
  const std::string args = "train " + kTiny + " data.name=8gaussians eval.nfe=1,2 ";
  ASSERT_EQ(run(args + "--out " + path("plain")).status, 0);
  const Result train = run(args + "eval.every=2 eval.every_num=150 --out " + path("scored"));
  ASSERT_EQ(train.status, 0) << train.out;
  // At step 4 the EMA (decay 0.999) is still 99.6% the initial weights, and says so.
  EXPECT_NE(train.out.find("evaluation at step 4 against 150 held-out samples (EMA weights, still 100% the initial "
                           "weights)"),
            std::string::npos)
      << train.out;
  EXPECT_EQ(losses(path("scored/metrics.jsonl")), losses(path("plain/metrics.jsonl")));
  std::vector<int64_t> steps;
  std::ifstream metrics(path("scored/metrics.jsonl"));
  for (std::string line; std::getline(metrics, line);) {
    const auto record = nlohmann::json::parse(line);
    if (!record.contains("eval")) continue;
    steps.push_back(record["step"].get<int64_t>());
    ASSERT_EQ(record["eval"].size(), 2u) << line;
    EXPECT_EQ(record["eval"][1]["nfe"], 2);
    for (const char* metric : {"energy_distance", "w2", "precision", "recall", "coverage"})
      EXPECT_TRUE(record["eval"][0][metric].is_number()) << metric << " in " << line;
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{2, 4, 6}));  // 6: the final evaluation (eval.num)
  std::ifstream report(path("scored/report.html"));
  const std::string html((std::istreambuf_iterator<char>(report)), std::istreambuf_iterator<char>());
  EXPECT_NE(html.find("id='evaluations'"), std::string::npos);
  EXPECT_NE(html.find("<th>initial weights in the EMA</th>"), std::string::npos);
  EXPECT_NE(html.find("<tr><td>2</td><td>100%</td>"), std::string::npos);
}

// A short training run for the settings that must not change a number, and the check that two
// such runs are the same: losses, weights, EMA and optimizer state, bit for bit.
const std::string kSameRunArgs = "train train.steps=8 train.log_every=1 train.sample_every=0 eval.at_end=false "
                                 "data.name=8gaussians train.batch_size=512 model.width=256 model.depth=2 ";

void expect_same_run(const std::string& a, const std::string& b) {
  EXPECT_EQ(losses(a + "/metrics.jsonl"), losses(b + "/metrics.jsonl"));
  const auto first = onestep::read_safetensors(a + "/checkpoint.safetensors").tensors;
  const auto second = onestep::read_safetensors(b + "/checkpoint.safetensors").tensors;
  ASSERT_EQ(first.size(), second.size());
  for (const auto& [name, tensor] : first) EXPECT_TRUE(torch::equal(tensor, second.at(name))) << name;
}

// train.cpu_memory changes where freed tensors go, not a number: with blocks of 512 KiB (batch 512,
// width 256; above glibc's initial bound for mapping), the two runs give the same losses, weights,
// EMA and optimizer state, bit for bit.
TEST_F(Cli, KeptOrReleasedMemoryGivesTheSameRun) {
  ASSERT_EQ(run(kSameRunArgs + "train.cpu_memory=keep --out " + path("keep")).status, 0);
  ASSERT_EQ(run(kSameRunArgs + "train.cpu_memory=release --out " + path("release")).status, 0);
  expect_same_run(path("keep"), path("release"));
}

// train.cpu_wait changes when the work is done, not what is computed: the same two-thread run
// with idle OpenMP workers asleep or spinning, bit for bit.
TEST_F(Cli, IdleOpenMpWorkersWaitingAnyWayGiveTheSameRun) {
  const std::string args = "env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT " ONESTEP_BINARY " " + kSameRunArgs + "train.threads=2 ";
  ASSERT_EQ(run_command(args + "train.cpu_wait=sleep --out " + path("sleep")).status, 0);
  ASSERT_EQ(run_command(args + "train.cpu_wait=spin --out " + path("spin")).status, 0);
  expect_same_run(path("sleep"), path("spin"));
}

// train.ema_warmup reaches the EMA: after one step the shadow is 0.1 initial + 0.9 live (decay
// (1 + 0) / (10 + 0)), where the plain EMA is 0.999 initial + 0.001 live (the initial weights are
// recovered from that run: both runs take the same step). A resumed run goes on with the warm-up
// at its step: its EMA equals an uninterrupted run's bit for bit.
TEST_F(Cli, EmaWarmupSetsTheFirstDecaysAndResumesAtItsStep) {
  const std::string args = "train " + kTiny + " data.name=8gaussians eval.at_end=false ";
  ASSERT_EQ(run(args + "train.steps=1 --out " + path("plain")).status, 0);
  ASSERT_EQ(run(args + "train.steps=1 train.ema_warmup=true --out " + path("warm")).status, 0);
  const auto plain = onestep::read_safetensors(path("plain/checkpoint.safetensors")).tensors;
  const auto warm = onestep::read_safetensors(path("warm/checkpoint.safetensors")).tensors;
  int checked = 0;
  for (const auto& [name, shadow] : plain) {
    if (name.rfind("ema.", 0) != 0) continue;
    const auto live = plain.at("model." + name.substr(4));
    ASSERT_TRUE(torch::equal(live, warm.at("model." + name.substr(4)))) << name;  // the same step
    const auto initial = (shadow.to(torch::kDouble) - 0.001 * live.to(torch::kDouble)) / 0.999;
    EXPECT_TRUE(torch::allclose(warm.at(name).to(torch::kDouble), 0.1 * initial + 0.9 * live.to(torch::kDouble),
                                1e-5, 1e-6))
        << name;
    ++checked;
  }
  EXPECT_GT(checked, 0);
  ASSERT_EQ(run(args + "train.steps=6 train.ema_warmup=true --out " + path("whole")).status, 0);
  ASSERT_EQ(run(args + "train.steps=3 train.ema_warmup=true --out " + path("split")).status, 0);
  ASSERT_EQ(run("train --resume " + path("split") + " train.steps=6").status, 0);
  const auto whole = onestep::read_safetensors(path("whole/checkpoint.safetensors")).tensors;
  const auto split = onestep::read_safetensors(path("split/checkpoint.safetensors")).tensors;
  for (const auto& [name, tensor] : whole) {
    if (name.rfind("ema.", 0) == 0) {
      EXPECT_TRUE(torch::equal(tensor, split.at(name))) << name;
    }
  }
}

TEST_F(Cli, SampleAndEvalFollowTheContract) {
  ASSERT_EQ(run("train " + kTiny + " data.name=8gaussians --out " + path("run")).status, 0);
  for (const char* file : {"config.toml", "checkpoint.safetensors", "metrics.jsonl", "samples.png", "report.html"})
    EXPECT_TRUE(fs::exists(path("run/") + file)) << file;
  std::ifstream metrics(path("run/metrics.jsonl"));
  std::string first_record;
  std::getline(metrics, first_record);
  EXPECT_GT(nlohmann::json::parse(first_record).at("steps_per_s").get<double>(), 0.0) << first_record;  // counts step 1
  const Result sample = run("sample --ckpt " + path("run") + " --nfe 2 --num 123 --class 3 --out " + path("s.npy"));
  ASSERT_EQ(sample.status, 0) << sample.out;
  const auto samples = onestep::read_npy(path("s.npy"));
  EXPECT_EQ(samples.sizes(), (std::vector<int64_t>{123, 2}));
  ASSERT_EQ(run("sample --ckpt " + path("run") + " --out " + path("s.png")).status, 0);
  EXPECT_GT(fs::file_size(path("s.png")), 100u);

  const Result eval = run("eval --ckpt " + path("run/checkpoint.safetensors") + " --nfe 1,3 --num 300");
  ASSERT_EQ(eval.status, 0) << eval.out;
  std::string last_line;
  std::istringstream lines(eval.out);
  for (std::string line; std::getline(lines, line);)
    if (!line.empty()) last_line = line;
  const auto json = nlohmann::json::parse(last_line);
  ASSERT_EQ(json["results"].size(), 2u);
  EXPECT_EQ(json["results"][1]["nfe"], 3);
  EXPECT_EQ(json["results"][1]["head_nfe"], 0);
  // 8gaussians is labelled by mode, so coverage is reported too; the floor row has every metric.
  for (const char* metric : {"energy_distance", "sliced_w2", "mmd_rbf", "w2", "precision", "recall", "coverage"}) {
    EXPECT_TRUE(json["results"][0][metric].is_number()) << metric;
    EXPECT_TRUE(json["floor"][metric].is_number()) << metric;
  }
}

// Every registered method: a short run on a toy, stopped and resumed, against an uninterrupted
// one (losses, weights, EMA, target EMA, optimizer state: bit for bit), then sample and eval.
class MethodRoundTrip : public Cli, public ::testing::WithParamInterface<std::string> {};

TEST_P(MethodRoundTrip, TrainsResumesExactlySamplesAndEvaluates) {
  const std::string method = GetParam();
  const std::string common = onestep::testing_support::method_overrides(method) +
                             "data.name=8gaussians model.width=32 model.depth=2 "
                             "train.log_every=1 train.sample_every=0 eval.at_end=false ";
  ASSERT_EQ(run("train " + common + "train.steps=30 --out " + path("whole")).status, 0);
  ASSERT_EQ(run("train " + common + "train.steps=12 --out " + path("split")).status, 0);
  const Result resumed = run("train --resume " + path("split") + " train.steps=30");
  ASSERT_EQ(resumed.status, 0) << resumed.out;
  const auto whole = losses(path("whole/metrics.jsonl"));
  ASSERT_EQ(whole.size(), 30u);
  EXPECT_EQ(whole, losses(path("split/metrics.jsonl")));  // bit for bit
  const auto a = onestep::read_safetensors(path("whole/checkpoint.safetensors"));
  const auto b = onestep::read_safetensors(path("split/checkpoint.safetensors"));
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  int ema_tensors = 0;
  for (const auto& [name, tensor] : a.tensors) {
    ASSERT_TRUE(b.tensors.count(name)) << name;
    EXPECT_TRUE(torch::equal(tensor, b.tensors.at(name))) << name;
    ema_tensors += name.rfind("ema.", 0) == 0;
  }
  EXPECT_GT(ema_tensors, 0);
  EXPECT_EQ(a.metadata.at("step"), "30");
  const Result sample = run("sample --ckpt " + path("whole") + " --nfe 2 --num 50 --out " + path("s.npy"));
  ASSERT_EQ(sample.status, 0) << sample.out;
  EXPECT_EQ(onestep::read_npy(path("s.npy")).size(0), 50);
  const Result eval = run("eval --ckpt " + path("whole") + " --nfe 1,2 --num 200");
  ASSERT_EQ(eval.status, 0) << eval.out;
  const auto json = nlohmann::json::parse(eval.out.substr(eval.out.find("{\"results\"")));
  ASSERT_EQ(json["results"].size(), 2u);
  EXPECT_TRUE(json["results"][1]["energy_distance"].is_number());
  EXPECT_TRUE(json["results"][1]["head_nfe"].is_number());
}

INSTANTIATE_TEST_SUITE_P(Registered, MethodRoundTrip,
                         ::testing::ValuesIn(onestep::testing_support::registered_names("method")),
                         onestep::testing_support::parameter_name);

TEST_F(Cli, FlowMatchingOnCheckerboardImprovesWithNfe) {
  const Result train = run("train method.name=fm data.name=checkerboard train.steps=2000 train.log_every=500 "
                           "train.sample_every=0 eval.nfe=1,50 eval.num=3000 --out " + path("fm"));
  ASSERT_EQ(train.status, 0) << train.out;
  const Result eval = run("eval --ckpt " + path("fm") + " --nfe 1,50 --num 3000");
  ASSERT_EQ(eval.status, 0) << eval.out;
  const auto json = nlohmann::json::parse(eval.out.substr(eval.out.find("{\"results\"")));
  const double one = json["results"][0]["energy_distance"], fifty = json["results"][1]["energy_distance"];
  RecordProperty("energy_distance_1", std::to_string(one));
  RecordProperty("energy_distance_50", std::to_string(fifty));
  EXPECT_LT(fifty, 0.25 * one) << "1 NFE " << one << ", 50 NFE " << fifty;
  EXPECT_LT(fifty, 0.02);
}

TEST_F(Cli, NonFiniteLossesStopTheRunAndKeepTheLastGoodCheckpoint) {
  // A learning rate of 1e6 overflows the weights within a few steps.
  const Result result = run("train " + kTiny + " train.steps=200 train.lr=1e6 train.warmup=0 train.grad_clip=0 "
                            "train.ckpt_every=1 train.max_nonfinite=3 --out " + path("nan"));
  EXPECT_EQ(result.status, 1) << result.out;
  EXPECT_NE(result.out.find("non-finite"), std::string::npos) << result.out;
  const Result eval = run("eval --ckpt " + path("nan") + " --nfe 1 --num 100");
  ASSERT_EQ(eval.status, 0) << eval.out;
  const auto json = nlohmann::json::parse(eval.out.substr(eval.out.find("{\"results\"")));
  EXPECT_TRUE(json["results"][0]["energy_distance"].is_number()) << eval.out;
}

TEST_F(Cli, ShippedConfigTrainsOnAUserPointCloud) {
  std::ofstream csv(path("cloud.csv"));
  csv << "x,y,z\n";
  for (int i = 0; i < 600; ++i) csv << (i % 7) * 0.3 << "," << (i % 11) * -0.2 << "," << (i % 5) * 0.1 << "\n";
  csv.close();
  const Result train = run("train -c " + std::string(ONESTEP_SOURCE_DIR) + "/configs/toy/meanflow-checkerboard.toml " +
                           "data.name=points:" + path("cloud.csv") + " train.steps=20 train.log_every=10 " +
                           "eval.num=60 --out " + path("cloud"));
  ASSERT_EQ(train.status, 0) << train.out;
  EXPECT_NE(train.out.find("540 training, 60 held-out"), std::string::npos) << train.out;
  const Result sample = run("sample --ckpt " + path("cloud") + " --num 7 --out " + path("cloud.npy"));
  ASSERT_EQ(sample.status, 0) << sample.out;
  EXPECT_EQ(onestep::read_npy(path("cloud.npy")).sizes(), (std::vector<int64_t>{7, 3}));
}

TEST_F(Cli, ShippedImageConfigTrainsOnAUserImageFolder) {
  // Two classes (sub-folders) of 12 x 10 RGB pictures, dark and bright.
  for (const auto& [name, value] : {std::pair<std::string, int>{"dark", 40}, {"bright", 200}}) {
    fs::create_directories(dir_ / "pictures" / name);
    for (int i = 0; i < 6; ++i)
      onestep::write_png(path("pictures/" + name + "/" + std::to_string(i) + ".png"),
                         torch::full({12, 10, 3}, value + 5 * i, torch::kUInt8));
  }
  const std::string folder = "folder:" + path("pictures");
  const Result train = run("train -c " + std::string(ONESTEP_SOURCE_DIR) + "/configs/fmnist/meanflow.toml " +
                           "data.name=" + folder + " data.size=16 model.channels=8 " +
                           "model.emb_dim=16 train.batch_size=4 train.steps=3 train.log_every=1 eval.every=1 --out " +
                           path("run"));
  ASSERT_EQ(train.status, 0) << train.out;
  EXPECT_NE(train.out.find("no evaluation during or at the end of training: data.name = '" + folder),
            std::string::npos)
      << train.out;
  EXPECT_TRUE(fs::exists(path("run/samples.png")));
  const Result sample = run("sample --ckpt " + path("run") + " --num 4 --out " + path("rows.npy"));
  ASSERT_EQ(sample.status, 0) << sample.out;
  EXPECT_EQ(onestep::read_npy(path("rows.npy")).sizes(), (std::vector<int64_t>{4, 3, 16, 16}));  // 2 per class
  expect_user_error("eval --ckpt " + path("run") + " --num 4", {folder, "eval.evaluator"});
  // Attention levels are named relative to the network: a level it lacks is a clear error.
  expect_user_error("train -c " + std::string(ONESTEP_SOURCE_DIR) + "/configs/fmnist/meanflow.toml data.name=" +
                        folder + " data.size=16 model.attention_levels=3 --out " + path("bad"),
                    {"model.attention_levels: '3'", "0..2"});
}

TEST_F(Cli, ConditionalMeanFlowPutsOneNfeSamplesOnTheRequestedMode) {
  const Result train = run("train data.name=8gaussians method.name=meanflow method.time_sampler=uniform "
                           "method.adaptive_p=0.5 train.steps=1500 model.width=128 model.depth=3 "
                           "train.lr_schedule=cosine train.ema_decay=0.99 train.log_every=500 train.sample_every=0 "
                           "eval.at_end=false --out " + path("modes"));
  ASSERT_EQ(train.status, 0) << train.out;
  for (int mode = 0; mode < 8; ++mode) {
    const std::string file = path("mode" + std::to_string(mode) + ".npy");
    ASSERT_EQ(run("sample --ckpt " + path("modes") + " --nfe 1 --num 400 --class " + std::to_string(mode) +
                  " --out " + file).status, 0);
    const auto samples = onestep::read_npy(file);
    // The dataset's modes sit on a circle of radius 2 at angles 2 pi k / 8.
    const double angle = 2 * M_PI * mode / 8;
    const auto centre = torch::tensor({2 * std::cos(angle), 2 * std::sin(angle)}).to(torch::kFloat);
    const double near = ((samples - centre).norm(2, 1) < 0.6).to(torch::kDouble).mean().item<double>();
    EXPECT_GT(near, 0.9) << "mode " << mode << ": only " << near << " of the samples lie within 0.6 of it";
  }
}

TEST_F(Cli, ImageRunsAreScoredWithTheCommittedEvaluator) {
  if (!fs::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")) GTEST_SKIP() << "no Fashion-MNIST";
  const Result train = run("train data.name=fashion-mnist method.name=meanflow model.name=unet model.channels=16 "
                           "model.channel_mult=1,2 model.num_res_blocks=1 model.emb_dim=32 train.batch_size=16 "
                           "train.steps=4 train.log_every=2 eval.at_end=false --out " + path("images"));
  ASSERT_EQ(train.status, 0) << train.out;
  const Result eval = run("eval --ckpt " + path("images") + " --nfe 1 --num 100 eval.cache_dir=" + path("cache"));
  ASSERT_EQ(eval.status, 0) << eval.out;
  const auto json = nlohmann::json::parse(eval.out.substr(eval.out.find("{\"results\"")));
  for (const char* metric : {"fd", "kid", "precision", "recall", "class_accuracy"})
    EXPECT_TRUE(json["results"][0][metric].is_number()) << metric;
  EXPECT_NE(json["evaluator"].get<std::string>().find("sha256 "), std::string::npos);
  EXPECT_FALSE(fs::is_empty(path("cache")));  // reference features cached
  const Result grid = run("sample --ckpt " + path("images") + " --num 20 --class 3 --out " + path("grid.png"));
  EXPECT_EQ(grid.status, 0) << grid.out;
  // Without --class: one row per class, 25 rounded down to 2 per class.
  const Result rows = run("sample --ckpt " + path("images") + " --num 25 --out " + path("rows.npy"));
  ASSERT_EQ(rows.status, 0) << rows.out;
  EXPECT_EQ(onestep::read_npy(path("rows.npy")).sizes(), (std::vector<int64_t>{20, 1, 28, 28}));
  expect_user_error("eval --ckpt " + path("images") + " --num 100 eval.evaluator=" + path("nothing.safetensors"),
                    {"nothing.safetensors"});
}
