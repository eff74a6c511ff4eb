// The onestep command line: train, launch, sample, eval, bench, evaluator, encoder and info (contract in README.md).
// Bad input of any kind ends with one line on stderr and exit status 2.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>

#include "onestep/core/compat.h"
#include "onestep/core/config.h"
#include "onestep/core/cpu_gemm.h"
#include "onestep/core/error.h"
#include "onestep/core/file_io.h"
#include "onestep/core/image_io.h"
#include "onestep/core/npy.h"
#include "onestep/core/runtime.h"
#include "onestep/data/dataset.h"
#include "onestep/eval/evaluate.h"
#include "onestep/eval/evaluator.h"
#include "onestep/eval/sample_picture.h"
#include "onestep/core/registry.h"
#include "onestep/methods/method.h"
#include "onestep/nets/layers.h"
#include "onestep/train/benchmark.h"
#include "onestep/train/checkpoint.h"
#include "onestep/train/distributed.h"
#include "onestep/train/ema.h"
#include "onestep/train/encoder_training.h"
#include "onestep/train/evaluator_training.h"
#include "onestep/train/launch.h"
#include "onestep/train/trainer.h"

namespace fs = std::filesystem;
using namespace onestep;

namespace {

constexpr int64_t kMaxBenchRepetitions = 1000000;  // bounds --warmup and --iters

std::string default_run_dir(const Config& config) {
  std::string data = config.get_string("data.name");
  for (char& ch : data)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-') ch = '-';
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", std::localtime(&now));
  return (fs::path("runs") / (config.get_string("method.name") + "-" + data + "-" + stamp)).string();
}

// The CPU threads, idle OpenMP workers, matrix-product library, GELU kernel and freed memory a
// config asks for (setting the workers' wait may execute the command again: before any output).
void set_runtime(const Config& config) {
  set_threads(config.get_int("train.threads"));
  set_openmp_wait(config.get_string("train.cpu_wait"));
  set_cpu_gemm(config.get_string("train.cpu_gemm"));
  set_cpu_gelu(config.get_string("train.cpu_gelu"));
  set_cpu_memory(config.get_string("train.cpu_memory"));
}

// A method's modules loaded from a checkpoint, ready to sample: EMA weights unless told otherwise.
struct LoadedModel {
  Checkpoint checkpoint;
  std::unique_ptr<Method> method;
  DataInfo data;
  ModuleSet modules;
  torch::Device device = torch::kCPU;
};

LoadedModel load_model(const std::string& path, const std::vector<std::string>& overrides, bool use_ema) {
  LoadedModel model{read_checkpoint(path), nullptr, {}, {}};
  for (const auto& assignment : overrides) model.checkpoint.config.apply_override(assignment);
  const Config& config = model.checkpoint.config;
  config.validate();
  set_runtime(config);
  model.device = resolve_device(config.get_string("train.device"));
  model.method = make_method(config);
  model.data = {model.checkpoint.sample_shape, model.checkpoint.num_classes};
  model.modules = model.method->build_modules(config, model.data);
  load_modules(model.modules, model.checkpoint, use_ema ? "ema" : "model");
  model.modules.to(model.device);
  model.modules.train(false);
  return model;
}

// "EMA weights" (with the initial weights' share where it is large: an early checkpoint's EMA
// looks undertrained), or "raw weights".
std::string weights_used(const LoadedModel& model, bool raw) {
  if (raw) return "raw weights";
  return "EMA weights" + EmaSchedule::from_config(model.checkpoint.config).initial_share_note(model.checkpoint.step);
}

int run_train(const std::string& config_file, const std::string& out_dir, const std::string& resume_dir,
              const std::vector<std::string>& overrides) {
  TrainRequest request;
  if (!resume_dir.empty()) {
    if (!config_file.empty()) throw UserError("--resume takes its config from the checkpoint; drop -c " + config_file);
    request.config = read_checkpoint(resume_dir).config;
    request.out_dir = resume_dir;
    request.resume = true;
  } else if (!config_file.empty()) {
    request.config.apply_toml_file(config_file);
  }
  for (const auto& assignment : overrides) request.config.apply_override(assignment);
  request.config.validate();
  if (!request.resume) request.out_dir = out_dir.empty() ? default_run_dir(request.config) : out_dir;
  set_runtime(request.config);
  train(request);
  return 0;
}

int run_bench(const std::string& config_file, const BenchOptions& options, const std::string& json_file,
              const std::vector<std::string>& overrides) {
  Config config;
  if (!config_file.empty()) config.apply_toml_file(config_file);
  for (const auto& assignment : overrides) config.apply_override(assignment);
  config.validate();
  set_runtime(config);
  const std::string json = run_benchmark(config, options).dump();
  if (json_file.empty()) {
    std::printf("%s\n", json.c_str());
  } else {
    write_file_atomically(json_file, json + "\n");
    std::printf("wrote %s\n", json_file.c_str());
  }
  return 0;
}

int run_sample(const std::string& ckpt, int64_t nfe, int64_t num, int64_t seed, int64_t class_label, bool raw,
               const std::string& out, const std::vector<std::string>& overrides) {
  const std::string ext = fs::path(out).extension().string();
  if (ext != ".png" && ext != ".npy") throw UserError("--out " + out + ": expected a .png or .npy file name");
  LoadedModel model = load_model(ckpt, overrides, !raw);
  const int64_t classes = model.checkpoint.num_classes;
  const bool images = model.checkpoint.sample_shape.size() == 3;
  int64_t columns = 0;
  torch::Tensor labels;
  if (class_label >= 0) {
    if (class_label >= classes)
      throw UserError("--class " + std::to_string(class_label) + ": the model has " + std::to_string(classes) +
                      " classes (0.." + std::to_string(std::max<int64_t>(classes - 1, 0)) + ")");
    labels = torch::full({num}, class_label, torch::kLong);
  } else if (classes > 0 && images) {
    columns = std::max<int64_t>(1, num / classes);  // one row per class
    labels = class_row_labels(classes, columns);
    num = labels.size(0);
  } else if (classes > 0) {
    auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(seed) + 1);
    labels = torch::randint(classes, {num}, gen);
  }
  const SamplingPlan plan{nfe};
  const auto samples = generate_samples(*model.method, model.modules, model.method->noise_shape(model.data), num,
                                        labels, plan, static_cast<uint64_t>(seed), model.device);
  const std::string nfe_text = describe_nfe(model.method->count_nfe(plan));
  if (ext == ".npy") {
    write_npy(out, samples);
  } else {
    write_png(out, render_sample_picture(torch::Tensor(), {{model.method->name() + ", " + nfe_text, samples}}, columns));
  }
  std::printf("wrote %lld samples (%s, %s) to %s\n", static_cast<long long>(num), nfe_text.c_str(),
              weights_used(model, raw).c_str(), out.c_str());
  return 0;
}

int run_eval(const std::string& ckpt, const std::string& nfe_list, int64_t num, int64_t seed, bool raw,
             std::vector<std::string> overrides) {
  if (!nfe_list.empty()) overrides.push_back("eval.nfe=" + nfe_list);
  if (num > 0) overrides.push_back("eval.num=" + std::to_string(num));
  if (seed >= 0) overrides.push_back("eval.seed=" + std::to_string(seed));
  LoadedModel model = load_model(ckpt, overrides, !raw);
  const Config& config = model.checkpoint.config;
  auto dataset = make_dataset(config);
  const auto report = evaluate(*model.method, model.modules, *dataset, config, model.device);
  std::printf("%s at step %lld on %s, %lld held-out samples, %s\n", model.method->name().c_str(),
              static_cast<long long>(model.checkpoint.step), dataset->describe().c_str(),
              static_cast<long long>(config.get_int("eval.num")), weights_used(model, raw).c_str());
  std::printf("%s%s\n", format_eval_table(report).c_str(), eval_json(report).c_str());
  return 0;
}

int run_info(bool keys, const std::string& ckpt) {
  if (keys) {
    const auto print = [](const KeySpec& spec) {
      std::printf("  %-26s = %-14s %s\n", spec.key.c_str(), spec.default_value.c_str(), spec.help.c_str());
    };
    std::printf("trainer keys:\n");
    for (const auto& spec : Config::general_keys()) print(spec);
    for (const std::string section : {"data", "model", "method"}) {
      for (const auto* info : components(section)) {
        std::printf("%s.name = %s: %s\n", section.c_str(), info->usage.c_str(), info->description.c_str());
        for (const auto& spec : info->keys) print(spec);
      }
    }
    return 0;
  }
  if (!ckpt.empty()) {
    const Checkpoint checkpoint = read_checkpoint(ckpt);
    std::string shape;
    for (const int64_t d : checkpoint.sample_shape) shape += (shape.empty() ? "" : "x") + std::to_string(d);
    std::printf("checkpoint %s\nstep %lld, sample shape %s, %lld classes, %zu tensors\n\n%s",
                checkpoint.path.c_str(), static_cast<long long>(checkpoint.step), shape.c_str(),
                static_cast<long long>(checkpoint.num_classes), checkpoint.file.tensors.size(),
                checkpoint.config.to_toml().c_str());
    return 0;
  }
  set_runtime(Config{});  // the defaults
  std::printf("onestep %s, LibTorch %s\nthreads: %d (of %u cores), matrix products on %d (%s), GELU %s\n"
              "idle OpenMP workers: %s\nfreed CPU memory: %s\ncuda: %s\nmethods: %s\nnetworks: %s\ndatasets: %s\n",
              "0.1.0", compat::torch_version().c_str(), at::get_num_threads(), std::thread::hardware_concurrency(),
              blas_threads(), cpu_gemm().c_str(), cpu_gelu().c_str(), openmp_wait().c_str(), cpu_memory().c_str(),
              torch::cuda::is_available() ? ("yes, " + std::to_string(torch::cuda::device_count()) + " device(s)").c_str()
                                          : "no",
              component_usages("method").c_str(), component_usages("model").c_str(),
              component_usages("data").c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  allow_restart(argv);
  CLI::App app{"onestep: train and evaluate one-step and few-step generative models"};
  app.require_subcommand(1);

  std::string config_file, out_dir, resume_dir, ckpt, out_file, nfe_list;
  std::vector<std::string> overrides;
  int64_t nfe = 1, num = 1000, seed = 0, class_label = -1, eval_num = 0, eval_seed = -1;
  bool raw = false, keys = false;

  auto* train_cmd = app.add_subcommand("train", "train a model; writes config.toml, checkpoint.safetensors, "
                                                "metrics.jsonl, samples.png and report.html into the run folder");
  train_cmd->add_option("-c,--config", config_file, "TOML config file")->check(CLI::ExistingFile);
  train_cmd->add_option("--out", out_dir, "run folder (default runs/<method>-<data>-<time>)");
  train_cmd->add_option("--resume", resume_dir, "continue the run in this folder from its checkpoint")
      ->check(CLI::ExistingDirectory);
  train_cmd->add_option("overrides", overrides, "config overrides section.key=value");
  train_cmd->get_option("--out")->excludes("--resume");

  BenchOptions bench_options;
  std::string json_file;
  auto* bench_cmd = app.add_subcommand("bench", "time the training step and sampling of a config; prints JSON");
  bench_cmd->add_option("-c,--config", config_file, "TOML config file")->check(CLI::ExistingFile);
  bench_cmd->add_option("--warmup", bench_options.warmup, "untimed steps (and sampler calls) before timing")
      ->check(CLI::Range(int64_t{0}, kMaxBenchRepetitions))
      ->capture_default_str();
  bench_cmd->add_option("--iters", bench_options.iters, "timed repetitions; the report gives their median")
      ->check(CLI::Range(int64_t{1}, kMaxBenchRepetitions))
      ->capture_default_str();
  bench_cmd->add_option("--json", json_file, "write the JSON report to this file instead of stdout");
  bench_cmd->add_option("overrides", overrides, "config overrides section.key=value");
  int launch_processes = 1, launch_port = 0;
  std::vector<std::string> launch_args;
  auto* launch_cmd = app.add_subcommand("launch", "start N local processes of one data-parallel training run: "
                                                  "onestep launch -n N -- train ...");
  launch_cmd->add_option("-n,--nproc", launch_processes, "number of processes")->required()->check(CLI::PositiveNumber);
  launch_cmd->add_option("--port", launch_port, "MASTER_PORT of the rendezvous (default: a free port)")
      ->check(CLI::Range(1, 65535));
  launch_cmd->add_option("command", launch_args, "after --: train and its arguments")->required();

  auto* sample_cmd = app.add_subcommand("sample", "generate samples from a checkpoint into .png or .npy");
  sample_cmd->add_option("--ckpt", ckpt, "checkpoint file or run folder")->required();
  sample_cmd->add_option("--nfe", nfe, "network evaluations per sample")->check(CLI::PositiveNumber);
  sample_cmd->add_option("--num", num, "number of samples")->check(CLI::PositiveNumber);
  sample_cmd->add_option("--seed", seed, "noise seed")->check(CLI::NonNegativeNumber);
  sample_cmd->add_option("--class", class_label, "class label (conditional models; default: random classes)");
  sample_cmd->add_flag("--no-ema", raw, "use the raw weights instead of the EMA");
  sample_cmd->add_option("--out", out_file, "output file, .png (picture) or .npy (float32 array N x dims)")->required();
  sample_cmd->add_option("overrides", overrides, "config overrides, e.g. method.sampler=heun method.cfg_scale=2");

  auto* eval_cmd = app.add_subcommand("eval", "score samples against held-out data; last line is JSON");
  eval_cmd->add_option("--ckpt", ckpt, "checkpoint file or run folder")->required();
  eval_cmd->add_option("--nfe", nfe_list, "comma-separated NFE values (default: the run's eval.nfe)");
  eval_cmd->add_option("--num", eval_num, "samples per metric (default: the run's eval.num)")->check(CLI::PositiveNumber);
  eval_cmd->add_option("--seed", eval_seed, "noise seed (default: the run's eval.seed)")->check(CLI::NonNegativeNumber);
  eval_cmd->add_flag("--no-ema", raw, "use the raw weights instead of the EMA");
  eval_cmd->add_option("overrides", overrides, "config overrides, e.g. method.sampler=heun");

  EvaluatorTrainOptions evaluator_options;
  auto* evaluator_cmd = app.add_subcommand("evaluator", "the image evaluator classifier behind fd/kid/precision/recall");
  auto* evaluator_train_cmd = evaluator_cmd->add_subcommand("train", "train the Fashion-MNIST evaluator classifier");
  evaluator_cmd->require_subcommand(1);
  evaluator_train_cmd->add_option("--out", evaluator_options.out, "weights file (.safetensors)")->required();
  evaluator_train_cmd->add_option("--data-dir", evaluator_options.data_dir, "folder of the Fashion-MNIST IDX files");
  evaluator_train_cmd->add_option("--epochs", evaluator_options.epochs, "epochs")->check(CLI::PositiveNumber);
  evaluator_train_cmd->add_option("--batch-size", evaluator_options.batch_size, "batch size")->check(CLI::PositiveNumber);
  evaluator_train_cmd->add_option("--lr", evaluator_options.lr, "peak learning rate")->check(CLI::PositiveNumber);
  evaluator_train_cmd->add_option("--seed", evaluator_options.seed, "seed");
  evaluator_train_cmd->add_option("--threads", evaluator_options.threads, "CPU threads (0: all cores)")
      ->check(CLI::NonNegativeNumber);

  EncoderTrainOptions encoder_options;
  auto* encoder_cmd = app.add_subcommand("encoder", "the self-supervised feature encoder of drifting on images");
  auto* encoder_train_cmd = encoder_cmd->add_subcommand("train", "train a feature encoder (masked denoising autoencoder)");
  encoder_cmd->require_subcommand(1);
  encoder_train_cmd->add_option("--out", encoder_options.out, "weights file (.safetensors)")->required();
  encoder_train_cmd->add_option("--steps", encoder_options.steps, "training steps")->check(CLI::PositiveNumber);
  encoder_train_cmd->add_option("--batch-size", encoder_options.batch_size, "batch size")->check(CLI::PositiveNumber);
  encoder_train_cmd->add_option("--lr", encoder_options.lr, "peak learning rate")->check(CLI::PositiveNumber);
  encoder_train_cmd->add_option("--seed", encoder_options.seed, "seed");
  encoder_train_cmd->add_option("--threads", encoder_options.threads, "CPU threads (0: all cores)")
      ->check(CLI::NonNegativeNumber);
  encoder_train_cmd->add_option("data", encoder_options.data, "data.* keys, e.g. data.name=folder:photos data.size=32");

  auto* info_cmd = app.add_subcommand("info", "versions, threads, devices and the known names");
  info_cmd->add_flag("--keys", keys, "list every config key with its default and meaning");
  info_cmd->add_option("--ckpt", ckpt, "describe a checkpoint");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& err) {
    const int status = app.exit(err);
    return status == 0 ? 0 : kUserErrorExitStatus;
  }

  try {
    if (*train_cmd) return run_train(config_file, out_dir, resume_dir, overrides);
    if (*bench_cmd) return run_bench(config_file, bench_options, json_file, overrides);
    if (*launch_cmd) return launch_local_ranks(launch_processes, launch_args, launch_port);
    if (*sample_cmd) return run_sample(ckpt, nfe, num, seed, class_label, raw, out_file, overrides);
    if (*eval_cmd) return run_eval(ckpt, nfe_list, eval_num, eval_seed, raw, overrides);
    if (*info_cmd) return run_info(keys, ckpt);
    if (*evaluator_train_cmd) {
      train_evaluator(evaluator_options);
      return 0;
    }
    if (*encoder_train_cmd) {
      train_feature_encoder(encoder_options);
      return 0;
    }
  } catch (const UserError& err) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", err.what());
    return kUserErrorExitStatus;
  } catch (const TrainingStopped& err) {
    std::fflush(stdout);
    std::fprintf(stderr, "stopped: %s\n", err.what());
    return 1;
  } catch (const CollectiveError& err) {
    std::fflush(stdout);
    std::fprintf(stderr, "stopped: %s\n", err.what());
    return 1;
  } catch (const std::exception& err) {
    std::fflush(stdout);
    std::fprintf(stderr, "internal error (please report): %s\n", err.what());
    return 1;
  }
  return 0;
}
