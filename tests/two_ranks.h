// Two ranks of a data-parallel run as two threads of the test process, joined in a Gloo group on
// loopback, for tests of collectives and of the training step over processes; and the skip of
// such tests in builds without gloo's headers (the PyTorch wheel's LibTorch has NCCL alone).
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "onestep/train/distributed.h"
#include "onestep/train/launch.h"

#define SKIP_WITHOUT_GLOO()       \
  if (onestep::gloo_built()) {    \
  } else                          \
    GTEST_SKIP() << "this onestep was built without Gloo (gloo's headers, Debian: libgloo-dev)"

namespace onestep::testing_support {

// Runs `body(group)` on two ranks, one thread each, with buckets of `bucket_bytes`; a rank's
// exception fails the test with its message.
inline void on_two_ranks(int64_t bucket_bytes, const std::function<void(ProcessGroup&)>& body) {
  const int port = free_port();
  std::vector<std::thread> ranks;
  std::vector<std::string> failures(2);
  for (int rank = 0; rank < 2; ++rank) {
    ranks.emplace_back([&, rank] {
      try {
        DistributedEnv env;
        env.rank = rank;
        env.world_size = 2;
        env.master_port = port;
        ProcessGroup group(env, torch::kCPU, std::chrono::seconds(30), bucket_bytes);
        body(group);
      } catch (const std::exception& err) {
        failures[rank] = err.what();
      }
    });
  }
  for (auto& thread : ranks) thread.join();
  for (const auto& failure : failures) EXPECT_EQ(failure, "");
}

}  // namespace onestep::testing_support
