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

// The seed of data stream `share`: stream 0 uses train.seed itself, so that a run in one process
// draws exactly what it drew before runs could be split.
uint64_t stream_seed(uint64_t seed, int64_t share) { return seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(share); }

// Every parameter and buffer of `modules`, in a fixed order.
std::vector<torch::Tensor> module_tensors(const ModuleSet& modules) {
  std::vector<torch::Tensor> out;
  for (const auto& [name, module] : modules.items()) {
    for (const auto& p : module->parameters()) out.push_back(p);
    for (const auto& b : module->buffers()) out.push_back(b);
  }
  return out;
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
  void save(int64_t step);
  // The evaluation sample slices of all processes, in rank order (SampleSharing::gather).
  torch::Tensor gather_slices(const torch::Tensor& slice, int64_t num);
  // Rewrites report.html from metrics.jsonl, samples.png and the evaluation `rows`.
  void write_run_report(const std::vector<EvalRow>& rows = {});
  bool writes() const { return rank_ == 0; }  // only rank 0 writes files and prints

  Config config_;
  fs::path out_dir_;
  ProcessGroup* group_;  // null in a one-process run
  int rank_ = 0, world_size_ = 1;
  torch::Device device_;
  std::unique_ptr<Dataset> dataset_;
  std::unique_ptr<Method> method_;
  DataInfo data_info_;
  ModuleSet modules_;
  FrozenModules frozen_;
  std::unique_ptr<Ema> ema_, target_ema_;
  std::unique_ptr<Adam> optimizer_;
  LearningRateSchedule schedule_;
  // The data, noise and time streams of this process's micro-batches: stream rank * accumulate + k
  // of the run's world_size * accumulate shares of each step's batch.
  std::vector<torch::Generator> streams_;
  int64_t start_step_ = 0, steps_, batch_size_, share_size_, accumulate_, log_every_;
  int64_t nonfinite_in_a_row_ = 0, nonfinite_total_ = 0;
  // Sums since the last record.
  double loss_sum_ = 0, grad_norm_sum_ = 0;
  std::map<std::string, double> part_sums_;
  int64_t window_steps_ = 0;
  std::ofstream metrics_;
  std::optional<Progress> progress_;
};

Trainer::Trainer(const TrainRequest& request, ProcessGroup* group)
    : config_(request.config),
      out_dir_(request.out_dir),
      group_(group),
      rank_(group ? group->rank() : 0),
      world_size_(group ? group->size() : 1),
      device_(resolve_device(config_.get_string("train.device"))) {
  steps_ = config_.get_int("train.steps");
  batch_size_ = config_.get_int("train.batch_size");
  accumulate_ = config_.get_int("train.accumulate");
  log_every_ = config_.get_int("train.log_every");
  config_.validate();
  if (device_.is_cuda() && group_) device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(request.local_rank));
  const int64_t shares = world_size_ * accumulate_;
  if (batch_size_ % shares != 0)
    throw UserError("train.batch_size = " + std::to_string(batch_size_) + ": must be a multiple of the " +
                    std::to_string(shares) + " shares of a step (" + std::to_string(world_size_) +
                    " processes x train.accumulate = " + std::to_string(accumulate_) + ")");
  share_size_ = batch_size_ / shares;
  const auto seed = static_cast<uint64_t>(config_.get_int("train.seed"));
  for (int64_t k = 0; k < accumulate_; ++k)
    streams_.push_back(at::detail::createCPUGenerator(stream_seed(seed, rank_ * accumulate_ + k)));
  torch::manual_seed(seed);  // module initialisation
  dataset_ = make_dataset(config_);
  method_ = make_method(config_);
  if (shares > 1 && !method_->loss_is_mean_over_samples())
    throw UserError("method.name = '" + method_->name() + "': its loss uses statistics of the whole batch, so a step "
                    "cannot be split over " + std::to_string(world_size_) + " processes x train.accumulate = " +
                    std::to_string(accumulate_) + "; train it in one process with train.accumulate = 1");
  data_info_ = {dataset_->sample_shape(), dataset_->num_classes(), data_std(*dataset_, seed)};
  modules_ = method_->build_modules(config_, data_info_);
  modules_.to(device_);
  ema_ = std::make_unique<Ema>(method_->build_modules(config_, data_info_), modules_, config_.get_float("train.ema_decay"));
  ema_->modules().to(device_);
  if (method_->target_ema_decay() > 0) {
    target_ema_ = std::make_unique<Ema>(method_->build_modules(config_, data_info_), modules_, method_->target_ema_decay());
    target_ema_->modules().to(device_);
  }
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

  // Every process reads the checkpoint of a resumed run (the run folder must be on a file system
  // they share); only rank 0 checks, creates and writes the folder.
  const fs::path checkpoint_path = out_dir_ / kCheckpointFileName;
  if (request.resume) {
    const Checkpoint checkpoint = read_checkpoint(checkpoint_path.string());
    load_modules(modules_, checkpoint, "model");
    load_modules(ema_->modules(), checkpoint, "ema");
    if (target_ema_) load_modules(target_ema_->modules(), checkpoint, "target_ema");
    const auto states = load_training_state(*optimizer_, checkpoint);
    start_step_ = checkpoint.step;
    if (static_cast<int64_t>(states.size()) == shares) {
      for (int64_t k = 0; k < accumulate_; ++k) streams_[k].set_state(states[rank_ * accumulate_ + k]);
    } else {
      // Another split than the checkpoint's: fresh streams for the remaining steps.
      for (int64_t k = 0; k < accumulate_; ++k)
        streams_[k] = at::detail::createCPUGenerator(
            stream_seed(seed + static_cast<uint64_t>(start_step_), rank_ * accumulate_ + k));
      if (writes())
        std::printf("note: the checkpoint holds %zu data streams and this run splits its steps into %lld; the "
                    "streams restart from the seed (the run continues, but not draw for draw)\n",
                    states.size(), static_cast<long long>(shares));
    }
    if (writes()) truncate_metrics(out_dir_ / "metrics.jsonl", start_step_);
  } else if (writes() && fs::exists(checkpoint_path)) {
    throw UserError(out_dir_.string() + ": already holds a run (" + std::string(kCheckpointFileName) +
                    "); continue it with --resume " + out_dir_.string() + " or choose another --out");
  }
  if (group_) {
    // Rank 0's weights everywhere (identical already when every rank seeds alike or read the
    // same checkpoint; the broadcast makes it so whatever the ranks did).
    group_->broadcast(module_tensors(modules_));
    group_->broadcast(module_tensors(ema_->modules()));
    if (target_ema_) group_->broadcast(module_tensors(target_ema_->modules()));
  }
  if (writes()) {
    std::error_code error;
    fs::create_directories(out_dir_, error);
    if (error) throw UserError(out_dir_.string() + ": cannot create the run folder (" + error.message() + ")");
    write_file_atomically((out_dir_ / "config.toml").string(), config_.to_toml());
    metrics_.open(out_dir_ / "metrics.jsonl", std::ios::app);
    if (!metrics_) throw UserError((out_dir_ / "metrics.jsonl").string() + ": cannot open for writing");
  }
}

bool Trainer::step_once(int64_t step, const StopSignalScope& signals) {
  optimizer_->zero_grad();
  // Each micro-batch adds its share of the gradient of the mean loss over the step's batch.
  double loss_sum = 0, nonfinite = 0;
  std::map<std::string, double> part_sums;
  for (int64_t k = 0; k < accumulate_; ++k) {
    Batch batch = method_->training_batch(*dataset_, share_size_, streams_[k]);
    batch.x = batch.x.to(device_);
    if (batch.y.defined()) batch.y = batch.y.to(device_);
    const LossOutput out = method_->loss(
        {modules_, target_ema_ ? &target_ema_->modules() : nullptr, &frozen_, streams_[k]}, batch);
    const double loss = out.loss.item<double>();
    if (!std::isfinite(loss)) {
      ++nonfinite;
      continue;
    }
    (out.loss / static_cast<double>(accumulate_)).backward();
    loss_sum += loss;
    for (const auto& [name, value] : out.parts) part_sums[name] += value.item<double>();
  }
  bool stop = signals.received() != 0;
  if (group_) {
    // Every process learns the step's losses, whether any share was non-finite, and whether any
    // process was asked to stop; with no non-finite share all hold the same named parts.
    auto totals = torch::tensor({loss_sum, nonfinite, stop ? 1.0 : 0.0}, torch::kDouble).to(device_);
    group_->all_reduce_sum({totals});
    totals = totals.cpu();
    loss_sum = totals[0].item<double>();
    nonfinite = totals[1].item<double>();
    stop = totals[2].item<double>() > 0;
    if (nonfinite == 0 && !part_sums.empty()) {
      std::vector<double> values;
      for (const auto& [name, value] : part_sums) values.push_back(value);
      auto parts = torch::tensor(values, torch::kDouble).to(device_);
      group_->all_reduce_sum({parts});
      parts = parts.cpu();
      int64_t i = 0;
      for (auto& [name, value] : part_sums) value = parts[i++].item<double>();
    }
  }
  const double shares = static_cast<double>(world_size_ * accumulate_);
  double grad_norm = NAN;
  if (nonfinite == 0) {
    if (group_) average_gradients(*group_, modules_.parameters());
    grad_norm = clip_gradients(modules_.parameters(), config_.get_float("train.grad_clip"));
  }
  if (nonfinite > 0 || !std::isfinite(grad_norm)) {
    ++nonfinite_total_;
    if (++nonfinite_in_a_row_ >= config_.get_int("train.max_nonfinite"))
      throw TrainingStopped("step " + std::to_string(step + 1) + ": " + std::to_string(nonfinite_in_a_row_) +
                            " non-finite losses in a row; stopped. The last good checkpoint is kept in " +
                            out_dir_.string());
    return stop;
  }
  nonfinite_in_a_row_ = 0;
  optimizer_->step(schedule_.at(step));
  ema_->update(modules_);
  if (target_ema_) target_ema_->update(modules_);
  loss_sum_ += loss_sum / shares;
  grad_norm_sum_ += grad_norm;
  for (const auto& [name, value] : part_sums) part_sums_[name] += value / shares;
  ++window_steps_;
  return stop;
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
  // Every process hands its stream states to rank 0 (a collective: all processes save together).
  std::vector<torch::Tensor> states;
  for (const auto& stream : streams_) states.push_back(stream.get_state());
  if (group_) {
    const auto gathered = group_->all_gather(torch::stack(states).to(device_));
    states.clear();
    for (const auto& rank_states : gathered)
      for (const auto& state : rank_states.cpu().unbind(0)) states.push_back(state);
  }
  if (!writes()) return;
  for (const auto& p : modules_.parameters()) {
    if (!torch::isfinite(p).all().item<bool>()) {
      std::fprintf(stderr, "warning: step %lld: non-finite weights; the checkpoint of an earlier step is kept\n",
                   static_cast<long long>(step));
      return;
    }
  }
  const fs::path path = out_dir_ / kCheckpointFileName;
  try {
    save_checkpoint(path.string(), {config_, step, dataset_->sample_shape(), dataset_->num_classes(), modules_,
                                    ema_->modules(), target_ema_ ? &target_ema_->modules() : nullptr, *optimizer_,
                                    states});
  } catch (const UserError& err) {
    throw UserError(std::string(err.what()) + " at step " + std::to_string(step) +
                    (fs::exists(path) ? "; the previous checkpoint is kept" : "; no checkpoint was written"));
  }
}

torch::Tensor Trainer::gather_slices(const torch::Tensor& slice, int64_t num) {
  // all_gather needs equal shapes: each slice is padded to the largest, then trimmed.
  const auto slice_size = [&](int64_t r) { return (r + 1) * num / world_size_ - r * num / world_size_; };
  std::vector<int64_t> shape = {(num + world_size_ - 1) / world_size_};
  for (const int64_t d : dataset_->sample_shape()) shape.push_back(d);
  auto padded = torch::zeros(shape);
  if (slice.defined()) padded.narrow(0, 0, slice.size(0)).copy_(slice);
  std::vector<torch::Tensor> parts;
  const auto gathered = group_->all_gather(padded.to(device_));
  for (int64_t r = 0; r < world_size_; ++r) parts.push_back(gathered[r].cpu().narrow(0, 0, slice_size(r)));
  return torch::cat(parts);
}

void Trainer::write_run_report(const std::vector<EvalRow>& rows) {
  write_report((out_dir_ / "report.html").string(), config_, (out_dir_ / "metrics.jsonl").string(),
               (out_dir_ / "samples.png").string(), rows);
}

void Trainer::run() {
  std::string modules;
  for (const auto& [name, module] : modules_.items())
    modules += (modules.empty() ? "" : ", ") + name + " " + std::to_string(count_parameters(*module));
  if (writes()) {
    std::printf("onestep train: %s on %s, network %s (parameters: %s), %s, %d threads\n", method_->name().c_str(),
                dataset_->describe().c_str(), config_.get_string("model.name").c_str(), modules.c_str(),
                device_.str().c_str(), at::get_num_threads());
    if (group_)
      std::printf("%d processes (%s), %lld samples per process and step in %lld micro-batch(es)\n", world_size_,
                  group_->backend_name().c_str(), static_cast<long long>(share_size_ * accumulate_),
                  static_cast<long long>(accumulate_));
    std::printf("run folder: %s%s\n", out_dir_.string().c_str(),
                start_step_ > 0 ? (" (resumed at step " + std::to_string(start_step_) + ")").c_str() : "");
    std::fflush(stdout);
  }
  modules_.train(true);
  if (writes()) progress_.emplace(start_step_, steps_, log_every_);
  const int64_t sample_every = config_.get_int("train.sample_every");
  const int64_t ckpt_every = config_.get_int("train.ckpt_every");
  const StopSignalScope signals;
  for (int64_t step = start_step_; step < steps_; ++step) {
    const bool stop = step_once(step, signals);
    const int64_t done = step + 1;
    if (writes() && (done % log_every_ == 0 || done == steps_)) log_record(done);
    const bool picture = sample_every > 0 && done % sample_every == 0 && done != steps_;
    const bool checkpoint = ckpt_every > 0 && done % ckpt_every == 0 && done != steps_;
    if (writes() && picture) write_picture(done);
    if (checkpoint) save(done);
    if (writes() && (picture || checkpoint)) write_run_report();
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
  const std::string unavailable = evaluation_unavailable(*dataset_, config_);
  if (config_.get_bool("eval.at_end") && !unavailable.empty()) {
    if (writes()) std::printf("no evaluation at the end of training: %s\n", unavailable.c_str());
  } else if (config_.get_bool("eval.at_end")) {
    // Every process samples its slice of the evaluation noise and scores all the samples.
    const SampleSharing sharing{rank_, world_size_, [this](const torch::Tensor& slice, int64_t num) {
                                  return gather_slices(slice, num);
                                }};
    const bool use_ema = config_.get_bool("eval.use_ema");
    report = evaluate(*method_, use_ema ? ema_->modules() : modules_, *dataset_, config_, device_,
                      group_ ? &sharing : nullptr);
    if (writes()) {
      std::printf("evaluation against %lld held-out samples (%s weights%s):\n%s",
                  static_cast<long long>(config_.get_int("eval.num")), use_ema ? "EMA" : "raw",
                  group_ ? (", sampled by " + std::to_string(world_size_) + " processes").c_str() : "",
                  format_eval_table(report).c_str());
      nlohmann::ordered_json record;
      record["step"] = steps_;
      record["eval"] = nlohmann::ordered_json::parse(eval_json(report))["results"];
      metrics_ << record.dump() << "\n";
      metrics_.flush();
    }
  }
  if (!writes()) return;
  write_run_report(report.rows);
  std::printf("samples: %s\nreport:  %s\ncheckpoint: %s\n", (out_dir_ / "samples.png").string().c_str(),
              (out_dir_ / "report.html").string().c_str(), (out_dir_ / kCheckpointFileName).string().c_str());
}

}  // namespace

void train(TrainRequest request) {
  const DistributedEnv env = distributed_env_from_environment();
  std::unique_ptr<ProcessGroup> group;
  if (env.world_size > 1) {
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
