// Data-parallel training over Gloo on loopback. The process group's collectives against closed
// forms (two ranks as threads of this process, buckets forced small); for every registered
// method (the registry drives the list), two processes started by `onestep launch` take the
// optimisation steps of one process that draws the same two shares of the batch as micro-batches
// (train.accumulate = 2) on class-labelled data: equal losses, weights, EMA and optimizer state
// to float tolerance (drifting included: its class groups split); a method whose loss uses
// whole-batch statistics on that data is refused with a clear error instead; drifting on
// unlabelled data gathers the step's samples over processes (the gradient of the whole step)
// and refuses micro-batches; ranks join a TCPStore that torchrun's agent serves, and one
// process under a launcher trains through a group of one exactly as alone; the end-of-run
// evaluation sampled by two processes scores as `onestep eval` does in one; SIGTERM to
// `onestep launch` stops both ranks after the same step with one checkpoint, and the resumed
// two-process run continues exactly as an uninterrupted one; a killed or hung rank makes the
// survivor exit non-zero within train.dist_timeout.
#define ONESTEP_COMPAT_C10D
#include "onestep/core/compat.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>

#include "onestep/core/config.h"
#include "onestep/core/registry.h"
#include "onestep/core/safetensors.h"
#include "onestep/methods/method.h"
#include "onestep/train/distributed.h"
#include "onestep/train/launch.h"
#include "test_support.h"
#include "two_ranks.h"

using namespace onestep;
using namespace onestep::testing_support;

// Every test here runs its ranks on the CPU through Gloo. A LibTorch without gloo's headers (the
// PyTorch wheel's) has NCCL alone, and one GPU holds one NCCL rank: scripts/gpu-check.sh checks
// that path ("nccl" part), and these tests are skipped, saying why (two_ranks.h).

namespace {

int run_to_end(const std::string& args, const std::string& log_path) {
  return wait_for_exit(spawn_onestep(args, {}, log_path), std::chrono::seconds(300));
}

}  // namespace

TEST(ProcessGroupCollectives, SumInSmallBucketsBroadcastAndGather) {
  SKIP_WITHOUT_GLOO();
  on_two_ranks(/*bucket_bytes=*/64, [](ProcessGroup& group) {
    const double r = group.rank();
    // 3 float tensors of 40, 8 and 100 bytes and a double one: several buckets, two dtypes.
    std::vector<torch::Tensor> tensors = {
        torch::arange(10, torch::kFloat) + r, torch::full({2}, 1.0 + r, torch::kFloat),
        torch::arange(25, torch::kFloat).reshape({5, 5}) * (r + 1), torch::full({3}, 0.5 * r, torch::kDouble)};
    group.all_reduce_sum(tensors);
    EXPECT_TRUE(torch::equal(tensors[0], 2 * torch::arange(10, torch::kFloat) + 1));
    EXPECT_TRUE(torch::equal(tensors[1], torch::full({2}, 3.0, torch::kFloat)));
    EXPECT_TRUE(torch::equal(tensors[2], 3 * torch::arange(25, torch::kFloat).reshape({5, 5})));
    EXPECT_TRUE(torch::equal(tensors[3], torch::full({3}, 0.5, torch::kDouble)));
    auto value = torch::full({4}, 7.0 + r);
    group.broadcast({value});
    EXPECT_TRUE(torch::equal(value, torch::full({4}, 7.0)));
    const auto gathered = group.all_gather(torch::full({2}, r, torch::kUInt8));
    ASSERT_EQ(gathered.size(), 2u);
    EXPECT_TRUE(torch::equal(gathered[1], torch::full({2}, 1, torch::kUInt8)));
    EXPECT_EQ(group.share_from_rank0("word", r == 0 ? "from rank 0" : "ignored"), "from rank 0");
  });
}

TEST(ProcessGroupCollectives, AverageGradientsKeepsGradientsUndefinedOnEveryRankUndefined) {
  SKIP_WITHOUT_GLOO();
  on_two_ranks(ProcessGroup::kBucketBytes, [](ProcessGroup& group) {
    const double r = group.rank();
    auto both = torch::zeros({3}, torch::requires_grad());
    auto only_rank1 = torch::zeros({2}, torch::requires_grad());
    auto neither = torch::zeros({2}, torch::requires_grad());
    both.mutable_grad() = torch::full({3}, 2.0 + 2 * r);
    if (r == 1) only_rank1.mutable_grad() = torch::full({2}, 4.0);
    average_gradients(group, {both, only_rank1, neither});
    EXPECT_TRUE(torch::equal(both.grad(), torch::full({3}, 3.0)));         // (2 + 4) / 2
    EXPECT_TRUE(torch::equal(only_rank1.grad(), torch::full({2}, 2.0)));   // (0 + 4) / 2
    EXPECT_FALSE(neither.grad().defined());
  });
}

class DataParallel : public TempFolderTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(DataParallel, TwoProcessesTakeTheStepsOfOneWithTheWholeBatch) {
  SKIP_WITHOUT_GLOO();
  const std::string method = GetParam();
  const std::string common = "train " + onestep::testing_support::method_overrides(method) +
                             "data.name=8gaussians model.width=32 model.depth=2 train.batch_size=64 train.steps=8 "
                             "train.warmup=2 train.log_every=1 train.sample_every=0 train.threads=1 "
                             "eval.at_end=false ";
  Config config;
  config.apply_override("method.name=" + method);
  if (make_method(config)->step_split({{2}, 8, 1.0}) != StepSplit::Shares) {  // 8gaussians: 2-D, 8 classes
    const int status = run_to_end("launch -n 2 -- " + common + "--out " + path("two"), path("two.log"));
    const std::string log = read_raw(path("two.log"));
    EXPECT_EQ(status, 2) << log;
    EXPECT_TRUE(contains(log, "statistics of the whole batch")) << log;
    return;
  }
  ASSERT_EQ(run_to_end(common + "train.accumulate=2 --out " + path("one"), path("one.log")), 0)
      << read_raw(path("one.log"));
  ASSERT_EQ(run_to_end("launch -n 2 -- " + common + "--out " + path("two"), path("two.log")), 0)
      << read_raw(path("two.log"));
  EXPECT_TRUE(contains(read_raw(path("two.log")), "2 processes (gloo)")) << read_raw(path("two.log"));

  const auto one = losses(path("one/metrics.jsonl")), two = losses(path("two/metrics.jsonl"));
  ASSERT_EQ(one.size(), 8u);
  ASSERT_EQ(two.size(), 8u);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_NEAR(one[i], two[i], 1e-5 * std::abs(one[i]) + 1e-7) << "step " << i + 1;
  const auto a = read_safetensors(path("one/checkpoint.safetensors"));
  const auto b = read_safetensors(path("two/checkpoint.safetensors"));
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& [name, tensor] : a.tensors) {
    ASSERT_TRUE(b.tensors.count(name)) << name;
    const auto other = b.tensors.at(name);
    if (tensor.is_floating_point())
      EXPECT_TRUE(torch::allclose(tensor, other, 1e-4, 1e-6)) << name << ": largest difference "
                                                              << (tensor - other).abs().max().item<double>();
    else
      EXPECT_TRUE(torch::equal(tensor, other)) << name;
  }
  // The two runs drew the same streams: both checkpoints hold two, and they agree.
  EXPECT_EQ(a.metadata.at("rng_state_1"), b.metadata.at("rng_state_1"));
  EXPECT_EQ(a.metadata.at("rng_state"), b.metadata.at("rng_state"));
}

// Drifting on unlabelled data: the field of every sample uses the whole step's samples. Two
// processes gather them: each process's gradient with respect to its own generated samples,
// averaged over the processes as the trainer does, is the gradient of one process holding the
// whole step, and so is the loss (two ranks as threads, Gloo, a generator with a fixed output).
TEST(DriftingOverProcesses, GatheredFieldGivesTheGradientOfTheWholeStep) {
  SKIP_WITHOUT_GLOO();
  const int64_t n = 40, p = 60;
  auto gen = seeded(6);
  const auto generated = torch::randn({n, 2}, gen), positives = torch::randn({p, 2}, gen) + 0.5;
  Config config;
  config.apply_override("method.name=drifting");
  config.apply_override("method.n_pos=" + std::to_string(p));
  config.apply_override("method.n_neg=" + std::to_string(n));

  const auto run = [&](ProcessShare* share, const torch::Tensor& x, const torch::Tensor& pos) {
    auto method = make_method(config);
    if (share) method->set_process_share(*share);
    auto net = std::make_shared<FixedOutput>(x.clone());
    ModuleSet modules;
    modules.add("net", net);
    auto noise_gen = seeded(1);
    const auto out = method->loss({modules, nullptr, nullptr, noise_gen}, {pos, {}});
    out.loss.backward();
    return std::make_pair(out.loss.item<double>(), net->out.grad());
  };
  const auto [whole_loss, whole_grad] = run(nullptr, generated, positives);

  std::vector<double> rank_losses(2);
  std::vector<torch::Tensor> grads(2);
  on_two_ranks(ProcessGroup::kBucketBytes, [&](ProcessGroup& group) {
    const int r = group.rank();
    ProcessShare share{r, 2, [&group](const torch::Tensor& t) { return torch::cat(group.all_gather(t)); }};
    std::tie(rank_losses[r], grads[r]) = run(&share, generated.chunk(2)[r], positives.chunk(2)[r]);
  });
  EXPECT_NEAR((rank_losses[0] + rank_losses[1]) / 2, whole_loss, 1e-5 * whole_loss);
  const auto averaged = torch::cat(grads) / 2;  // each rank's rows; the trainer divides by the count
  EXPECT_TRUE(torch::allclose(averaged, whole_grad, 1e-4, 1e-7))
      << "largest difference " << (averaged - whole_grad).abs().max().item<double>();
}

// End to end: `onestep launch -n 2` trains drifting on unlabelled data; micro-batches, queues
// and per-step sizes that do not divide among the processes are refused before any training.
class DriftingOverProcessesRun : public TempFolderTest {};

TEST_F(DriftingOverProcessesRun, TwoProcessesTrainAndUnsplittableStepsAreRefused) {
  SKIP_WITHOUT_GLOO();
  const std::string common = "train " + onestep::testing_support::method_overrides("drifting") +
                             "data.name=checkerboard model.width=32 model.depth=2 method.n_pos=64 method.n_neg=64 "
                             "train.steps=3 train.log_every=1 train.sample_every=0 train.threads=1 eval.at_end=false ";
  ASSERT_EQ(run_to_end("launch -n 2 -- " + common + "--out " + path("two"), path("two.log")), 0)
      << read_raw(path("two.log"));
  EXPECT_TRUE(contains(read_raw(path("two.log")), "2 processes (gloo)")) << read_raw(path("two.log"));
  EXPECT_EQ(losses(path("two/metrics.jsonl")).size(), 3u);

  int run = 0;
  for (const auto& [split, message] : std::vector<std::pair<std::string, std::string>>{
           {common + "train.accumulate=2 ", "set train.accumulate = 1"},
           {"launch -n 2 -- " + common + "method.queue_size=128 ", "train it in one process"},
           {"launch -n 2 -- " + common + "method.n_neg=63 ", "method.n_neg = 63"}}) {
    const std::string name = "refused" + std::to_string(++run);
    const int status = run_to_end(split + "--out " + path(name), path(name + ".log"));
    const std::string log = read_raw(path(name + ".log"));
    EXPECT_EQ(status, 2) << split << "\n" << log;
    EXPECT_TRUE(contains(log, message)) << split << "\n" << log;
  }
}

INSTANTIATE_TEST_SUITE_P(Registered, DataParallel, ::testing::ValuesIn(registered_names("method")),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           for (char& ch : name)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return name;
                         });

class Torchrun : public TempFolderTest {};

TEST_F(Torchrun, RanksJoinTheStoreOfTheAgent) {
  SKIP_WITHOUT_GLOO();
  // torchrun's agent serves the TCPStore itself and says so with TORCHELASTIC_USE_AGENT_STORE.
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(free_port());
  options.isServer = true;
  options.waitWorkers = false;
  c10d::TCPStore agent_store("127.0.0.1", options);
  const std::string args = "train data.name=moons model.width=16 model.depth=2 train.batch_size=32 train.steps=4 "
                           "train.log_every=1 train.sample_every=0 train.threads=1 eval.at_end=false --out " +
                           path("run");
  std::vector<pid_t> ranks;
  for (int rank = 0; rank < 2; ++rank)
    ranks.push_back(spawn_onestep(args,
                                  {{"RANK", std::to_string(rank)}, {"LOCAL_RANK", std::to_string(rank)},
                                   {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"},
                                   {"MASTER_PORT", std::to_string(options.port)},
                                   {"TORCHELASTIC_USE_AGENT_STORE", "True"}},
                                  path("rank" + std::to_string(rank) + ".log")));
  for (int rank = 0; rank < 2; ++rank)
    EXPECT_EQ(wait_for_exit(ranks[rank], std::chrono::seconds(120)), 0)
        << read_raw(path("rank" + std::to_string(rank) + ".log"));
  EXPECT_TRUE(contains(read_raw(path("rank0.log")), "2 processes (gloo)")) << read_raw(path("rank0.log"));
  EXPECT_EQ(read_raw(path("rank1.log")), "");  // only rank 0 prints
}

class SharedEvaluation : public TempFolderTest {};

TEST_F(SharedEvaluation, TwoProcessesScoreAsOneProcessDoes) {
  SKIP_WITHOUT_GLOO();
  // 301 samples: slices of 150 and 151.
  ASSERT_EQ(run_to_end("launch -n 2 -- train data.name=8gaussians model.width=16 model.depth=2 train.steps=10 "
                       "train.log_every=5 train.sample_every=0 train.threads=1 eval.num=301 eval.nfe=1,2 --out " +
                           path("run"),
                       path("train.log")),
            0)
      << read_raw(path("train.log"));
  EXPECT_TRUE(contains(read_raw(path("train.log")), "sampled by 2 processes")) << read_raw(path("train.log"));
  nlohmann::json shared;
  std::ifstream metrics(path("run/metrics.jsonl"));
  for (std::string line; std::getline(metrics, line);)
    if (nlohmann::json::parse(line).contains("eval")) shared = nlohmann::json::parse(line)["eval"];
  ASSERT_EQ(shared.size(), 2u);
  ASSERT_EQ(run_to_end("eval --ckpt " + path("run"), path("eval.log")), 0) << read_raw(path("eval.log"));
  const std::string out = read_raw(path("eval.log"));
  const auto alone = nlohmann::json::parse(out.substr(out.find("{\"results\"")))["results"];
  ASSERT_EQ(alone.size(), 2u);
  for (size_t row = 0; row < 2; ++row) {
    int metrics_compared = 0;
    for (const auto& [name, value] : alone[row].items()) {
      ASSERT_TRUE(shared[row].contains(name)) << name;
      EXPECT_NEAR(shared[row][name].get<double>(), value.get<double>(), 1e-6 * std::abs(value.get<double>()) + 1e-9)
          << name << " at row " << row;
      ++metrics_compared;
    }
    EXPECT_GE(metrics_compared, 8);  // nfe, head_nfe and the point metrics
  }
}

class LaunchStop : public TempFolderTest {};

TEST_F(LaunchStop, SigtermStopsEveryRankAndTheRunResumesExactly) {
  SKIP_WITHOUT_GLOO();
  const std::string common = "train data.name=8gaussians model.width=16 model.depth=2 train.batch_size=64 "
                             "train.log_every=1 train.sample_every=0 train.threads=1 eval.at_end=false ";
  const pid_t launcher = spawn_onestep("launch -n 2 -- " + common + "train.steps=1000000 --out " + path("split"), {},
                                       path("split.log"));
  ASSERT_TRUE(wait_for_lines(path("split/metrics.jsonl"), 4, std::chrono::seconds(120))) << read_raw(path("split.log"));
  kill(launcher, SIGTERM);
  ASSERT_EQ(wait_for_exit(launcher, std::chrono::seconds(60)), 0) << read_raw(path("split.log"));
  EXPECT_TRUE(contains(read_raw(path("split.log")), "onestep launch -n 2 -- train --resume " + path("split")))
      << read_raw(path("split.log"));
  const int64_t stopped = std::stoll(read_safetensors(path("split/checkpoint.safetensors")).metadata.at("step"));
  const std::string total = "train.steps=" + std::to_string(stopped + 4);
  ASSERT_EQ(run_to_end("launch -n 2 -- train --resume " + path("split") + " " + total, path("resume.log")), 0)
      << read_raw(path("resume.log"));
  ASSERT_EQ(run_to_end("launch -n 2 -- " + common + total + " --out " + path("whole"), path("whole.log")), 0)
      << read_raw(path("whole.log"));
  const auto whole = losses(path("whole/metrics.jsonl"));
  ASSERT_EQ(whole.size(), static_cast<size_t>(stopped + 4));
  EXPECT_EQ(whole, losses(path("split/metrics.jsonl")));  // bit for bit: the same collectives in the same order
  const auto a = read_safetensors(path("whole/checkpoint.safetensors"));
  const auto b = read_safetensors(path("split/checkpoint.safetensors"));
  for (const auto& [name, tensor] : a.tensors) EXPECT_TRUE(torch::equal(tensor, b.tensors.at(name))) << name;
}

class DeadRank : public TempFolderTest {
 protected:
  // Starts two ranks of a long run; returns their pids once rank 0 has logged a step.
  std::pair<pid_t, pid_t> start_two_ranks() {
    const std::string port = std::to_string(free_port());
    const std::string args = "train data.name=8gaussians model.width=16 model.depth=2 train.steps=1000000 "
                             "train.log_every=1 train.sample_every=0 train.threads=1 train.dist_timeout=3 --out " +
                             path("run");
    const auto env = [&](int rank) {
      return std::vector<std::pair<std::string, std::string>>{
          {"RANK", std::to_string(rank)}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", port}};
    };
    const pid_t rank0 = spawn_onestep(args, env(0), path("rank0.log"));
    const pid_t rank1 = spawn_onestep(args, env(1), path("rank1.log"));
    EXPECT_TRUE(wait_for_lines(path("run/metrics.jsonl"), 3, std::chrono::seconds(120))) << read_raw(path("rank0.log"));
    return {rank0, rank1};
  }

  // The survivor's exit status, after checking it came within the timeout and said why.
  void expect_survivor_stops(pid_t survivor, const std::string& log) {
    const auto start = std::chrono::steady_clock::now();
    const int status = wait_for_exit(survivor, std::chrono::seconds(60));
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(status, 1) << read_raw(path(log));
    EXPECT_LT(seconds, 3 + 5.0) << "train.dist_timeout = 3 s";
    EXPECT_TRUE(contains(read_raw(path(log)), "died or did not answer within train.dist_timeout = 3 s"))
        << read_raw(path(log));
  }
};

TEST_F(DeadRank, AKilledRankStopsTheOtherWithinTheTimeout) {
  SKIP_WITHOUT_GLOO();
  const auto [rank0, rank1] = start_two_ranks();
  kill(rank1, SIGKILL);
  EXPECT_EQ(wait_for_exit(rank1, std::chrono::seconds(10)), 128 + SIGKILL);
  expect_survivor_stops(rank0, "rank0.log");
}

TEST_F(DeadRank, AHungRankStopsTheOtherWithinTheTimeout) {
  SKIP_WITHOUT_GLOO();
  const auto [rank0, rank1] = start_two_ranks();
  kill(rank1, SIGSTOP);
  expect_survivor_stops(rank0, "rank0.log");
  kill(rank1, SIGKILL);
  wait_for_exit(rank1, std::chrono::seconds(10));
}

TEST_F(Torchrun, OneLaunchedProcessTrainsThroughAGroupOfOne) {
  SKIP_WITHOUT_GLOO();
  // `torchrun --nproc-per-node 1` sets WORLD_SIZE = 1: the process trains through a group of one
  // (Gloo here; NCCL on a GPU, the one-process check of scripts/gpu-check.sh) and takes exactly
  // the steps of a process started alone.
  const std::string args = "train data.name=moons model.width=16 model.depth=2 train.batch_size=32 train.steps=4 "
                           "train.log_every=1 train.sample_every=0 train.threads=1 eval.at_end=false --out ";
  const std::vector<std::pair<std::string, std::string>> launcher = {
      {"RANK", "0"}, {"LOCAL_RANK", "0"}, {"WORLD_SIZE", "1"}, {"MASTER_ADDR", "127.0.0.1"},
      {"MASTER_PORT", std::to_string(free_port())}};
  for (const auto& [name, env] : {std::make_pair(std::string("alone"), decltype(launcher){}),
                                  std::make_pair(std::string("group"), launcher)})
    ASSERT_EQ(wait_for_exit(spawn_onestep(args + path(name), env, path(name + ".log")), std::chrono::seconds(120)), 0)
        << read_raw(path(name + ".log"));
  EXPECT_TRUE(contains(read_raw(path("group.log")), "1 process (gloo)")) << read_raw(path("group.log"));
  EXPECT_FALSE(contains(read_raw(path("alone.log")), "process (")) << read_raw(path("alone.log"));
  const auto alone = losses(path("alone/metrics.jsonl"));
  EXPECT_EQ(alone.size(), 4u);
  EXPECT_EQ(alone, losses(path("group/metrics.jsonl")));
}
