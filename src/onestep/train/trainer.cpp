// The training loop (see trainer.h).
#include "onestep/train/trainer.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>

#include "onestep/core/file_io.h"
#include "onestep/core/error.h"
#include "onestep/core/image_io.h"
#include "onestep/core/progress.h"
#include "onestep/eval/evaluate.h"
#include "onestep/eval/sample_picture.h"
#include "onestep/methods/method.h"
#include "onestep/train/checkpoint.h"
#include "onestep/train/report.h"
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
  explicit Trainer(const TrainRequest& request);
  void run();

 private:
  void step_once(int64_t step);
  void log_record(int64_t step);
  void write_picture(int64_t step);
  void save(int64_t step);

  fs::path out_dir_;
  TrainingState state_;
  int64_t start_step_ = 0, steps_, log_every_;
  int64_t nonfinite_in_a_row_ = 0, nonfinite_total_ = 0;
  // Sums since the last record.
  double loss_sum_ = 0, grad_norm_sum_ = 0;
  std::map<std::string, double> part_sums_;
  int64_t window_steps_ = 0;
  std::ofstream metrics_;
  std::optional<Progress> progress_;
};

Trainer::Trainer(const TrainRequest& request)
    : out_dir_(request.out_dir),
      state_(request.config),
      steps_(state_.config().get_int("train.steps")),
      log_every_(state_.config().get_int("train.log_every")) {
  const fs::path checkpoint_path = out_dir_ / kCheckpointFileName;
  if (request.resume) {
    const Checkpoint checkpoint = read_checkpoint(checkpoint_path.string());
    load_modules(state_.modules(), checkpoint, "model");
    load_modules(state_.ema().modules(), checkpoint, "ema");
    if (state_.target_ema()) load_modules(state_.target_ema()->modules(), checkpoint, "target_ema");
    load_training_state(state_.optimizer(), state_.generator(), checkpoint);
    start_step_ = checkpoint.step;
    truncate_metrics(out_dir_ / "metrics.jsonl", start_step_);
  } else if (fs::exists(checkpoint_path)) {
    throw UserError(out_dir_.string() + ": already holds a run (" + std::string(kCheckpointFileName) +
                    "); continue it with --resume " + out_dir_.string() + " or choose another --out");
  }
  fs::create_directories(out_dir_);
  write_file_atomically((out_dir_ / "config.toml").string(), state_.config().to_toml());
  metrics_.open(out_dir_ / "metrics.jsonl", std::ios::app);
}

void Trainer::step_once(int64_t step) {
  const StepOutcome outcome = state_.step(step);
  if (!outcome.finite) {
    ++nonfinite_total_;
    if (++nonfinite_in_a_row_ >= state_.config().get_int("train.max_nonfinite"))
      throw TrainingStopped("step " + std::to_string(step + 1) + ": " + std::to_string(nonfinite_in_a_row_) +
                            " non-finite losses in a row; stopped. The last good checkpoint is kept in " +
                            out_dir_.string());
    return;
  }
  nonfinite_in_a_row_ = 0;
  loss_sum_ += outcome.loss;
  grad_norm_sum_ += outcome.grad_norm;
  for (const auto& [name, value] : outcome.parts) part_sums_[name] += value.item<double>();
  ++window_steps_;
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
  record["steps_per_s"] = progress_->steps_per_second();
  metrics_ << record.dump() << "\n";
  metrics_.flush();
  char detail[128];
  std::snprintf(detail, sizeof(detail), "loss %.4f", loss_sum_ / n);
  progress_->update(step, detail);
  loss_sum_ = grad_norm_sum_ = 0;
  part_sums_.clear();
  window_steps_ = 0;
}

void Trainer::write_picture(int64_t step) {
  const bool points = state_.dataset().sample_shape().size() == 1;
  const Batch reference = state_.dataset().heldout(points ? kPictureSamples : kPictureImages);
  // Class-conditional images: one row per class; otherwise the held-out labels.
  const bool class_rows = !points && state_.dataset().num_classes() > 0;
  const int64_t columns = class_rows ? kPictureImagesPerClass : 0;
  const auto labels = class_rows ? class_row_labels(state_.dataset().num_classes(), columns) : reference.y;
  const int64_t count = labels.defined() ? labels.size(0) : reference.x.size(0);
  std::vector<std::pair<std::string, torch::Tensor>> panels;
  const bool use_ema = state_.config().get_bool("eval.use_ema");
  for (const int64_t steps : state_.config().get_int_list("eval.nfe")) {
    const SamplingPlan plan{steps};
    auto samples = generate_samples(state_.method(), use_ema ? state_.ema().modules() : state_.modules(), state_.method().noise_shape(state_.data_info()),
                                    count, labels, plan, static_cast<uint64_t>(state_.config().get_int("eval.seed")), state_.device());
    panels.emplace_back(state_.method().name() + ", " + describe_nfe(state_.method().count_nfe(plan)) + ", step " +
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

void Trainer::save(int64_t step) {
  for (const auto& p : state_.modules().parameters()) {
    if (!torch::isfinite(p).all().item<bool>()) {
      std::fprintf(stderr, "warning: step %lld: non-finite weights; the checkpoint of an earlier step is kept\n",
                   static_cast<long long>(step));
      return;
    }
  }
  save_checkpoint((out_dir_ / kCheckpointFileName).string(),
                  {state_.config(), step, state_.dataset().sample_shape(), state_.dataset().num_classes(), state_.modules(), state_.ema().modules(),
                   state_.target_ema() ? &state_.target_ema()->modules() : nullptr, state_.optimizer(), state_.generator()});
}

void Trainer::run() {
  std::string modules;
  for (const auto& [name, module] : state_.modules().items())
    modules += (modules.empty() ? "" : ", ") + name + " " + std::to_string(count_parameters(*module));
  std::printf("onestep train: %s on %s, network %s (parameters: %s), %s, %d threads\n", state_.method().name().c_str(),
              state_.dataset().describe().c_str(), state_.config().get_string("model.name").c_str(), modules.c_str(),
              state_.device().str().c_str(), at::get_num_threads());
  std::printf("run folder: %s%s\n", out_dir_.string().c_str(),
              start_step_ > 0 ? (" (resumed at step " + std::to_string(start_step_) + ")").c_str() : "");
  std::fflush(stdout);
  state_.modules().train(true);
  progress_.emplace(start_step_, steps_, log_every_);
  const int64_t sample_every = state_.config().get_int("train.sample_every");
  const int64_t ckpt_every = state_.config().get_int("train.ckpt_every");
  for (int64_t step = start_step_; step < steps_; ++step) {
    step_once(step);
    const int64_t done = step + 1;
    if (done % log_every_ == 0 || done == steps_) log_record(done);
    if (sample_every > 0 && done % sample_every == 0 && done != steps_) write_picture(done);
    if (ckpt_every > 0 && done % ckpt_every == 0 && done != steps_) save(done);
  }
  progress_->finish();
  save(steps_);
  write_picture(steps_);
  EvalReport report;
  const std::string unavailable = evaluation_unavailable(state_.dataset(), state_.config());
  if (state_.config().get_bool("eval.at_end") && !unavailable.empty()) {
    std::printf("no evaluation at the end of training: %s\n", unavailable.c_str());
  } else if (state_.config().get_bool("eval.at_end")) {
    const bool use_ema = state_.config().get_bool("eval.use_ema");
    report = evaluate(state_.method(), use_ema ? state_.ema().modules() : state_.modules(), state_.dataset(), state_.config(), state_.device());
    std::printf("evaluation against %lld held-out samples (%s weights):\n%s",
                static_cast<long long>(state_.config().get_int("eval.num")), use_ema ? "EMA" : "raw",
                format_eval_table(report).c_str());
    nlohmann::ordered_json record;
    record["step"] = steps_;
    record["eval"] = nlohmann::ordered_json::parse(eval_json(report))["results"];
    metrics_ << record.dump() << "\n";
    metrics_.flush();
  }
  write_report((out_dir_ / "report.html").string(), state_.config(), (out_dir_ / "metrics.jsonl").string(), report.rows);
  std::printf("samples: %s\nreport:  %s\ncheckpoint: %s\n", (out_dir_ / "samples.png").string().c_str(),
              (out_dir_ / "report.html").string().c_str(), (out_dir_ / kCheckpointFileName).string().c_str());
}

}  // namespace

void train(const TrainRequest& request) {
  Trainer trainer(request);
  trainer.run();
}

}  // namespace onestep
