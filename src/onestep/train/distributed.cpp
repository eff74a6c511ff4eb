// Data-parallel process group over c10d (see distributed.h).
#define ONESTEP_COMPAT_C10D
#include "onestep/core/compat.h"

#include "onestep/train/distributed.h"

#include <cstdlib>
#include <functional>

#include "onestep/core/error.h"

namespace onestep {
namespace {

int env_int(const char* name, int fallback, int min, int max) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (*end != '\0' || value < min || value > max)
    throw UserError(std::string("environment variable ") + name + " = '" + text + "': expected an integer in [" +
                    std::to_string(min) + ", " + std::to_string(max) + "]");
  return static_cast<int>(value);
}

}  // namespace

bool gloo_built() {
#ifdef ONESTEP_WITH_GLOO
  return true;
#else
  return false;
#endif
}

DistributedEnv distributed_env_from_environment() {
  DistributedEnv env;
  env.launched = std::getenv("WORLD_SIZE") != nullptr;
  env.world_size = env_int("WORLD_SIZE", 1, 1, 1 << 20);
  env.rank = env_int("RANK", 0, 0, env.world_size - 1);
  env.local_rank = env_int("LOCAL_RANK", env.rank, 0, 1 << 20);
  env.master_port = env_int("MASTER_PORT", env.master_port, 1, 65535);
  if (const char* addr = std::getenv("MASTER_ADDR"); addr != nullptr && *addr != '\0') env.master_addr = addr;
  const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  env.agent_store = agent != nullptr && std::string(agent) == "True";
  if (env.world_size > 1 && std::getenv("RANK") == nullptr)
    throw UserError("environment variable WORLD_SIZE = " + std::to_string(env.world_size) +
                    " but RANK is not set: start the processes with torchrun or `onestep launch`");
  return env;
}

struct ProcessGroup::Impl {
  DistributedEnv env;
  std::chrono::milliseconds timeout;
  int64_t bucket_bytes;
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<compat::ProcessGroupBase> group;
  std::string backend;

  // Runs one collective and waits for it; any failure becomes a CollectiveError naming the rank.
  void run(const char* what, const std::function<c10::intrusive_ptr<c10d::Work>()>& start) {
    try {
      start()->wait();
    } catch (const std::exception& err) {
      throw CollectiveError(describe_failure(what, err.what()));
    }
  }

  std::string describe_failure(const std::string& what, const std::string& detail) const {
    std::string first_line = detail.substr(0, detail.find('\n'));
    return "rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) + ": " + what +
           " failed: another process died or did not answer within train.dist_timeout = " +
           std::to_string(timeout.count() / 1000) + " s (" + first_line + ")";
  }
};

ProcessGroup::ProcessGroup(const DistributedEnv& env, const torch::Device& device, std::chrono::milliseconds timeout,
                           int64_t bucket_bytes)
    : impl_(std::make_unique<Impl>()) {
  impl_->env = env;
  impl_->bucket_bytes = bucket_bytes;
  impl_->timeout = timeout;
  try {
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(env.master_port);
    options.isServer = env.rank == 0 && !env.agent_store;
    options.numWorkers = static_cast<size_t>(env.world_size);
    options.waitWorkers = false;
    options.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, options);
    impl_->store = c10::make_intrusive<c10d::PrefixStore>("onestep", store);
    if (device.is_cuda()) {
#ifdef ONESTEP_WITH_NCCL
      impl_->group = compat::make_nccl_group(impl_->store, env.rank, env.world_size, timeout);
      impl_->backend = "nccl";
#else
      throw UserError(
          "train.device = cuda under a launcher (WORLD_SIZE set) needs NCCL, and this onestep was built without it");
#endif
    } else {
#ifdef ONESTEP_WITH_GLOO
      impl_->group = compat::make_gloo_group(impl_->store, env.rank, env.world_size, timeout);
      impl_->backend = "gloo";
#else
      throw UserError("WORLD_SIZE set (a launcher) on the CPU needs Gloo, and this onestep was built without gloo's "
                      "headers (Debian: libgloo-dev)");
#endif
    }
  } catch (const UserError&) {
    throw;
  } catch (const std::exception& err) {
    throw CollectiveError(impl_->describe_failure("the rendezvous at " + env.master_addr + ":" +
                                                      std::to_string(env.master_port),
                                                  err.what()));
  }
}

ProcessGroup::~ProcessGroup() = default;

int ProcessGroup::rank() const { return impl_->env.rank; }
int ProcessGroup::size() const { return impl_->env.world_size; }
std::string ProcessGroup::backend_name() const { return impl_->backend; }
std::chrono::milliseconds ProcessGroup::timeout() const { return impl_->timeout; }

void ProcessGroup::broadcast(const std::vector<torch::Tensor>& tensors) {
  for (const auto& tensor : tensors) {
    std::vector<torch::Tensor> one = {tensor};
    impl_->run("broadcast", [&] { return impl_->group->broadcast(one); });
  }
}

void ProcessGroup::all_reduce_sum(const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  size_t begin = 0;
  while (begin < tensors.size()) {
    // One bucket: consecutive tensors of one dtype, at most bucket_bytes (at least one tensor).
    size_t end = begin;
    int64_t bytes = 0;
    while (end < tensors.size() && tensors[end].scalar_type() == tensors[begin].scalar_type() &&
           (end == begin || bytes + static_cast<int64_t>(tensors[end].nbytes()) <= impl_->bucket_bytes)) {
      bytes += static_cast<int64_t>(tensors[end].nbytes());
      ++end;
    }
    std::vector<torch::Tensor> flat_parts;
    for (size_t i = begin; i < end; ++i) flat_parts.push_back(tensors[i].reshape({-1}));
    std::vector<torch::Tensor> bucket = {torch::cat(flat_parts)};
    impl_->run("all-reduce", [&] { return impl_->group->allreduce(bucket); });
    int64_t offset = 0;
    for (size_t i = begin; i < end; ++i) {
      const int64_t n = tensors[i].numel();
      tensors[i].copy_(bucket[0].narrow(0, offset, n).view_as(tensors[i]));
      offset += n;
    }
    begin = end;
  }
}

std::vector<torch::Tensor> ProcessGroup::all_gather(const torch::Tensor& tensor) {
  std::vector<torch::Tensor> input = {tensor.contiguous()};
  std::vector<std::vector<torch::Tensor>> output(1);
  for (int r = 0; r < size(); ++r) output[0].push_back(torch::empty_like(input[0]));
  impl_->run("all-gather", [&] { return impl_->group->allgather(output, input); });
  return output[0];
}

std::string ProcessGroup::share_from_rank0(const std::string& key, const std::string& value) {
  try {
    if (rank() == 0) {
      impl_->store->set(key, std::vector<uint8_t>(value.begin(), value.end()));
      return value;
    }
    const auto bytes = impl_->store->get(key);
    return std::string(bytes.begin(), bytes.end());
  } catch (const std::exception& err) {
    throw CollectiveError(impl_->describe_failure("reading '" + key + "' from rank 0", err.what()));
  }
}

void average_gradients(ProcessGroup& group, const std::vector<torch::Tensor>& params) {
  torch::NoGradGuard no_grad;
  if (params.empty()) return;
  // How many ranks hold each gradient, then the gradients themselves (zeros where undefined).
  std::vector<float> holds(params.size());
  std::vector<torch::Tensor> grads;
  for (size_t i = 0; i < params.size(); ++i) {
    holds[i] = params[i].grad().defined() ? 1.0f : 0.0f;
    grads.push_back(params[i].grad().defined() ? params[i].grad() : torch::zeros_like(params[i]));
  }
  auto holders = torch::tensor(holds).to(params[0].device());
  group.all_reduce_sum({holders});
  group.all_reduce_sum(grads);
  holders = holders.cpu();
  const double scale = 1.0 / group.size();
  for (size_t i = 0; i < params.size(); ++i) {
    if (holders[static_cast<int64_t>(i)].item<float>() == 0) continue;
    torch::Tensor param = params[i];
    if (!param.grad().defined()) param.mutable_grad() = grads[i];
    param.mutable_grad().mul_(scale);
  }
}

}  // namespace onestep
