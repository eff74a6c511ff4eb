// The training loop (see trainer.h).
#include "onestep/train/trainer.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>

#include "onestep/core/compat.h"
#include "onestep/core/error.h"
#include "onestep/core/file_io.h"
#include "onestep/core/image_io.h"
#include "onestep/core/progress.h"
#include "onestep/core/runtime.h"
#include "onestep/eval/evaluate.h"
#include "onestep/eval/sample_picture.h"
#include "onestep/methods/method.h"
#include "onestep/train/checkpoint.h"
#include "onestep/train/ema.h"
#include "onestep/train/optimizer.h"
#include "onestep/train/report.h"

namespace onestep {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kPictureSamples = 2000;   // points per scatter panel
constexpr int64_t kPictureImages = 64;      // images per grid
constexpr int64_t kPictureImagesPerClass = 8;  // class-conditional grids: one row per class

// The standard deviation of 1024 training samples drawn with a generator of their own (the
// training stream stays untouched), for methods that scale their output layer to the data.
double data_std(Dataset& dataset, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed + 1);
  return dataset.train_batch(1024, gen).x.std().item<double>();
}

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

  Config config_;
  fs::path out_dir_;
  torch::Device device_;
  std::unique_ptr<Dataset> dataset_;
  std::unique_ptr<Method> method_;
  DataInfo data_info_;
  ModuleSet modules_;
  FrozenModules frozen_;
  std::unique_ptr<Ema> ema_, target_ema_;
  std::unique_ptr<Adam> optimizer_;
  LearningRateSchedule schedule_;
  torch::Generator gen_;
  int64_t start_step_ = 0, steps_, batch_size_, log_every_;
  bool bf16_ = false;  // train.precision
  int64_t nonfinite_in_a_row_ = 0, nonfinite_total_ = 0;
  // Sums since the last record.
  double loss_sum_ = 0, grad_norm_sum_ = 0;
  std::map<std::string, double> part_sums_;
  int64_t window_steps_ = 0;
  std::ofstream metrics_;
  std::optional<Progress> progress_;
};

Trainer::Trainer(const TrainRequest& request)
    : config_(request.config),
      out_dir_(request.out_dir),
      device_(resolve_device(config_.get_string("train.device"))),
      gen_(at::detail::createCPUGenerator(static_cast<uint64_t>(config_.get_int("train.seed")))) {
  steps_ = config_.get_int("train.steps");
  batch_size_ = config_.get_int("train.batch_size");
  log_every_ = config_.get_int("train.log_every");
  config_.validate();
  bf16_ = config_.get_string("train.precision") == "bf16";
  compat::allow_tf32(config_.get_bool("train.tf32"));
  const auto seed = static_cast<uint64_t>(config_.get_int("train.seed"));
  torch::manual_seed(seed);  // module initialisation
  dataset_ = make_dataset(config_);
  method_ = make_method(config_);
  data_info_ = {dataset_->sample_shape(), dataset_->num_classes(), data_std(*dataset_, seed)};
  modules_ = method_->build_modules(config_, data_info_);
  modules_.to(device_);
  const auto shadow_modules = [&] {
    ModuleSet shadow = method_->build_modules(config_, data_info_);
    shadow.to(device_);
    return shadow;
  };
  ema_ = std::make_unique<Ema>(shadow_modules(), modules_, config_.get_float("train.ema_decay"));
  if (method_->target_ema_decay() > 0)
    target_ema_ = std::make_unique<Ema>(shadow_modules(), modules_, method_->target_ema_decay());
  for (const auto& spec : method_->frozen_modules()) {
    frozen_[spec.name] = load_frozen_module(spec);
    frozen_[spec.name]->to(device_);
  }
  auto named = modules_.named_parameters();
  AdamOptions adam;
  adam.lr = config_.get_float("train.lr");
  adam.beta1 = config_.get_float("train.beta1");
  adam.beta2 = config_.get_float("train.beta2");
  adam.weight_decay = config_.get_float("train.weight_decay");
  adam.decoupled = config_.get_string("train.optimizer") == "adamw";
  optimizer_ = std::make_unique<Adam>(std::move(named), adam);
  schedule_ = {adam.lr, config_.get_int("train.warmup"), config_.get_string("train.lr_schedule") == "cosine", steps_};

  const fs::path checkpoint_path = out_dir_ / kCheckpointFileName;
  if (request.resume) {
    const Checkpoint checkpoint = read_checkpoint(checkpoint_path.string());
    load_modules(modules_, checkpoint, "model");
    load_modules(ema_->modules(), checkpoint, "ema");
    if (target_ema_) load_modules(target_ema_->modules(), checkpoint, "target_ema");
    load_training_state(*optimizer_, gen_, checkpoint);
    start_step_ = checkpoint.step;
    truncate_metrics(out_dir_ / "metrics.jsonl", start_step_);
  } else if (fs::exists(checkpoint_path)) {
    throw UserError(out_dir_.string() + ": already holds a run (" + std::string(kCheckpointFileName) +
                    "); continue it with --resume " + out_dir_.string() + " or choose another --out");
  }
  fs::create_directories(out_dir_);
  write_file_atomically((out_dir_ / "config.toml").string(), config_.to_toml());
  metrics_.open(out_dir_ / "metrics.jsonl", std::ios::app);
}

void Trainer::step_once(int64_t step) {
  Batch batch = method_->training_batch(*dataset_, batch_size_, gen_);
  batch.x = batch.x.to(device_);
  if (batch.y.defined()) batch.y = batch.y.to(device_);
  const LossOutput out = [&] {
    const compat::AutocastScope autocast(device_.type(), bf16_);
    return method_->loss({modules_, target_ema_ ? &target_ema_->modules() : nullptr, &frozen_, gen_}, batch);
  }();
  const double loss = out.loss.item<double>();
  double grad_norm = NAN;
  if (std::isfinite(loss)) {
    optimizer_->zero_grad();
    out.loss.backward();
    grad_norm = clip_gradients(optimizer_->parameters(), config_.get_float("train.grad_clip"));
  }
  if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
    ++nonfinite_total_;
    if (++nonfinite_in_a_row_ >= config_.get_int("train.max_nonfinite"))
      throw TrainingStopped("step " + std::to_string(step + 1) + ": " + std::to_string(nonfinite_in_a_row_) +
                            " non-finite losses in a row; stopped. The last good checkpoint is kept in " +
                            out_dir_.string());
    return;
  }
  nonfinite_in_a_row_ = 0;
  optimizer_->step(schedule_.at(step));
  ema_->update(modules_, optimizer_->parameters());
  if (target_ema_) target_ema_->update(modules_, optimizer_->parameters());
  loss_sum_ += loss;
  grad_norm_sum_ += grad_norm;
  for (const auto& [name, value] : out.parts) part_sums_[name] += value.item<double>();
  ++window_steps_;
}

void Trainer::log_record(int64_t step) {
  nlohmann::ordered_json record;
  record["step"] = step;
  const double n = static_cast<double>(std::max<int64_t>(window_steps_, 1));
  record["loss"] = loss_sum_ / n;
  for (const auto& [name, sum] : part_sums_) record[name] = sum / n;
  record["grad_norm"] = grad_norm_sum_ / n;
  record["lr"] = schedule_.at(step - 1);
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
  const bool points = dataset_->sample_shape().size() == 1;
  const Batch reference = dataset_->heldout(points ? kPictureSamples : kPictureImages);
  // Class-conditional images: one row per class; otherwise the held-out labels.
  const bool class_rows = !points && dataset_->num_classes() > 0;
  const int64_t columns = class_rows ? kPictureImagesPerClass : 0;
  const auto labels = class_rows ? class_row_labels(dataset_->num_classes(), columns) : reference.y;
  const int64_t count = labels.defined() ? labels.size(0) : reference.x.size(0);
  std::vector<std::pair<std::string, torch::Tensor>> panels;
  const bool use_ema = config_.get_bool("eval.use_ema");
  for (const int64_t steps : config_.get_int_list("eval.nfe")) {
    const SamplingPlan plan{steps};
    auto samples = generate_samples(*method_, use_ema ? ema_->modules() : modules_, method_->noise_shape(data_info_),
                                    count, labels, plan, static_cast<uint64_t>(config_.get_int("eval.seed")), device_);
    panels.emplace_back(method_->name() + ", " + describe_nfe(method_->count_nfe(plan)) + ", step " +
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
  const auto& weights = optimizer_->parameters();
  if (weights.numel() > 0 && !torch::isfinite(weights.data()).all().item<bool>()) {
    std::fprintf(stderr, "warning: step %lld: non-finite weights; the checkpoint of an earlier step is kept\n",
                 static_cast<long long>(step));
    return;
  }
  save_checkpoint((out_dir_ / kCheckpointFileName).string(),
                  {config_, step, dataset_->sample_shape(), dataset_->num_classes(), modules_, ema_->modules(),
                   target_ema_ ? &target_ema_->modules() : nullptr, *optimizer_, gen_});
}

void Trainer::run() {
  std::string modules;
  for (const auto& [name, module] : modules_.items())
    modules += (modules.empty() ? "" : ", ") + name + " " + std::to_string(count_parameters(*module));
  std::printf("onestep train: %s on %s, network %s (parameters: %s), %s, %d threads\n", method_->name().c_str(),
              dataset_->describe().c_str(), config_.get_string("model.name").c_str(), modules.c_str(),
              device_.str().c_str(), at::get_num_threads());
  std::printf("run folder: %s%s\n", out_dir_.string().c_str(),
              start_step_ > 0 ? (" (resumed at step " + std::to_string(start_step_) + ")").c_str() : "");
  std::fflush(stdout);
  modules_.train(true);
  progress_.emplace(start_step_, steps_, log_every_);
  const int64_t sample_every = config_.get_int("train.sample_every");
  const int64_t ckpt_every = config_.get_int("train.ckpt_every");
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
  const std::string unavailable = evaluation_unavailable(*dataset_, config_);
  if (config_.get_bool("eval.at_end") && !unavailable.empty()) {
    std::printf("no evaluation at the end of training: %s\n", unavailable.c_str());
  } else if (config_.get_bool("eval.at_end")) {
    const bool use_ema = config_.get_bool("eval.use_ema");
    report = evaluate(*method_, use_ema ? ema_->modules() : modules_, *dataset_, config_, device_);
    std::printf("evaluation against %lld held-out samples (%s weights):\n%s",
                static_cast<long long>(config_.get_int("eval.num")), use_ema ? "EMA" : "raw",
                format_eval_table(report).c_str());
    nlohmann::ordered_json record;
    record["step"] = steps_;
    record["eval"] = nlohmann::ordered_json::parse(eval_json(report))["results"];
    metrics_ << record.dump() << "\n";
    metrics_.flush();
  }
  write_report((out_dir_ / "report.html").string(), config_, (out_dir_ / "metrics.jsonl").string(), report.rows);
  std::printf("samples: %s\nreport:  %s\ncheckpoint: %s\n", (out_dir_ / "samples.png").string().c_str(),
              (out_dir_ / "report.html").string().c_str(), (out_dir_ / kCheckpointFileName).string().c_str());
}

}  // namespace

void train(const TrainRequest& request) {
  Trainer trainer(request);
  trainer.run();
}

}  // namespace onestep
