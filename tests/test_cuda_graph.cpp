// train.cuda_graph: every registered method (the registry drives this) either splits its loss
// into host draws and device work, loss() being loss_given() of draw() draw for draw, or says
// why not, and then a run that asks for CUDA graphs is refused with that reason; with captures
// emulated (cuda_graph.h), a run whose step is captured after a warm-up step trains exactly as
// the eager step does (same outcomes, weights, EMA, target EMA and optimizer state, with
// micro-batches, clipping, labels and every noise coupling, minibatch OT included), in one process
// and in each of two (ranks as threads, Gloo: the gradient average and the stop flag between the
// graphs); the refusals name the key to change; and on a GPU, real captures train as the eager
// step does, to float32 rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <mutex>

#include "onestep/core/config.h"
#include "onestep/core/registry.h"
#include "onestep/data/dataset.h"
#include "onestep/methods/method.h"
#include "onestep/train/cuda_graph.h"
#include "onestep/train/training_state.h"
#include "test_support.h"
#include "two_ranks.h"

using namespace onestep;

namespace {

// A small 8gaussians config of `method` with the overrides `extra` ("" is none).
Config toy_config(const std::string& method, const std::vector<std::string>& extra = {}) {
  Config config;
  for (const auto* o : {"data.name=8gaussians", "model.width=32", "model.depth=2", "train.batch_size=64",
                        "train.threads=1"})
    config.apply_override(o);
  testing_support::choose_method(config, method);
  for (const auto& o : extra)
    if (!o.empty()) config.apply_override(o);
  config.validate();
  return config;
}

bool all_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!torch::equal(a[i], b[i])) return false;
  return true;
}

// Every registered method with each choice of method.coupling where it has the key (the
// override), else once (no override: "").
std::vector<std::pair<std::string, std::string>> methods_and_couplings() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& name : testing_support::registered_names("method")) {
    const auto before = out.size();
    for (const auto& spec : toy_config(name).keys())
      if (spec.key == "method.coupling")
        for (const auto& choice : spec.choices) out.emplace_back(name, "method.coupling=" + choice);
    if (out.size() == before) out.emplace_back(name, "");
  }
  return out;
}

// Six steps of every method that splits its loss, eagerly and with train.cuda_graph, on `device`
// (through `group` where given: this process's share): two micro-batches, clipping that bites, the
// EMA and learning-rate warm-ups (the rates change at every step), labels with dropout
// (8gaussians), and each of its noise couplings (method.coupling, where it has the key);
// `stop_requested(step)` is passed to both. `each_step(step, ...)` compares the two
// steps' outcomes, `at_end` the two states.
void train_eager_and_captured(const std::string& device,
                              const std::function<void(int64_t, const StepOutcome&, const StepOutcome&)>& each_step,
                              const std::function<void(TrainingState&, TrainingState&)>& at_end,
                              ProcessGroup* group = nullptr,
                              const std::function<bool(int64_t)>& stop_requested = [](int64_t) { return false; }) {
  for (const auto& [name, coupling] : methods_and_couplings()) {
    const Config eager_config =
        toy_config(name, {"train.device=" + device, "train.accumulate=2", "train.grad_clip=0.05",
                          "train.ema_warmup=true", "train.warmup=3", "train.steps=6", coupling});
    if (!make_method(eager_config)->capture_refusal().empty()) continue;
    SCOPED_TRACE(name + " " + coupling);
    Config graph_config = eager_config;
    graph_config.apply_override("train.cuda_graph=true");
    // Ranks that are threads of one process initialise their modules from its one global
    // generator (train.seed): one at a time, each gets the weights a process of its own gets.
    static std::mutex initialising;
    std::unique_lock<std::mutex> lock(initialising);
    TrainingState eager(eager_config, group), graph(graph_config, group);
    lock.unlock();
    for (int64_t step = 0; step < 6; ++step) {
      SCOPED_TRACE("step " + std::to_string(step));
      const StepOutcome a = eager.step(step, stop_requested(step)), b = graph.step(step, stop_requested(step));
      ASSERT_TRUE(a.finite && b.finite);
      each_step(step, a, b);
    }
    at_end(eager, graph);
  }
}

// The eager and the captured step's outcomes, bit for bit; clipping bites.
void expect_same_outcome(int64_t, const StepOutcome& a, const StepOutcome& b) {
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.grad_norm, b.grad_norm);
  EXPECT_GT(a.grad_norm, 0.05) << "clipping bites";
  EXPECT_EQ(a.parts, b.parts);
}

// The eager and the captured run's states, bit for bit: weights, EMA, target EMA, Adam, streams.
void expect_same_state(TrainingState& eager, TrainingState& graph) {
  EXPECT_TRUE(all_equal(eager.modules().parameters(), graph.modules().parameters()));
  EXPECT_TRUE(all_equal(eager.ema().modules().parameters(), graph.ema().modules().parameters()));
  if (eager.target_ema() != nullptr) {
    EXPECT_TRUE(all_equal(eager.target_ema()->modules().parameters(), graph.target_ema()->modules().parameters()));
  }
  const auto eager_state = eager.optimizer().state(), graph_state = graph.optimizer().state();
  for (const auto& [key, value] : eager_state) EXPECT_TRUE(torch::equal(value, graph_state.at(key))) << key;
  EXPECT_TRUE(all_equal(eager.stream_states(), graph.stream_states()));
}

}  // namespace

class MethodCapture : public ::testing::TestWithParam<std::string> {};

TEST_P(MethodCapture, SplitsItsLossIntoHostDrawsAndDeviceWorkOrSaysWhyNot) {
  const Config config = toy_config(GetParam());
  auto method = make_method(config);
  const std::string refusal = method->capture_refusal();
  if (!refusal.empty()) {
    const EmulatedCudaGraphs emulated;
    Config asked = config;
    asked.apply_override("train.cuda_graph=true");
    const auto message = testing_support::user_error_message([&] { TrainingState state(asked); });
    EXPECT_TRUE(testing_support::contains(message, "method.name = '" + GetParam() + "'")) << message;
    EXPECT_TRUE(testing_support::contains(message, refusal)) << message;
    EXPECT_TRUE(testing_support::contains(message, "train.cuda_graph = false")) << message;
    return;
  }
  auto dataset = make_dataset(config);
  torch::manual_seed(0);
  const DataInfo info{dataset->sample_shape(), dataset->num_classes(), 1.0};
  ModuleSet modules = method->build_modules(config, info);
  auto data_gen = testing_support::seeded(3);
  const Batch batch = method->training_batch(*dataset, 64, data_gen);
  auto whole = testing_support::seeded(7), halves = testing_support::seeded(7);
  const LossOutput expected = method->loss({modules, &modules, nullptr, whole}, batch);
  const LossDraws draws = method->draw(batch, halves);
  for (const auto& draw : draws)
    if (draw.defined()) {
      EXPECT_TRUE(draw.device().is_cpu());
    }
  EXPECT_TRUE(torch::equal(whole.get_state(), halves.get_state())) << "draw() draws what loss() draws";
  auto unused = testing_support::seeded(11);
  const LossOutput split = method->loss_given({modules, &modules, nullptr, unused}, batch, draws_on(draws, torch::kCPU));
  EXPECT_TRUE(torch::equal(split.loss, expected.loss));
  ASSERT_EQ(split.parts.size(), expected.parts.size());
  for (const auto& [name, value] : expected.parts) EXPECT_TRUE(torch::equal(split.parts.at(name), value)) << name;
  EXPECT_TRUE(torch::equal(unused.get_state(), testing_support::seeded(11).get_state())) << "loss_given draws nothing";
}

INSTANTIATE_TEST_SUITE_P(Registered, MethodCapture, ::testing::ValuesIn(testing_support::registered_names("method")),
                         testing_support::parameter_name);

TEST(CudaGraphStep, EmulatedCaptureTrainsAsTheEagerStep) {
  const EmulatedCudaGraphs emulated;
  train_eager_and_captured("cpu", expect_same_outcome, expect_same_state);
}

TEST(CudaGraphStep, EmulatedCaptureOnTwoRanksTrainsAsTheEagerStep) {
  SKIP_WITHOUT_GLOO();
  const EmulatedCudaGraphs emulated;
  testing_support::on_two_ranks(ProcessGroup::kBucketBytes, [](ProcessGroup& group) {
    // Rank 1 is asked to stop at step 4: both ranks learn it, from either step.
    const auto stop_requested = [&group](int64_t step) { return group.rank() == 1 && step == 4; };
    train_eager_and_captured(
        "cpu",
        [](int64_t step, const StepOutcome& a, const StepOutcome& b) {
          expect_same_outcome(step, a, b);
          EXPECT_EQ(a.stop, step == 4);
          EXPECT_EQ(b.stop, step == 4);
        },
        expect_same_state, &group, stop_requested);
  });
}

TEST(CudaGraphStep, RefusedWhereItCannotRun) {
  const auto on_cpu = testing_support::user_error_message(
      [] { TrainingState state(toy_config("fm", {"train.cuda_graph=true"})); });
  EXPECT_TRUE(testing_support::contains(on_cpu, "train.cuda_graph = true needs train.device = cuda, found 'cpu'"))
      << on_cpu;
}

TEST(CudaGraphStep, CapturedStepOnCudaTrainsAsTheEagerStep) {
  if (!cuda_graphs_built() || !torch::cuda::is_available()) GTEST_SKIP() << "needs CUDA";
  // The same kernels run on the same inputs, eagerly or replayed: the runs agree to float32
  // rounding (bit for bit where the libraries pick the same algorithms).
  train_eager_and_captured(
      "cuda",
      [](int64_t, const StepOutcome& a, const StepOutcome& b) {
        EXPECT_NEAR(a.loss, b.loss, 1e-5 * std::abs(a.loss));
        EXPECT_NEAR(a.grad_norm, b.grad_norm, 1e-5 * a.grad_norm);
      },
      [](TrainingState& eager, TrainingState& graph) {
        const auto a = eager.ema().modules().parameters(), b = graph.ema().modules().parameters();
        for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::allclose(a[i], b[i], 1e-5, 1e-6)) << i;
      });
}
