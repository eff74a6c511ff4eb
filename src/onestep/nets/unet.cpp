// U-Net (see unet.h) and its registration.
#include "onestep/nets/unet.h"

#include "onestep/core/error.h"
#include "onestep/nets/layers.h"

#include <algorithm>
#include <sstream>

namespace onestep {
namespace {

namespace F = torch::nn::functional;

// GroupNorm with 32 groups, or the largest divisor of `channels` below 32.
torch::nn::GroupNorm make_group_norm(int64_t channels) {
  int64_t groups = std::min<int64_t>(32, channels);
  while (channels % groups != 0) --groups;
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, channels));
}

// `norm(x)`, with x first cast to the weights' dtype where bf16 autocast made it bfloat16: CUDA
// autocast runs group_norm in float32 by itself, LibTorch 1.13's CPU autocast passes bfloat16
// on, which fails against float32 weights.
torch::Tensor group_norm(torch::nn::GroupNorm& norm, const torch::Tensor& x) {
  return norm(x.scalar_type() == torch::kBFloat16 ? x.to(norm->weight.scalar_type()) : x);
}

torch::nn::Conv2d make_conv(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2));
}

void zero_init(torch::nn::Conv2d& conv) {
  torch::NoGradGuard no_grad;
  conv->weight.zero_();
  conv->bias.zero_();
}

// With `scale_shift` the conditioning modulates the normalised features (ADM's
// use_scale_shift_norm): norm2(a) (1 + scale) + shift. Without it, it is added before norm2,
// which erases it wherever a GroupNorm group holds one channel (32 channels or fewer).
class ResBlockImpl : public torch::nn::Module {
 public:
  ResBlockImpl(int64_t in, int64_t out, int64_t emb_dim, bool scale_shift) : scale_shift_(scale_shift) {
    norm1_ = register_module("norm1", make_group_norm(in));
    conv1_ = register_module("conv1", make_conv(in, out, 3));
    emb_ = register_module("emb", torch::nn::Linear(emb_dim, scale_shift ? 2 * out : out));
    norm2_ = register_module("norm2", make_group_norm(out));
    conv2_ = register_module("conv2", make_conv(out, out, 3));
    zero_init(conv2_);
    if (in != out) skip_ = register_module("skip", make_conv(in, out, 1));
  }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& emb) {
    auto a = conv1_(torch::silu(group_norm(norm1_, x)));
    const auto conditioning = emb_(torch::silu(emb)).unsqueeze(-1).unsqueeze(-1);
    if (scale_shift_) {
      const auto parts = conditioning.chunk(2, 1);
      a = group_norm(norm2_, a) * (1 + parts[0]) + parts[1];
    } else {
      a = group_norm(norm2_, a + conditioning);
    }
    a = conv2_(torch::silu(a));
    return (skip_ ? skip_(x) : x) + a;
  }

 private:
  bool scale_shift_;
  torch::nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, skip_{nullptr};
  torch::nn::Linear emb_{nullptr};
};
TORCH_MODULE(ResBlock);

// Multi-head self-attention over the H*W positions, added to the input.
class AttentionBlockImpl : public torch::nn::Module {
 public:
  AttentionBlockImpl(int64_t channels, int64_t heads) : heads_(heads) {
    TORCH_CHECK(channels % heads == 0, "unet: ", channels, " channels are not divisible into ", heads, " heads");
    norm_ = register_module("norm", make_group_norm(channels));
    qkv_ = register_module("qkv", make_conv(channels, 3 * channels, 1));
    proj_ = register_module("proj", make_conv(channels, channels, 1));
    zero_init(proj_);
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t b = x.size(0), ch = x.size(1), hgt = x.size(2), wid = x.size(3);
    // B x 3 x heads x d x HW -> three tensors of B x heads x HW x d (unbind: see dit.cpp).
    const auto qkv = qkv_(group_norm(norm_, x)).reshape({b, 3, heads_, ch / heads_, hgt * wid}).transpose(-2, -1).unbind(1);
    const auto out = attention(qkv[0], qkv[1], qkv[2]);
    return x + proj_(out.transpose(-2, -1).reshape({b, ch, hgt, wid}));
  }

 private:
  int64_t heads_;
  torch::nn::GroupNorm norm_{nullptr};
  torch::nn::Conv2d qkv_{nullptr}, proj_{nullptr};
};
TORCH_MODULE(AttentionBlock);

// A residual block, optionally followed by self-attention.
class StageImpl : public torch::nn::Module {
 public:
  StageImpl(int64_t in, int64_t out, int64_t emb_dim, bool with_attention, int64_t heads, bool scale_shift) {
    res_ = register_module("res", ResBlock(in, out, emb_dim, scale_shift));
    if (with_attention) attention_ = register_module("attention", AttentionBlock(out, heads));
  }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& emb) {
    const auto a = res_(x, emb);
    return attention_ ? attention_(a) : a;
  }

 private:
  ResBlock res_{nullptr};
  AttentionBlock attention_{nullptr};
};
TORCH_MODULE(Stage);

// Nearest-neighbour upsampling to a given size, then a 3x3 conv.
class UpsampleImpl : public torch::nn::Module {
 public:
  explicit UpsampleImpl(int64_t channels) { conv_ = register_module("conv", make_conv(channels, channels, 3)); }

  torch::Tensor forward(const torch::Tensor& x, const std::vector<int64_t>& size) {
    return conv_(F::interpolate(x, F::InterpolateFuncOptions().size(size).mode(torch::kNearest)));
  }

 private:
  torch::nn::Conv2d conv_{nullptr};
};
TORCH_MODULE(Upsample);

[[maybe_unused]] const bool registered = NetworkRegistry::instance().add(
    {"model", "unet", "", "U-Net for images (DDPM/ADM style)", UnetOptions::schema().keys()},
    [](const Config& config, const NetSpec& spec) -> Network {
      require_image_shape(spec, "unet");
      const auto options = UnetOptions::schema().read(config);
      for (const int64_t mult : options.channel_mult)
        if ((options.channels * mult) % options.heads != 0)
          throw UserError("config: model.channels x model.channel_mult (" + std::to_string(options.channels * mult) +
                          ") must be divisible by model.heads = " + std::to_string(options.heads));
      parse_attention_levels(options.attention_levels, static_cast<int64_t>(options.channel_mult.size()));
      return std::make_shared<UnetImpl>(spec, options);
    });

}  // namespace

const OptionSchema<UnetOptions>& UnetOptions::schema() {
  static const auto schema =
      OptionSchema<UnetOptions>("model")
          .add("channels", &UnetOptions::channels, 1, 1 << 14, "unet: channels of the first level")
          .add("channel_mult", &UnetOptions::channel_mult, 1, 64, "unet: channel multiplier per level")
          .add("num_res_blocks", &UnetOptions::num_res_blocks, 1, 16, "unet: residual blocks per level")
          .add("attention_levels", &UnetOptions::attention_levels, {},
               "unet: levels whose blocks add self-attention: indices (0 = full size, each next level half) "
               "and/or \"lowest\"; the middle block always has it")
          .add("emb_dim", &UnetOptions::emb_dim, 2, 1 << 14, "unet: width of the t, h, class and extra embeddings")
          .add("heads", &UnetOptions::heads, 1, 256, "unet: attention heads")
          .add("scale_shift", &UnetOptions::scale_shift,
               "unet: the conditioning scales and shifts the normalised features (false: added before the norm, "
               "as checkpoints of format 1 did; a GroupNorm of one channel per group then erases it)")
          .include(&UnetOptions::time, TimeEmbeddingOptions::schema());
  return schema;
}

std::vector<int64_t> parse_attention_levels(const std::string& text, int64_t levels) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    if (item.empty()) continue;
    if (item == "lowest") {
      out.push_back(levels - 1);
      continue;
    }
    size_t used = 0;
    int64_t level = -1;
    try {
      level = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || level < 0 || level >= levels)
      throw UserError("config: model.attention_levels: '" + item + "' is not a level of this U-Net (0.." +
                      std::to_string(levels - 1) + ", or \"lowest\")");
    out.push_back(level);
  }
  return out;
}

UnetImpl::UnetImpl(const NetSpec& spec, const UnetOptions& options) : NetworkImpl(spec) {
  TORCH_CHECK(spec.in_shape.size() == 3 && spec.out_shape.size() == 3, "unet: needs C x H x W input and output");
  TORCH_CHECK(spec.in_shape[1] == spec.out_shape[1] && spec.in_shape[2] == spec.out_shape[2],
              "unet: output must have the input's height and width");
  TORCH_CHECK(!options.channel_mult.empty() && options.num_res_blocks > 0, "unet: needs levels and res blocks");
  const int64_t emb_dim = options.emb_dim;
  conditions_ = ConditionEmbeddings(*this, spec, emb_dim, options.time);

  const int64_t levels = static_cast<int64_t>(options.channel_mult.size());
  const auto attention_levels = parse_attention_levels(options.attention_levels, levels);
  const auto attends = [&](int64_t level) {
    return std::find(attention_levels.begin(), attention_levels.end(), level) != attention_levels.end();
  };
  int64_t ch = options.channels;
  input_ = register_module("input", make_conv(spec.in_shape[0], ch, 3));
  std::vector<int64_t> skip_channels = {ch};
  down_ = register_module("down", torch::nn::ModuleList());
  for (int64_t level = 0; level < levels; ++level) {
    const int64_t out = options.channels * options.channel_mult[level];
    for (int64_t r = 0; r < options.num_res_blocks; ++r) {
      down_->push_back(Stage(ch, out, emb_dim, attends(level), options.heads, options.scale_shift));
      ch = out;
      skip_channels.push_back(ch);
    }
    if (level + 1 < levels) {
      down_->push_back(make_conv(ch, ch, 3, 2));
      skip_channels.push_back(ch);
    }
  }
  middle_ = register_module("middle", torch::nn::ModuleList());
  middle_->push_back(Stage(ch, ch, emb_dim, true, options.heads, options.scale_shift));
  middle_->push_back(Stage(ch, ch, emb_dim, false, options.heads, options.scale_shift));
  up_ = register_module("up", torch::nn::ModuleList());
  for (int64_t level = levels - 1; level >= 0; --level) {
    const int64_t out = options.channels * options.channel_mult[level];
    for (int64_t r = 0; r <= options.num_res_blocks; ++r) {
      up_->push_back(Stage(ch + skip_channels.back(), out, emb_dim, attends(level), options.heads, options.scale_shift));
      skip_channels.pop_back();
      ch = out;
    }
    if (level > 0) up_->push_back(Upsample(ch));
  }
  output_norm_ = register_module("output_norm", make_group_norm(ch));
  output_ = register_module("output", make_conv(ch, spec.out_shape[0], 3));
  zero_init(output_);
}

torch::Tensor UnetImpl::forward(const NetInput& input) {
  const auto& z = input.z;
  const auto emb = conditions_.sum(input);
  auto x = input_(z);
  std::vector<torch::Tensor> skips = {x};
  for (const auto& module : *down_) {
    if (auto* stage = module->as<StageImpl>()) {
      x = stage->forward(x, emb);
      note_activation(x);
    } else {
      x = module->as<torch::nn::Conv2dImpl>()->forward(x);
    }
    skips.push_back(x);
  }
  for (const auto& module : *middle_) {
    x = module->as<StageImpl>()->forward(x, emb);
    note_activation(x);
  }
  for (const auto& module : *up_) {
    if (auto* stage = module->as<StageImpl>()) {
      x = stage->forward(torch::cat({x, skips.back()}, 1), emb);
      note_activation(x);
      skips.pop_back();
    } else {
      const auto& skip = skips.back();
      x = module->as<UpsampleImpl>()->forward(x, {skip.size(2), skip.size(3)});
    }
  }
  return output_(torch::silu(group_norm(output_norm_, x)));
}

}  // namespace onestep
