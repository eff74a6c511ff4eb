// Data-parallel training on torch's c10d: one small interface over ProcessGroupGloo (CPU
// tensors) and ProcessGroupNCCL (CUDA tensors, in builds against a CUDA LibTorch). The
// processes meet through a TCPStore at MASTER_ADDR:MASTER_PORT, from the variables torchrun
// sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; under torchrun's agent,
// TORCHELASTIC_USE_AGENT_STORE=True, the agent hosts the store). Every collective waits at most
// the group's timeout; a failed or timed-out collective (a rank died or hangs) throws
// CollectiveError.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace onestep {

struct DistributedEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool agent_store = false;  // torchrun's agent already serves the TCPStore
  // WORLD_SIZE is set: a launcher (torchrun, `onestep launch`) started this process, which then
  // trains through a process group even alone (WORLD_SIZE = 1: the path of N processes, e.g. a
  // one-GPU NCCL check).
  bool launched = false;
};

// Whether this build has Gloo (collectives of CPU tensors): gloo's headers were found.
bool gloo_built();

// Reads the variables above; without WORLD_SIZE, one process without a group. Throws UserError
// for values that are not numbers or out of range, naming the variable.
DistributedEnv distributed_env_from_environment();

class CollectiveError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class ProcessGroup {
 public:
  static constexpr int64_t kBucketBytes = 16 << 20;

  // Rendezvous of all env.world_size processes, then a Gloo group (device CPU) or an NCCL group
  // (device CUDA). Throws CollectiveError when the others do not arrive within `timeout`.
  ProcessGroup(const DistributedEnv& env, const torch::Device& device, std::chrono::milliseconds timeout,
               int64_t bucket_bytes = kBucketBytes);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const;
  int size() const;
  std::string backend_name() const;
  std::chrono::milliseconds timeout() const;

  // Rank 0's values into every rank's tensors (in place).
  void broadcast(const std::vector<torch::Tensor>& tensors);
  // Element-wise sums over the ranks, in place; the tensors are flattened into buckets of at most
  // bucket_bytes (one tensor may exceed it alone) so that a model takes a few collectives, not
  // one per tensor.
  void all_reduce_sum(const std::vector<torch::Tensor>& tensors);
  // Every rank's `tensor` (the same shape on each), in rank order.
  std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor);
  // Rank 0's `value` for `key` on every rank (through the store).
  std::string share_from_rank0(const std::string& key, const std::string& value);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Averages the gradients of `params` over the ranks: summed in flat buckets, divided by the world
// size. A gradient left undefined on every rank stays undefined (the optimizer skips it, as in
// one process); one undefined on some ranks counts as zero there.
void average_gradients(ProcessGroup& group, const std::vector<torch::Tensor>& params);

}  // namespace onestep
