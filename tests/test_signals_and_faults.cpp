// What clusters and users do to a training run: SIGTERM mid-run writes a checkpoint and exits 0,
// and --resume then logs bit for bit the losses of an uninterrupted run; a second signal stops at
// once; kill -9 at any moment leaves a readable checkpoint; a full disk (a file-size limit, which
// fails writes as ENOSPC does) or an unwritable run folder gives one clear line and status 2 and
// keeps the previous checkpoint.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "onestep/core/safetensors.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace onestep::testing_support;

namespace {

class SignalsAndFaults : public TempFolderTest {
 protected:
  // Runs the binary to its end; returns its exit status and puts its output in `out`.
  int run(const std::string& args, std::string* out = nullptr) {
    const pid_t pid = spawn_onestep(args, {}, path("log.txt"));
    const int status = wait_for_exit(pid, std::chrono::seconds(300));
    if (out) *out = read_raw(path("log.txt"));
    return status;
  }
};

const std::string kRun = "train data.name=8gaussians model.width=16 model.depth=2 train.batch_size=64 "
                         "train.log_every=1 train.sample_every=0 train.threads=1 eval.at_end=false ";

}  // namespace

TEST_F(SignalsAndFaults, SigtermWritesACheckpointAndResumeContinuesExactly) {
  // A run far too long to finish, stopped once it has logged a few steps.
  const pid_t pid = spawn_onestep(kRun + "train.steps=1000000 --out " + path("split"), {}, path("split.log"));
  ASSERT_TRUE(wait_for_lines(path("split/metrics.jsonl"), 5, std::chrono::seconds(120))) << read_raw(path("split.log"));
  kill(pid, SIGTERM);
  ASSERT_EQ(wait_for_exit(pid, std::chrono::seconds(60)), 0) << read_raw(path("split.log"));
  const std::string log = read_raw(path("split.log"));
  EXPECT_TRUE(contains(log, "onestep train --resume " + path("split"))) << log;
  const auto checkpoint = onestep::read_safetensors(path("split/checkpoint.safetensors"));
  const int64_t stopped = std::stoll(checkpoint.metadata.at("step"));
  ASSERT_GE(stopped, 5);
  ASSERT_EQ(static_cast<int64_t>(losses(path("split/metrics.jsonl")).size()), stopped);

  const std::string total = std::to_string(stopped + 6);
  std::string out;
  ASSERT_EQ(run("train --resume " + path("split") + " train.steps=" + total, &out), 0) << out;
  ASSERT_EQ(run(kRun + "train.steps=" + total + " --out " + path("whole"), &out), 0) << out;
  const auto whole = losses(path("whole/metrics.jsonl"));
  ASSERT_EQ(whole.size(), static_cast<size_t>(stopped + 6));
  EXPECT_EQ(whole, losses(path("split/metrics.jsonl")));  // bit for bit
  const auto a = onestep::read_safetensors(path("whole/checkpoint.safetensors"));
  const auto b = onestep::read_safetensors(path("split/checkpoint.safetensors"));
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& [name, tensor] : a.tensors) EXPECT_TRUE(torch::equal(tensor, b.tensors.at(name))) << name;
}

TEST_F(SignalsAndFaults, ASecondSignalStopsAtOnce) {
  const pid_t pid = spawn_onestep(kRun + "train.steps=1000000 --out " + path("run"), {}, path("run.log"));
  ASSERT_TRUE(wait_for_lines(path("run/metrics.jsonl"), 2, std::chrono::seconds(120))) << read_raw(path("run.log"));
  // Both signals wait while the process is stopped and arrive together when it continues.
  kill(pid, SIGSTOP);
  kill(pid, SIGINT);
  kill(pid, SIGTERM);
  kill(pid, SIGCONT);
  const int status = wait_for_exit(pid, std::chrono::seconds(60));
  EXPECT_TRUE(status == 128 + SIGINT || status == 128 + SIGTERM) << status << "\n" << read_raw(path("run.log"));
  const std::string log = read_raw(path("run.log"));
  EXPECT_TRUE(contains(log, "stopping after this step")) << log;  // the first signal was caught
  EXPECT_FALSE(contains(log, "--resume")) << "a second signal must not wait for a checkpoint";
}

TEST_F(SignalsAndFaults, KillNineLeavesAReadableCheckpoint) {
  const pid_t pid =
      spawn_onestep(kRun + "train.steps=1000000 train.ckpt_every=1 --out " + path("run"), {}, path("run.log"));
  ASSERT_TRUE(wait_for_lines(path("run/metrics.jsonl"), 20, std::chrono::seconds(120))) << read_raw(path("run.log"));
  kill(pid, SIGKILL);
  EXPECT_EQ(wait_for_exit(pid, std::chrono::seconds(60)), 128 + SIGKILL);
  std::string out;
  ASSERT_EQ(run("train --resume " + path("run") + " train.steps=30", &out), 0) << out;
  EXPECT_TRUE(contains(out, "resumed at step")) << out;
}

TEST_F(SignalsAndFaults, AFullDiskKeepsThePreviousCheckpoint) {
  std::string out;
  ASSERT_EQ(run(kRun + "train.steps=4 --out " + path("run"), &out), 0) << out;
  const std::string before = read_raw(path("run/checkpoint.safetensors"));
  // Files may grow to a third of the checkpoint's size: config.toml and metrics.jsonl fit, the
  // next checkpoint does not. SIGXFSZ is ignored so that the write fails as on a full disk.
  const size_t blocks = before.size() / 3 / 512;
  const std::string command = "trap '' XFSZ; ulimit -f " + std::to_string(blocks) + "; exec " + ONESTEP_BINARY +
                              " train --resume " + path("run") + " train.steps=8 > " + path("full.log") + " 2>&1";
  const int status = std::system(command.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
  const std::string log = read_raw(path("full.log"));
  EXPECT_TRUE(contains(log, path("run/checkpoint.safetensors") + ": cannot write file")) << log;
  EXPECT_TRUE(contains(log, "the previous checkpoint is kept")) << log;
  EXPECT_EQ(read_raw(path("run/checkpoint.safetensors")), before);
  for (const auto& entry : fs::directory_iterator(path("run")))
    EXPECT_FALSE(contains(entry.path().filename().string(), ".tmp")) << entry.path();
  // With room again, the run continues from the kept checkpoint.
  ASSERT_EQ(run("train --resume " + path("run") + " train.steps=8", &out), 0) << out;
  EXPECT_TRUE(contains(out, "resumed at step 4")) << out;
}

TEST_F(SignalsAndFaults, AnUnwritableRunFolderIsAClearError) {
  // /proc refuses new folders even to root, for whom permission bits would not.
  std::string out;
  EXPECT_EQ(run(kRun + "train.steps=4 --out /proc/onestep-run", &out), 2) << out;
  EXPECT_TRUE(contains(out, "/proc/onestep-run: cannot create the run folder")) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}
