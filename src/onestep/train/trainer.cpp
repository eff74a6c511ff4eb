// The training loop (see trainer.h).
#include "onestep/train/trainer.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>

#include "onestep/core/file_io.h"
#include "onestep/core/error.h"
#include "onestep/core/image_io.h"
#include "onestep/core/progress.h"
#include "onestep/core/runtime.h"
#include "onestep/eval/evaluate.h"
#include "onestep/eval/sample_picture.h"
#include "onestep/methods/method.h"
#include "onestep/train/checkpoint.h"
#include "onestep/train/distributed.h"
#include "onestep/train/ema.h"
#include "onestep/train/optimizer.h"
#include "onestep/train/report.h"
#include "onestep/train/stop_signal.h"
#include "onestep/train/training_state.h"

namespace onestep {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kPictureSamples = 2000;   // points per scatter panel
constexpr int64_t kPictureImages = 64;      // images per grid
constexpr int64_t kPictureImagesPerClass = 8;  // class-conditional grids: one row per class

// Keeps only the metrics.jsonl records of steps <= `step` (a resumed run rewrites the rest).
void truncate_metrics(const fs::path& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    const auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!record.is_discarded() && record.value("step", int64_t{0}) <= step) kept += line + "\n";
  }
  write_file_atomically(path.string(), kept);
}

class Trainer {
 public:
  Trainer(const TrainRequest& request, ProcessGroup* group);
  void run();

 private:
  // One optimizer step; returns true when a stop signal reached any process.
  bool step_once(int64_t step, const StopSignalScope& signals);
  void log_record(int64_t step);
  void write_picture(int64_t step);
  // Evaluates the model (eval.use_ema) on `num` samples at every eval.nfe, all processes
  // together, and writes the record {"step", "eval"} to metrics.jsonl.
  EvalReport evaluate_now(int64_t step, int64_t num);
  void save(int64_t step);
  // The evaluation sample slices of all processes, in rank order (SampleSharing::gather).
  torch::Tensor gather_slices(const torch::Tensor& slice, int64_t num);
  // Rewrites report.html from metrics.jsonl, samples.png and the evaluation `rows`.
  void write_run_report(const std::vector<EvalRow>& rows = {});
  bool writes() const { return rank_ == 0; }  // only rank 0 writes files and prints

  fs::path out_dir_;
  TrainingState state_;
  ProcessGroup* group_;  // null in a one-process run
  int rank_, world_size_;
  int64_t start_step_ = 0, steps_, log_every_;
  int64_t nonfinite_in_a_row_ = 0, nonfinite_total_ = 0;
  // Sums since the last record.
  double loss_sum_ = 0, grad_norm_sum_ = 0;
  std::map<std::string, double> part_sums_;
  int64_t window_steps_ = 0;
  std::ofstream metrics_;
  std::optional<Progress> progress_;
};

Trainer::Trainer(const TrainRequest& request, ProcessGroup* group)
    : out_dir_(request.out_dir),
      state_(request.config, group, request.local_rank),
      group_(group),
      rank_(state_.rank()),
      world_size_(state_.world_size()),
      steps_(state_.config().get_int("train.steps")),
      log_every_(state_.config().get_int("train.log_every")) {
  // Every process reads the checkpoint of a resumed run (the run folder must be on a file system
  // they share); only rank 0 checks, creates and writes the folder.
  const fs::path checkpoint_path = out_dir_ / kCheckpointFileName;
  if (request.resume) {
    const Checkpoint checkpoint = read_checkpoint(checkpoint_path.string());
    load_modules(state_.modules(), checkpoint, "model");
    load_modules(state_.ema().modules(), checkpoint, "ema");
    if (state_.target_ema()) load_modules(state_.target_ema()->modules(), checkpoint, "target_ema");
    const auto states = load_training_state(state_.optimizer(), checkpoint);
    start_step_ = checkpoint.step;
    if (!state_.restore_streams(states, start_step_) && writes())
      std::printf("note: the checkpoint holds %zu data streams and this run splits its steps into %lld; the "
                  "streams restart from the seed (the run continues, but not draw for draw)\n",
                  states.size(), static_cast<long long>(world_size_ * state_.accumulate()));
    if (writes()) truncate_metrics(out_dir_ / "metrics.jsonl", start_step_);
  } else if (writes() && fs::exists(checkpoint_path)) {
    throw UserError(out_dir_.string() + ": already holds a run (" + std::string(kCheckpointFileName) +
                    "); continue it with --resume " + out_dir_.string() + " or choose another --out");
  }
  // Rank 0's weights everywhere (identical already when every rank seeds alike or read the same
  // checkpoint; the broadcast makes it so whatever the ranks did).
  state_.broadcast_weights();
  if (writes()) {
    std::error_code error;
    fs::create_directories(out_dir_, error);
    if (error) throw UserError(out_dir_.string() + ": cannot create the run folder (" + error.message() + ")");
    write_file_atomically((out_dir_ / "config.toml").string(), state_.config().to_toml());
    metrics_.open(out_dir_ / "metrics.jsonl", std::ios::app);
    if (!metrics_) throw UserError((out_dir_ / "metrics.jsonl").string() + ": cannot open for writing");
  }
}

bool Trainer::step_once(int64_t step, const StopSignalScope& signals) {
  const StepOutcome outcome = state_.step(step, signals.received() != 0);
  if (!outcome.finite) {
    ++nonfinite_total_;
    if (++nonfinite_in_a_row_ >= state_.config().get_int("train.max_nonfinite"))
      throw TrainingStopped("step " + std::to_string(step + 1) + ": " + std::to_string(nonfinite_in_a_row_) +
                            " non-finite losses in a row; stopped. The last good checkpoint is kept in " +
                            out_dir_.string());
    return outcome.stop;
  }
  nonfinite_in_a_row_ = 0;
  loss_sum_ += outcome.loss;
  grad_norm_sum_ += outcome.grad_norm;
  for (const auto& [name, value] : outcome.parts) part_sums_[name] += value;
  ++window_steps_;
  return outcome.stop;
}

void Trainer::log_record(int64_t step) {
  nlohmann::ordered_json record;
  record["step"] = step;
  const double n = static_cast<double>(std::max<int64_t>(window_steps_, 1));
  record["loss"] = loss_sum_ / n;
  for (const auto& [name, sum] : part_sums_) record[name] = sum / n;
  record["grad_norm"] = grad_norm_sum_ / n;
  record["lr"] = state_.schedule().at(step - 1);
  record["nonfinite_skipped"] = nonfinite_total_;
  char detail[128];
  std::snprintf(detail, sizeof(detail), "loss %.4f", loss_sum_ / n);
  progress_->update(step, detail);  // first: the rate counts the steps up to this one
  record["steps_per_s"] = progress_->steps_per_second();
  metrics_ << record.dump() << "\n";
  metrics_.flush();
  loss_sum_ = grad_norm_sum_ = 0;
  part_sums_.clear();
  window_steps_ = 0;
}

void Trainer::write_picture(int64_t step) {
  const Config& config = state_.config();
  Dataset& dataset = state_.dataset();
  Method& method = state_.method();
  const bool points = dataset.sample_shape().size() == 1;
  const Batch reference = dataset.heldout(points ? kPictureSamples : kPictureImages);
  // Class-conditional images: one row per class; otherwise the held-out labels.
  const bool class_rows = !points && dataset.num_classes() > 0;
  const int64_t columns = class_rows ? kPictureImagesPerClass : 0;
  const auto labels = class_rows ? class_row_labels(dataset.num_classes(), columns) : reference.y;
  const int64_t count = labels.defined() ? labels.size(0) : reference.x.size(0);
  std::vector<std::pair<std::string, torch::Tensor>> panels;
  const bool use_ema = config.get_bool("eval.use_ema");
  for (const int64_t steps : config.get_int_list("eval.nfe")) {
    const SamplingPlan plan{steps};
    auto samples = generate_samples(method, use_ema ? state_.ema().modules() : state_.modules(), method.noise_shape(state_.data_info()),
                                    count, labels, plan, static_cast<uint64_t>(config.get_int("eval.seed")), state_.device());
    panels.emplace_back(method.name() + ", " + describe_nfe(method.count_nfe(plan)) + ", step " +
                            std::to_string(step),
                        std::move(samples));
  }
  const auto picture = render_sample_picture(reference.x, panels, columns);
  fs::create_directories(out_dir_ / "samples");
  char name[64];
  std::snprintf(name, sizeof(name), "step_%08lld.png", static_cast<long long>(step));
  write_png((out_dir_ / "samples" / name).string(), picture);
  write_png((out_dir_ / "samples.png").string(), picture);
}

EvalReport Trainer::evaluate_now(int64_t step, int64_t num) {
  Config config = state_.config();
  config.apply_override("eval.num=" + std::to_string(num));
  // Every process samples its slice of the evaluation noise and scores all the samples.
  const SampleSharing sharing{rank_, world_size_, [this](const torch::Tensor& slice, int64_t count) {
                                return gather_slices(slice, count);
                              }};
  const bool use_ema = config.get_bool("eval.use_ema");
  EvalReport report = evaluate(state_.method(), use_ema ? state_.ema().modules() : state_.modules(), state_.dataset(),
                               config, state_.device(), group_ ? &sharing : nullptr);
  if (writes()) {
    const std::string weights =
        use_ema ? "EMA weights" + state_.ema().schedule().initial_share_note(step) : std::string("raw weights");
    std::printf("evaluation at step %lld against %lld held-out samples (%s%s):\n%s", static_cast<long long>(step),
                static_cast<long long>(num), weights.c_str(),
                group_ ? (", sampled by " + std::to_string(world_size_) + " processes").c_str() : "",
                format_eval_table(report).c_str());
    std::fflush(stdout);
    nlohmann::ordered_json record;
    record["step"] = step;
    record["eval"] = nlohmann::ordered_json::parse(eval_json(report))["results"];
    metrics_ << record.dump() << "\n";
    metrics_.flush();
  }
  return report;
}

void Trainer::save(int64_t step) {
  // Every process hands its stream states to rank 0 (a collective: all processes save together).
  const std::vector<torch::Tensor> states = state_.stream_states();
  if (!writes()) return;
  const auto& weights = state_.optimizer().parameters();
  if (weights.numel() > 0 && !torch::isfinite(weights.data()).all().item<bool>()) {
    std::fprintf(stderr, "warning: step %lld: non-finite weights; the checkpoint of an earlier step is kept\n",
                 static_cast<long long>(step));
    return;
  }
  const fs::path path = out_dir_ / kCheckpointFileName;
  try {
    save_checkpoint(path.string(), {state_.config(), step, state_.dataset().sample_shape(),
                                    state_.dataset().num_classes(), state_.modules(), state_.ema().modules(),
                                    state_.target_ema() ? &state_.target_ema()->modules() : nullptr,
                                    state_.optimizer(), states});
  } catch (const UserError& err) {
    throw UserError(std::string(err.what()) + " at step " + std::to_string(step) +
                    (fs::exists(path) ? "; the previous checkpoint is kept" : "; no checkpoint was written"));
  }
}

torch::Tensor Trainer::gather_slices(const torch::Tensor& slice, int64_t num) {
  // all_gather needs equal shapes: each slice is padded to the largest, then trimmed.
  const auto slice_size = [&](int64_t r) { return (r + 1) * num / world_size_ - r * num / world_size_; };
  std::vector<int64_t> shape = {(num + world_size_ - 1) / world_size_};
  for (const int64_t d : state_.dataset().sample_shape()) shape.push_back(d);
  auto padded = torch::zeros(shape);
  if (slice.defined()) padded.narrow(0, 0, slice.size(0)).copy_(slice);
  std::vector<torch::Tensor> parts;
  const auto gathered = group_->all_gather(padded.to(state_.device()));
  for (int64_t r = 0; r < world_size_; ++r) parts.push_back(gathered[r].cpu().narrow(0, 0, slice_size(r)));
  return torch::cat(parts);
}

void Trainer::write_run_report(const std::vector<EvalRow>& rows) {
  write_report((out_dir_ / "report.html").string(), state_.config(), (out_dir_ / "metrics.jsonl").string(),
               (out_dir_ / "samples.png").string(), rows);
}

void Trainer::run() {
  const Config& config = state_.config();
  Method& method = state_.method();
  std::string modules;
  for (const auto& [name, module] : state_.modules().items())
    modules += (modules.empty() ? "" : ", ") + name + " " + std::to_string(count_parameters(*module));
  if (writes()) {
    std::printf("onestep train: %s on %s, network %s (parameters: %s), %s, %d threads\n", method.name().c_str(),
                state_.dataset().describe().c_str(), config.get_string("model.name").c_str(), modules.c_str(),
                state_.device().str().c_str(), at::get_num_threads());
    if (group_)
      std::printf("%d process%s (%s), %lld samples per process and step in %lld micro-batch(es)\n", world_size_,
                  world_size_ == 1 ? "" : "es", group_->backend_name().c_str(),
                  static_cast<long long>(state_.share_size() * state_.accumulate()),
                  static_cast<long long>(state_.accumulate()));
    std::printf("run folder: %s%s\n", out_dir_.string().c_str(),
                start_step_ > 0 ? (" (resumed at step " + std::to_string(start_step_) + ")").c_str() : "");
    std::fflush(stdout);
  }
  state_.modules().train(true);
  if (writes()) progress_.emplace(start_step_, steps_, log_every_);
  const int64_t sample_every = config.get_int("train.sample_every");
  const int64_t ckpt_every = config.get_int("train.ckpt_every");
  const std::string unavailable = evaluation_unavailable(state_.dataset(), config);
  const int64_t eval_every = unavailable.empty() ? config.get_int("eval.every") : 0;
  if (writes() && !unavailable.empty() && (config.get_int("eval.every") > 0 || config.get_bool("eval.at_end")))
    std::printf("no evaluation during or at the end of training: %s\n", unavailable.c_str());
  const StopSignalScope signals;
  for (int64_t step = start_step_; step < steps_; ++step) {
    const bool stop = step_once(step, signals);
    const int64_t done = step + 1;
    if (writes() && (done % log_every_ == 0 || done == steps_)) log_record(done);
    const bool picture = sample_every > 0 && done % sample_every == 0 && done != steps_;
    const bool checkpoint = ckpt_every > 0 && done % ckpt_every == 0 && done != steps_;
    const bool evaluation = eval_every > 0 && done % eval_every == 0 && done != steps_;
    if (writes() && picture) write_picture(done);
    if (evaluation) {
      if (writes()) progress_->finish();  // the table goes below the progress line
      evaluate_now(done, config.get_int("eval.every_num"));
    }
    if (checkpoint) save(done);
    if (writes() && (picture || checkpoint || evaluation)) write_run_report();
    if (stop && done != steps_) {
      save(done);
      if (writes()) {
        write_run_report();
        progress_->finish();
        const std::string resume = "train --resume " + out_dir_.string();
        std::printf("stopped by a signal after step %lld of %lld; checkpoint written. Continue with:\n  %s\n",
                    static_cast<long long>(done), static_cast<long long>(steps_),
                    group_ ? ("onestep launch -n " + std::to_string(world_size_) + " -- " + resume +
                              "\n  (or torchrun ... onestep " + resume + ")")
                                 .c_str()
                           : ("onestep " + resume).c_str());
        std::fflush(stdout);
      }
      return;
    }
  }
  save(steps_);
  if (writes()) {
    progress_->finish();
    write_picture(steps_);
  }
  EvalReport report;
  if (config.get_bool("eval.at_end") && unavailable.empty()) report = evaluate_now(steps_, config.get_int("eval.num"));
  if (!writes()) return;
  write_run_report(report.rows);
  std::printf("samples: %s\nreport:  %s\ncheckpoint: %s\n", (out_dir_ / "samples.png").string().c_str(),
              (out_dir_ / "report.html").string().c_str(), (out_dir_ / kCheckpointFileName).string().c_str());
}

}  // namespace

void train(TrainRequest request) {
  const DistributedEnv env = distributed_env_from_environment();
  std::unique_ptr<ProcessGroup> group;
  if (env.launched) {
    const auto device = resolve_device(request.config.get_string("train.device"));
    group = std::make_unique<ProcessGroup>(
        env, device, std::chrono::seconds(request.config.get_int("train.dist_timeout")));
    // The run folder is rank 0's (a default name holds the start time, which may differ).
    request.out_dir = group->share_from_rank0("out_dir", request.out_dir);
    request.local_rank = env.local_rank;
  }
  Trainer trainer(request, group.get());
  trainer.run();
}

}  // namespace onestep
