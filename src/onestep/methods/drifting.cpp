// Drifting Models: the drifting field, batches per class, loss and one-pass sampler (spec §5;
// see drifting.h), and its registration.
#include "onestep/methods/drifting.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "onestep/core/compat.h"
#include "onestep/core/config.h"
#include "onestep/core/error.h"
#include "onestep/methods/linear_path.h"

namespace onestep {
namespace {

[[maybe_unused]] const bool registered = MethodRegistry::instance().add(
    {"method", "drifting", "",
     "Drifting Models: one-pass generator trained with the drifting field (1 NFE, CFG as an input)",
     DriftingOptions::schema().keys()},
    [](const Config& config) { return std::make_unique<Drifting>(DriftingOptions::schema().read(config)); });

// Normalised distance added to a generated sample's distance to itself: its kernel weight is
// exp(-1e4 / tau) = 0 in float32 at every temperature.
constexpr double kMaskedDistance = 1e4;

// The shipped feature encoder for 1 x 28 x 28 images (encoders/README.md says how it was made).
const std::vector<int64_t> kShippedEncoderShape = {1, 28, 28};
constexpr const char* kShippedEncoderSha256 = "72754cdbb31550df053ba7bde537212069002afc890e1331cb0651c95e4c85e7";

std::string shipped_encoder_path() { return std::string(ONESTEP_ENCODER_DIR) + "/fashion-mnist.safetensors"; }

// Square roots of variances, kept differentiable where a variance is 0.
torch::Tensor standard_deviation(const torch::Tensor& mean_of_squares, const torch::Tensor& mean) {
  return (mean_of_squares - mean.square()).clamp_min(0).add(1e-6).sqrt();
}

// Per set, sqrt(mean v^2) of B x rows x C, given v's squares. Where every sample's kernel weights to its targets
// underflow (all generated samples far, in units of a small tau, from where the others put
// their weight) v's entries are near 1e-25 and their float32 squares underflow to 0: there
// the RMS is taken of v over its largest entry, so that normalising keeps RMS 1 instead of
// dividing by ~0 (which once gave a Fashion-MNIST step a loss of 3e10).
torch::Tensor root_mean_square(const torch::Tensor& v, const torch::Tensor& squares) {
  const auto plain = squares.mean({1, 2}, true).sqrt();
  const auto peak = v.abs().amax({1, 2}, true);
  const auto rescaled = peak * (v / peak.clamp_min(1e-38)).pow(2).mean({1, 2}, true).sqrt();
  return torch::where(plain < 1e-15, rescaled, plain);
}

// N x C x h x w -> N x (h w) x C.
torch::Tensor locations(const torch::Tensor& map) { return map.flatten(2).transpose(1, 2); }

}  // namespace

const OptionSchema<DriftingOptions>& DriftingOptions::schema() {
  static const auto schema =
      OptionSchema<DriftingOptions>("method")
          .add("noise_dim", &DriftingOptions::noise_dim, 1, 1 << 16,
               "drifting: noise dimension of the generator for point data (images: the sample shape)")
          .add("temperatures", &DriftingOptions::temperatures, {},
               "drifting: kernel temperatures tau, comma-separated (on distances scaled to mean 1)")
          .add("n_pos", &DriftingOptions::n_pos, 1, 1 << 20, "drifting: real samples (positives) per class and step")
          .add("n_neg", &DriftingOptions::n_neg, 2, 1 << 20, "drifting: generated samples per class and step")
          .add("queue_size", &DriftingOptions::queue_size, 0, 1 << 24,
               "drifting: per-class queue of recent real samples used as positives (0: off; not checkpointed)")
          .add("n_unc", &DriftingOptions::n_unc, 0, 1 << 20,
               "drifting: CFG, real samples of random classes per class group as weighted extra negatives")
          .add("cfg_min", &DriftingOptions::cfg_min, 1, 100, "drifting: CFG, smallest training guidance alpha")
          .add("cfg_max", &DriftingOptions::cfg_max, 1, 100, "drifting: CFG, largest training guidance alpha")
          .add("cfg_scale", &DriftingOptions::cfg_scale, 0, 100,
               "drifting: guidance alpha given to the generator at sampling (1: off; still 1 NFE)")
          .add("output_init", &DriftingOptions::output_init, {"data-scale", "default"},
               "drifting: generator output layer, rescaled to the data's std (data-scale) or the framework's init")
          .add("attraction_scale", &DriftingOptions::attraction_scale, 0, 100,
               "drifting: ablation, attraction multiplied by this (1: the anti-symmetric field)")
          .add("repulsion_scale", &DriftingOptions::repulsion_scale, 0, 100,
               "drifting: ablation, repulsion multiplied by this (0: attraction only; 1: the field)")
          .add("feature_space", &DriftingOptions::feature_space, {"auto", "raw", "encoder"},
               "drifting: where the field is computed: raw samples, or a frozen encoder's multi-scale features "
               "plus raw pixels (auto: encoder for images, raw for points)")
          .add("encoder", &DriftingOptions::encoder, {},
               "drifting: feature encoder weights from `onestep encoder train` (empty: the shipped Fashion-MNIST one "
               "for 1x28x28 images)")
          .add("encoder_sha256", &DriftingOptions::encoder_sha256, {},
               "drifting: expected SHA-256 of method.encoder (empty: the shipped file's)")
          .add("group_batching", &DriftingOptions::group_batching, {"auto", "on", "off"},
               "drifting: compute every class group's field in one batch (on: few large operations, for a GPU where "
               "launches dominate; off: one group at a time, faster on CPUs; auto: on for CUDA)");
  return schema;
}

std::vector<double> parse_temperatures(const std::string& text, const std::string& key) {
  std::vector<double> out;
  std::stringstream stream(text);
  std::string item;
  const auto bad = [&](const std::string& why) {
    return UserError("config: " + key + " = '" + text + "': " + why +
                     "; expected positive numbers separated by commas, e.g. \"0.02,0.05,0.2\"");
  };
  while (std::getline(stream, item, ',')) {
    const auto begin = item.find_first_not_of(" \t");
    const auto end = item.find_last_not_of(" \t");
    if (begin == std::string::npos) throw bad("empty entry");
    item = item.substr(begin, end - begin + 1);
    size_t used = 0;
    double value = NAN;
    try {
      value = std::stod(item, &used);
    } catch (const std::exception&) {
      throw bad("'" + item + "' is not a number");
    }
    if (used != item.size()) throw bad("'" + item + "' is not a number");
    if (!(value > 0) || !std::isfinite(value)) throw bad("'" + item + "' is not a positive finite number");
    out.push_back(value);
  }
  if (out.empty()) throw bad("no temperature");
  return out;
}

DriftingField drifting_field(const torch::Tensor& x, const torch::Tensor& positives, const torch::Tensor& negatives,
                             const std::vector<double>& temperatures, const torch::Tensor& negative_weights,
                             bool mask_self, double attraction_scale, double repulsion_scale) {
  torch::NoGradGuard no_grad;
  // Everything below works on B feature sets at once (B x rows x C); a sample-major input is
  // the one set of its rows flattened.
  const bool sets = x.dim() == 3;
  const auto as_sets = [&](const torch::Tensor& t) {
    const auto flat = t.detach().to(torch::kFloat);
    return sets ? flat : flat.reshape({1, t.size(0), -1});
  };
  const auto xs = as_sets(x);
  const auto pos = as_sets(positives).to(xs.device());
  const auto neg = as_sets(negatives).to(xs.device());
  const int64_t b = xs.size(0), n = xs.size(1), c = xs.size(2), p = pos.size(1), m = neg.size(1);
  if (pos.size(0) != b || neg.size(0) != b || pos.size(2) != c || neg.size(2) != c)
    throw std::invalid_argument("drifting_field: x, positives and negatives differ in feature sets or dimension");
  if (mask_self && m < n)
    throw std::invalid_argument("drifting_field: mask_self needs the generated samples as the first negatives");
  // Targets: negatives, then positives; a weight per set and target (multiplicity).
  const auto targets = torch::cat({neg, pos}, 1);
  auto weights = torch::ones({b, m + p}, xs.options());
  if (negative_weights.defined()) {
    const auto given = negative_weights.to(xs.options()).reshape({-1, m});
    if (given.size(0) != 1 && given.size(0) != b)
      throw std::invalid_argument("drifting_field: negative_weights must be M or B x M");
    weights.slice(1, 0, m).copy_(given.expand({b, m}));
  }
  // Unsquared distances, computed directly (not through |x|^2 + |y|^2 - 2xy, which loses
  // precision for close points).
  auto distance = torch::cdist(xs, targets, 2.0, /*compute_mode=*/2);
  auto counted = weights.unsqueeze(1).expand({b, n, m + p});
  torch::Tensor self_mask;
  if (mask_self) {
    self_mask = torch::zeros({n, m + p}, xs.options());
    self_mask.slice(1, 0, n).diagonal().fill_(1.0);
    counted = counted * (1 - self_mask);
  }
  // Per set, scale coordinates so that the (weighted) mean distance is sqrt(C): distances
  // become d / mean.
  const auto mean_distance = ((distance * counted).sum({1, 2}, true) / counted.sum({1, 2}, true)).clamp_min(1e-30);
  const auto scale = std::sqrt(static_cast<double>(c)) / mean_distance;
  auto normalised = distance / mean_distance;
  if (mask_self) normalised = normalised + self_mask * kMaskedDistance;
  const auto x_scaled = xs * scale;
  const auto pos_scaled = pos * scale;
  const auto neg_scaled = neg * scale;
  const bool weighted = negative_weights.defined();
  const auto log_weights = weights.log().unsqueeze(1);  // B x 1 x (M + P); -inf for weight 0

  // Per temperature, with l = -d / tau, row softmax R (over targets, weighted: l + log w) and
  // column softmax K (over x): A = sqrt(R K) sqrt(w) = exp(l + log w - lse_row / 2 - lse_col / 2),
  // computed in that form (one exp instead of two softmaxes and a square root: the N x (M + P)
  // passes dominate a step). W+ = A+ s-, W- = A- s+ with s± the row sums of A±, so
  // sum_j W+_ij y+_j = s-_i (A+ y+)_i and sum_j W+_ij = s-_i s+_i: W is never formed.
  DriftingField out;
  out.v = torch::zeros_like(xs);
  std::vector<torch::Tensor> raw_squared_norms;  // left on the device: no host transfer per field
  for (const double tau : temperatures) {
    auto logits = normalised * (-1.0 / tau);
    const auto lse_row = torch::logsumexp(weighted ? logits + log_weights : logits, 2, true);
    auto column_term = torch::logsumexp(logits, 1, true).mul_(0.5);
    if (weighted) column_term.sub_(log_weights);
    auto& a = logits.sub_(lse_row.mul(0.5)).sub_(column_term).exp_();
    const auto a_neg = a.slice(2, 0, m), a_pos = a.slice(2, m, m + p);
    const auto s_pos = a_pos.sum(2, true), s_neg = a_neg.sum(2, true);
    const auto attraction = s_neg * (a_pos.bmm(pos_scaled) - s_pos * x_scaled);
    const auto repulsion = s_pos * (a_neg.bmm(neg_scaled) - s_neg * x_scaled);
    const auto v = attraction_scale == 1.0 && repulsion_scale == 1.0
                       ? attraction - repulsion
                       : attraction_scale * attraction - repulsion_scale * repulsion;
    const auto squares = v.pow(2);
    raw_squared_norms.push_back(squares.sum(2).mean(1).to(torch::kDouble));
    out.v += v / root_mean_square(v, squares).clamp_min(1e-30);
  }
  out.v = out.v.reshape(x.sizes());
  out.raw_squared_norms = torch::stack(raw_squared_norms);
  return out;
}

Drifting::Drifting(DriftingOptions options)
    : options_(std::move(options)), temperatures_(parse_temperatures(options_.temperatures, "method.temperatures")) {
  if (options_.cfg_min > options_.cfg_max)
    throw UserError("config: method.cfg_min = " + format_number(options_.cfg_min) +
                    " exceeds method.cfg_max = " + format_number(options_.cfg_max));
  if (options_.cfg_max > 1 && options_.n_unc == 0)
    throw UserError("config: method.cfg_max = " + format_number(options_.cfg_max) +
                    " needs unconditional negatives: set method.n_unc > 0");
  if (options_.queue_size > 0 && options_.queue_size < options_.n_pos)
    throw UserError("config: method.queue_size = " + std::to_string(options_.queue_size) +
                    " is smaller than method.n_pos = " + std::to_string(options_.n_pos) + " (0 turns the queue off)");
}

NetSpec Drifting::net_spec(const DataInfo& data) const {
  NetSpec spec;
  spec.in_shape = noise_shape(data);
  spec.out_shape = data.sample_shape;
  spec.num_classes = data.num_classes;
  spec.num_extra = data.num_classes > 0 ? 1 : 0;  // guidance alpha
  // Spec §5's trap (the field is local): by default the output layer is rescaled to the data's
  // std. With distances scaled to mean 1 and each V_tau RMS-normalised the field here is
  // scale-free, and `default` (the framework's init) trains better on the toys (docs/results.md).
  spec.output_init = options_.output_init == "default" ? OutputInit::Default : OutputInit::DataScale;
  return spec;
}

std::vector<int64_t> Drifting::noise_shape(const DataInfo& data) const {
  if (data.sample_shape.size() == 1) return {options_.noise_dim};
  return data.sample_shape;
}

StepSplit Drifting::step_split(const DataInfo& data) const {
  if (options_.queue_size > 0) return StepSplit::Whole;
  return data.num_classes > 0 ? StepSplit::Shares : StepSplit::Processes;
}

void Drifting::set_process_share(ProcessShare share) {
  for (const auto& [key, value] : {std::pair<const char*, int64_t>{"n_pos", options_.n_pos}, {"n_neg", options_.n_neg}})
    if (value % share.size != 0)
      throw UserError("config: method." + std::string(key) + " = " + std::to_string(value) +
                      ": drifting on unlabelled data splits a step's samples over the processes, so it must be a "
                      "multiple of the " + std::to_string(share.size) + " processes");
  share_ = std::move(share);
}

bool Drifting::uses_encoder(const DataInfo& data) const {
  const bool images = data.sample_shape.size() == 3;
  if (options_.feature_space == "encoder" && !images)
    throw UserError("config: method.feature_space = 'encoder' needs image data (C x H x W); this data has samples "
                    "of shape " + c10::str(data.sample_shape) + ": set method.feature_space = raw");
  return options_.feature_space == "encoder" || (options_.feature_space == "auto" && images);
}

std::vector<FrozenModuleSpec> Drifting::frozen_modules(const DataInfo& data) const {
  if (!uses_encoder(data)) return {};
  std::string path = options_.encoder, sha256 = options_.encoder_sha256;
  if (path.empty()) {
    if (data.sample_shape != kShippedEncoderShape)
      throw UserError("config: drifting on images of shape " + c10::str(data.sample_shape) +
                      " computes its field on a feature encoder's maps, and onestep ships one for 1x28x28 images "
                      "only: train one (onestep encoder train --out FILE data.name=...) and set method.encoder = FILE "
                      "and method.encoder_sha256, or set method.feature_space = raw");
    path = shipped_encoder_path();
    if (sha256.empty()) sha256 = kShippedEncoderSha256;
  }
  if (sha256.empty())
    throw UserError("config: method.encoder = '" + path + "' needs method.encoder_sha256 (sha256sum prints it)");
  const int64_t channels = data.sample_shape[0];
  return {{"encoder", path, sha256, [channels] { return std::make_shared<FeatureEncoderImpl>(channels); }}};
}

std::vector<std::pair<std::string, torch::Tensor>> drifting_feature_sets(const torch::Tensor& x,
                                                                         FeatureEncoderImpl* encoder) {
  std::vector<std::pair<std::string, torch::Tensor>> sets = {{"raw", x.flatten(1).unsqueeze(1)}};
  if (encoder == nullptr) return sets;
  const auto maps = encoder->feature_maps(x);
  for (size_t k = 0; k < maps.size(); ++k) {
    const auto map = maps[k].to(torch::kFloat);  // the statistics in float32, also under bf16 autocast
    const std::string name = "map" + std::to_string(k);
    const auto mean = map.mean({2, 3}), squares = map.square().mean({2, 3});
    sets.emplace_back(name + ".location", locations(map));
    sets.emplace_back(name + ".mean", mean.unsqueeze(1));
    sets.emplace_back(name + ".std", standard_deviation(squares, mean).unsqueeze(1));
    for (const int64_t patch : {2, 4}) {
      if (map.size(2) < patch || map.size(3) < patch) continue;
      const auto patch_mean = torch::avg_pool2d(map, patch);
      const auto patch_squares = torch::avg_pool2d(map.square(), patch);
      const std::string patch_name = name + ".patch" + std::to_string(patch);
      sets.emplace_back(patch_name + ".mean", locations(patch_mean));
      sets.emplace_back(patch_name + ".std", locations(standard_deviation(patch_squares, patch_mean)));
    }
  }
  return sets;
}

Batch Drifting::training_batch(Dataset& dataset, int64_t batch_size, torch::Generator& gen) const {
  const int64_t k = dataset.num_classes();
  const bool queue = options_.queue_size > 0;
  const auto push = [&](int64_t cls, const torch::Tensor& fresh) {
    auto& q = queues_[cls];
    q = q.defined() ? torch::cat({q, fresh}) : fresh;
    if (q.size(0) > options_.queue_size) q = q.slice(0, q.size(0) - options_.queue_size).clone();
    return q;
  };
  if (k == 0) {
    if (options_.n_unc > 0)
      throw UserError("config: method.n_unc = " + std::to_string(options_.n_unc) + " (CFG) needs class-labelled data; " +
                      dataset.describe() + " has no classes");
    Batch batch = dataset.train_batch(options_.n_pos / share_.size, gen);
    if (queue) batch.x = push(0, batch.x);
    return batch;
  }
  const int64_t groups = std::min(batch_size, k);
  std::vector<int64_t> classes;
  if (groups == k) {
    for (int64_t i = 0; i < k; ++i) classes.push_back(i);
  } else {
    const auto order = torch::randperm(k, gen, torch::TensorOptions().dtype(torch::kLong));
    for (int64_t i = 0; i < groups; ++i) classes.push_back(order[i].item<int64_t>());
  }
  Batch batch = dataset.class_batch(classes, options_.n_pos, gen);
  if (queue) {
    std::vector<torch::Tensor> xs, ys;
    for (size_t g = 0; g < classes.size(); ++g) {
      const auto q = push(classes[g], batch.x.slice(0, g * options_.n_pos, (g + 1) * options_.n_pos));
      xs.push_back(q);
      ys.push_back(torch::full({q.size(0)}, classes[g], torch::kLong));
    }
    batch = {torch::cat(xs), torch::cat(ys)};
  }
  if (options_.n_unc > 0) {
    const Batch unconditional = dataset.train_batch(groups * options_.n_unc, gen);
    batch.x = torch::cat({batch.x, unconditional.x});
    batch.y = torch::cat({batch.y, torch::full({groups * options_.n_unc}, k, torch::kLong)});
  }
  return batch;
}

LossOutput Drifting::loss(const LossContext& context, const Batch& batch) {
  NetworkImpl& net = context.modules["net"];
  const auto device = batch.x.device();
  const bool labelled = net.spec().num_classes > 0 && batch.y.defined();
  const bool gathered = static_cast<bool>(share_.gather);  // unlabelled data over processes
  const int64_t n_neg = options_.n_neg / share_.size;
  // Groups: the classes in the batch's order (consecutive labels), or one unlabelled group.
  std::vector<int64_t> classes;
  std::vector<torch::Tensor> positives;
  torch::Tensor unconditional;
  if (labelled) {
    const int64_t null_label = net.null_label();
    const auto y = batch.y.cpu();
    const auto* labels = y.data_ptr<int64_t>();
    int64_t start = 0;
    for (int64_t i = 1; i <= y.size(0); ++i) {
      if (i < y.size(0) && labels[i] == labels[start]) continue;
      if (labels[start] == null_label)
        unconditional = batch.x.slice(0, start, i);
      else {
        classes.push_back(labels[start]);
        positives.push_back(batch.x.slice(0, start, i));
      }
      start = i;
    }
  } else {
    classes.push_back(-1);
    positives.push_back(batch.x);
  }
  const auto groups = static_cast<int64_t>(classes.size());
  if (groups == 0) throw std::invalid_argument("drifting: a batch without positives");

  std::vector<int64_t> shape = {groups * n_neg};
  const auto noise_dims = net.spec().in_shape;
  shape.insert(shape.end(), noise_dims.begin(), noise_dims.end());
  const auto noise = draw_noise(shape, context.gen, device);
  const int64_t total = groups * n_neg;
  NetInput input;
  input.z = noise;
  input.t = input.h = filled(total, 0, noise);
  torch::Tensor alpha;  // per group
  if (labelled) {
    input.c = torch::tensor(classes).repeat_interleave(n_neg).to(device);
    alpha = options_.cfg_min + (options_.cfg_max - options_.cfg_min) * torch::rand({groups}, context.gen);
    if (net.spec().num_extra > 0) input.extra = alpha.repeat_interleave(n_neg).unsqueeze(1).to(noise.options());
  }
  const auto x = net.forward(input).to(torch::kFloat);

  // The feature sets of the generated samples (differentiable), of the positives and of the CFG
  // negatives (without gradient), each rows x F x D.
  FeatureEncoderImpl* encoder = nullptr;
  if (context.frozen != nullptr && context.frozen->count("encoder") > 0)
    encoder = dynamic_cast<FeatureEncoderImpl*>(context.frozen->at("encoder").get());
  const auto sets = drifting_feature_sets(x, encoder);
  std::vector<torch::Tensor> positive_sets, unconditional_sets;
  {
    torch::NoGradGuard no_grad;
    const auto features = [&](const torch::Tensor& samples) {
      std::vector<torch::Tensor> out;
      for (auto& [name, set] : drifting_feature_sets(samples.to(torch::kFloat), encoder)) out.push_back(set);
      return out;
    };
    positive_sets = features(torch::cat(positives));
    if (unconditional.defined()) unconditional_sets = features(unconditional);
  }
  std::vector<int64_t> positive_starts = {0};
  for (const auto& group : positives) positive_starts.push_back(positive_starts.back() + group.size(0));

  // The field (distances, kernels, normalisations) is computed in float32, also in bf16 training.
  const compat::AutocastScope float32(device.type(), /*enabled=*/false);
  // CFG: each group's negatives are its own generated samples (weight 1) and its n_unc real
  // samples of other classes, each weighted (alpha - 1)(n_neg - 1) / n_unc.
  const bool guided = labelled && options_.n_unc > 0 && unconditional.defined();
  torch::Tensor group_weights;  // groups x (n_neg + n_unc)
  if (guided) {
    const auto w = ((alpha.to(torch::kDouble) - 1) * static_cast<double>(n_neg - 1) /
                    static_cast<double>(options_.n_unc)).to(x.options());
    group_weights =
        torch::cat({torch::ones({groups, n_neg}, x.options()), w.unsqueeze(1).expand({groups, options_.n_unc})}, 1);
  }
  // The fields of all feature sets of one dimension D are computed in one call (each feature its
  // own set), and with group batching those of all groups too: for the Fashion-MNIST config 4
  // calls per group, or 4 in all, instead of one per group and set (220). Batching groups needs
  // as many positives in each (always, unless a class queue is still filling); on a 2-core CPU
  // it made that config's step 1.4x slower (larger intermediates), hence off there by default.
  bool batch_groups = options_.group_batching == "on" || (options_.group_batching == "auto" && device.is_cuda());
  for (int64_t g = 1; g < groups; ++g)
    batch_groups = batch_groups && positives[g].size(0) == positives[0].size(0);
  std::vector<std::vector<size_t>> by_dimension;  // indices of the sets, by their D
  for (size_t f = 0; f < sets.size(); ++f) {
    auto same = std::find_if(by_dimension.begin(), by_dimension.end(),
                             [&](const auto& list) { return sets[list[0]].second.size(2) == sets[f].second.size(2); });
    if (same == by_dimension.end()) by_dimension.push_back({f});
    else same->push_back(f);
  }
  std::vector<torch::Tensor> generated_sets, v(sets.size());
  for (const auto& [name, features] : sets) generated_sets.push_back(features.detach());
  auto raw = torch::zeros({static_cast<int64_t>(temperatures_.size())}, x.options().dtype(torch::kDouble));
  const int64_t block = batch_groups ? groups : 1;
  for (const auto& indices : by_dimension) {
    // The sets of this dimension side by side, rows-major (rows x sum F x D); the groups' rows
    // one after the other.
    const auto side_by_side = [&](const std::vector<torch::Tensor>& all) {
      std::vector<torch::Tensor> parts;
      for (const size_t f : indices) parts.push_back(all[f]);
      return torch::cat(parts, 1);
    };
    const auto generated = side_by_side(generated_sets);
    const auto all_positives = side_by_side(positive_sets);
    const auto all_unconditional = guided ? side_by_side(unconditional_sets) : torch::Tensor();
    const int64_t features = generated.size(1), d = generated.size(2);
    // A block's rows as sets: (groups of the block x sum F) x rows per group x D.
    const auto as_sets = [&](const torch::Tensor& t) {
      return t.reshape({block, -1, features, d}).transpose(1, 2).reshape({block * features, -1, d});
    };
    // The logged raw size: per group and set the mean over its features, averaged over both.
    std::vector<double> per_feature;
    for (const size_t f : indices) {
      const int64_t width = sets[f].second.size(1);
      per_feature.insert(per_feature.end(), width, 1.0 / static_cast<double>(width * groups * sets.size()));
    }
    const auto raw_weights = torch::tensor(per_feature, raw.options()).repeat(block);
    auto v_all = torch::empty_like(generated);
    for (int64_t g0 = 0; g0 < groups; g0 += block) {
      const int64_t n_pos = positives[g0].size(0);
      auto own = generated.slice(0, g0 * n_neg, (g0 + block) * n_neg);
      auto field_positives = all_positives.slice(0, positive_starts[g0], positive_starts[g0] + block * n_pos);
      if (gathered) {  // the whole step's samples; this process's rows are those from rank * n_neg
        own = share_.gather(own);
        field_positives = share_.gather(field_positives);
      }
      const auto field_x = as_sets(own);
      auto negatives = field_x;
      torch::Tensor weights;
      if (guided) {
        const auto unc = all_unconditional.slice(0, g0 * options_.n_unc, (g0 + block) * options_.n_unc);
        negatives = torch::cat({field_x, as_sets(unc)}, 1);
        weights = group_weights.slice(0, g0, g0 + block).repeat_interleave(features, 0);
      }
      const auto field = drifting_field(field_x, as_sets(field_positives), negatives, temperatures_, weights, true,
                                        options_.attraction_scale, options_.repulsion_scale);
      // Back to rows-major.
      auto rows = field.v.reshape({block, features, -1, d}).transpose(1, 2).reshape({-1, features, d});
      if (gathered) rows = rows.slice(0, share_.rank * n_neg, (share_.rank + 1) * n_neg);
      v_all.slice(0, g0 * n_neg, (g0 + block) * n_neg).copy_(rows);
      raw += (field.raw_squared_norms * raw_weights).sum(1);
    }
    int64_t column = 0;
    for (const size_t f : indices) {
      const int64_t width = sets[f].second.size(1);
      v[f] = v_all.slice(1, column, column + width);
      column += width;
    }
  }
  LossOutput out;
  out.loss = torch::zeros({}, x.options());
  for (size_t f = 0; f < sets.size(); ++f) {
    const auto& features = sets[f].second;  // total x F x D, float32
    out.loss = out.loss + (features - (features.detach() + v[f])).pow(2).sum(2).mean(1).mean();
  }
  for (size_t i = 0; i < temperatures_.size(); ++i)
    out.parts["raw_v2_tau" + format_number(temperatures_[i])] = raw[static_cast<int64_t>(i)];
  return out;
}

torch::Tensor Drifting::sample(const ModuleSet& modules, const torch::Tensor& noise, const torch::Tensor& labels,
                               const SamplingPlan& plan) {
  if (plan.steps < 1) throw UserError("drifting: nfe must be at least 1, got " + std::to_string(plan.steps));
  torch::NoGradGuard no_grad;
  NetworkImpl& net = modules["net"];
  const int64_t n = noise.size(0);
  NetInput input;
  input.z = noise;
  input.t = input.h = filled(n, 0, noise);
  input.c = labels;
  if (net.spec().num_extra > 0) input.extra = torch::full({n, net.spec().num_extra}, options_.cfg_scale, noise.options());
  return net.forward(input);
}

}  // namespace onestep
