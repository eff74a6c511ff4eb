// `onestep bench`: for every registered method (the registry drives the list) the JSON report
// has every key with positive timings, throughputs and memory; the Fashion-MNIST configs
// bench on the U-Net; bad input exits with status 2 and one line.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "test_support.h"

namespace {

using onestep::testing_support::run_onestep;

const std::string kTinyBench = "--warmup 1 --iters 3 model.width=16 model.depth=2 train.batch_size=16";

class BenchMethod : public onestep::testing_support::TempFolderTest,
                    public ::testing::WithParamInterface<std::string> {};

void expect_positive(const nlohmann::json& report, const std::string& key) {
  ASSERT_TRUE(report.contains(key)) << key << " missing in " << report.dump();
  ASSERT_TRUE(report[key].is_number()) << key << " in " << report.dump();
  EXPECT_GT(report[key].get<double>(), 0) << key;
}

// The keys every report has, with the checks that hold on any device.
void expect_report(const nlohmann::json& report, const std::string& method, int64_t batch) {
  for (const char* key :
       {"tool", "torch", "method", "network", "data", "device", "cpu_gemm", "cpu_gelu", "openmp_wait", "cpu_memory",
        "cpu_memory_tunables", "peak_memory_kind",
        "bf16_note"})
    EXPECT_TRUE(report.contains(key) && report[key].is_string()) << key << " in " << report.dump();
  EXPECT_EQ(report["method"], method);
  EXPECT_EQ(report["batch"], batch);
  for (const char* key : {"parameters", "threads", "blas_threads", "iters", "loss_step0", "train_step_ms", "train_samples_per_s",
                          "peak_memory_mib", "latency_1nfe_batch1_ms"})
    expect_positive(report, key);
  ASSERT_TRUE(report.contains("warmup"));
  ASSERT_TRUE(report.contains("latency_1nfe_batch1_bf16_ms"));
  const auto& bf16 = report["latency_1nfe_batch1_bf16_ms"];
  EXPECT_TRUE(bf16.is_null() || bf16.get<double>() > 0) << report.dump();
  ASSERT_TRUE(report["sampling"].is_array());
  ASSERT_EQ(report["sampling"].size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const auto& entry = report["sampling"][i];
    EXPECT_EQ(entry["nfe"], int64_t{1} << i);
    if (entry["ms_per_batch"].is_null()) {  // a plan the method cannot run says why
      EXPECT_TRUE(entry.contains("note")) << entry.dump();
      EXPECT_NE(i, 0u) << "every method samples in 1 NFE";
      continue;
    }
    expect_positive(entry, "ms_per_batch");
    expect_positive(entry, "samples_per_s");
  }
}

TEST_P(BenchMethod, ReportsEveryKeyWithPositiveNumbers) {
  const std::string method = GetParam();
  const auto result = run_onestep("bench " + kTinyBench + " " + onestep::testing_support::method_overrides(method) +
                                  "--json " + path("bench.json"));
  ASSERT_EQ(result.status, 0) << result.out;
  std::ifstream in(path("bench.json"));
  ASSERT_TRUE(in) << result.out;
  const auto report = nlohmann::json::parse(in);
  expect_report(report, method, 16);
  EXPECT_EQ(report["tool"], "onestep");
  onestep::Config chosen;  // the default network, or the one the method needs
  onestep::testing_support::choose_method(chosen, method);
  EXPECT_EQ(report["network"], chosen.get_string("model.name"));
  EXPECT_EQ(report["device"], "cpu");
  EXPECT_EQ(report["peak_memory_kind"], "cpu_peak_rss");
  EXPECT_EQ(report["warmup"], 1);
  EXPECT_EQ(report["iters"], 3);
}

INSTANTIATE_TEST_SUITE_P(Registered, BenchMethod,
                         ::testing::ValuesIn(onestep::testing_support::registered_names("method")),
                         onestep::testing_support::parameter_name);

TEST(Bench, PrintsJsonOnStdoutForAnImageConfig) {
  const auto result = run_onestep("bench -c " + std::string(ONESTEP_SOURCE_DIR) +
                                  "/configs/fmnist/meanflow.toml --warmup 0 --iters 1 train.batch_size=2 "
                                  "model.channels=8 model.emb_dim=16 model.heads=2 train.cpu_gelu=libtorch "
                                  "train.cpu_memory=release");
  ASSERT_EQ(result.status, 0) << result.out;
  const auto report = nlohmann::json::parse(result.out);
  expect_report(report, "meanflow", 2);
  EXPECT_EQ(report["cpu_gelu"], "LibTorch");
  EXPECT_EQ(report["cpu_memory"], "release");
  EXPECT_EQ(report["cpu_memory_tunables"], "");
  EXPECT_EQ(report["network"], "unet");
  EXPECT_EQ(report["data"], "fashion-mnist");
}

TEST(Bench, BadInputExitsWithStatus2) {
  // Flags (CLI11 adds a "Run with --help" line) and config keys or values (one line).
  for (const std::string args : {"bench --iters 0", "bench --warmup -1", "bench -c /nonexistent.toml"}) {
    const auto result = run_onestep(args);
    EXPECT_EQ(result.status, 2) << args << "\n" << result.out;
  }
  for (const std::string args : {"bench model.widht=3", "bench train.batch_size=0",
                                 "bench --iters 1 --json /nonexistent-dir/x.json model.width=8 model.depth=1"}) {
    const auto result = run_onestep(args);
    EXPECT_EQ(result.status, 2) << args << "\n" << result.out;
    EXPECT_EQ(std::count(result.out.begin(), result.out.end(), '\n'), 1) << args << "\n" << result.out;
  }
}

}  // namespace
