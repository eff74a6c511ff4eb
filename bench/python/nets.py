"""The Python twin's networks: onestep's mlp, unet and dit (src/onestep/nets/*.cpp) in plain
PyTorch, layer for layer, with the same parameter counts, initialisation rules and LayerNorm,
RMSNorm, softmax and attention (nets/layers.h: fused kernels, PyTorch 2.x's fused attention,
written out inside the JVP), so that both sides run the same operations.
Every network takes (z, t, h, c) with c the class labels (None: the null label)."""
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import forward_ad


def rms_norm(x, eps=1e-6):
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)


def forward_ad_active():
    """Whether a forward-mode AD level is open: the twin's only JVP (MeanFlow's), where onestep
    opens its WrittenOutLayers scope (nets/layers.h)."""
    return forward_ad._current_level >= 0


def layer_norm(x, eps=1e-6):
    if not forward_ad_active():
        return F.layer_norm(x, (x.size(-1),), eps=eps)
    centered = x - x.mean(-1, keepdim=True)
    return centered * torch.rsqrt(centered.square().mean(-1, keepdim=True) + eps)


def softmax_last(x):
    if not forward_ad_active():
        return torch.softmax(x, -1)
    e = torch.exp(x - x.detach().max(-1, keepdim=True)[0])
    return e / e.sum(-1, keepdim=True)


def attention(q, k, v):
    if not forward_ad_active() and hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v)  # PyTorch 2.x's fused kernel, as onestep's on 2.x
    return torch.matmul(softmax_last(torch.matmul(q * (1.0 / math.sqrt(q.size(-1))), k.transpose(-2, -1))), v)


class TimeEmbedding(nn.Module):
    """Sinusoidal features of t (times time_scale), then Linear, SiLU, Linear."""

    def __init__(self, dim, max_period, scale):
        super().__init__()
        half = dim // 2
        self.scale = scale
        self.register_buffer("frequencies",
                             torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half))
        self.fc1 = nn.Linear(2 * half, dim)
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, t):
        angles = (t * self.scale).unsqueeze(1) * self.frequencies.unsqueeze(0)
        return self.fc2(F.silu(self.fc1(torch.cat([torch.cos(angles), torch.sin(angles)], 1))))


class ClassEmbedding(nn.Module):
    """A table with one extra row for the null label."""

    def __init__(self, num_classes, dim):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, c, batch, device):
        if c is None:
            c = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        return self.table(c)


class ResidualBlock(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, a):
        return a + self.fc2(F.silu(self.fc1(layer_norm(a))))


class Mlp(nn.Module):
    """nets/mlp.cpp: [z, Fourier features, t, h, class embeddings] -> SiLU layers or pre-norm
    residual blocks -> linear output."""

    FOURIER_SEED = 0x5EED5EED

    def __init__(self, shape, num_classes, cfg):
        super().__init__()
        width, depth, emb = cfg["width"], cfg["depth"], cfg["emb_dim"]
        self.shape = shape
        in_dim = math.prod(shape)
        self.t_embedding = TimeEmbedding(emb, cfg["time_max_period"], cfg["time_scale"])
        self.h_embedding = TimeEmbedding(emb, cfg["time_max_period"], cfg["time_scale"])
        in_features = in_dim + 2 * emb
        frequencies = None
        if cfg["fourier_features"] > 0:
            gen = torch.Generator().manual_seed(self.FOURIER_SEED)
            frequencies = torch.randn(in_dim, cfg["fourier_features"], generator=gen) * cfg["fourier_scale"]
            in_features += 2 * cfg["fourier_features"]
        self.register_buffer("fourier_frequencies", frequencies)
        self.class_embedding = ClassEmbedding(num_classes, emb) if num_classes > 0 else None
        if num_classes > 0:
            in_features += emb
        self.residual = cfg["residual"]
        if self.residual:
            self.input = nn.Linear(in_features, width)
            self.hidden = nn.ModuleList([ResidualBlock(width) for _ in range(depth)])
        else:
            self.hidden = nn.ModuleList([nn.Linear(in_features if i == 0 else width, width) for i in range(depth)])
        self.output = nn.Linear(width, in_dim)

    def forward(self, z, t, h, c=None):
        batch = z.size(0)
        flat = z.reshape(batch, -1)
        parts = [flat, self.t_embedding(t), self.h_embedding(h)]
        if self.fourier_frequencies is not None:
            angles = flat.matmul(self.fourier_frequencies.to(flat.dtype)) * (2 * math.pi)
            parts += [torch.cos(angles), torch.sin(angles)]
        if self.class_embedding is not None:
            parts.append(self.class_embedding(c, batch, z.device))
        a = torch.cat(parts, 1)
        if self.residual:
            a = self.input(a)
            for block in self.hidden:
                a = block(a)
            a = layer_norm(a)
        else:
            for layer in self.hidden:
                a = F.silu(layer(a))
        return self.output(a).reshape(batch, *self.shape)


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm with a bfloat16 input (from autocast) first cast to the weights' dtype, as
    onestep's unet.cpp does: PyTorch 1.13's CPU autocast passes bfloat16 on to group_norm."""

    def forward(self, x):
        return super().forward(x.to(self.weight.dtype) if x.dtype == torch.bfloat16 else x)


def group_norm(channels):
    groups = min(32, channels)
    while channels % groups != 0:
        groups -= 1
    return GroupNorm(groups, channels)


def conv(cin, cout, kernel, stride=1):
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def zero_(module):
    with torch.no_grad():
        module.weight.zero_()
        module.bias.zero_()
    return module


class ResBlock(nn.Module):
    def __init__(self, cin, cout, emb_dim, scale_shift):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = group_norm(cin)
        self.conv1 = conv(cin, cout, 3)
        self.emb = nn.Linear(emb_dim, 2 * cout if scale_shift else cout)
        self.norm2 = group_norm(cout)
        self.conv2 = zero_(conv(cout, cout, 3))
        self.skip = conv(cin, cout, 1) if cin != cout else None

    def forward(self, x, emb):
        a = self.conv1(F.silu(self.norm1(x)))
        cond = self.emb(F.silu(emb)).unsqueeze(-1).unsqueeze(-1)
        if self.scale_shift:
            scale, shift = cond.chunk(2, 1)
            a = self.norm2(a) * (1 + scale) + shift
        else:
            a = self.norm2(a + cond)
        a = self.conv2(F.silu(a))
        return (self.skip(x) if self.skip is not None else x) + a


class AttentionBlock(nn.Module):
    def __init__(self, channels, heads):
        super().__init__()
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = conv(channels, 3 * channels, 1)
        self.proj = zero_(conv(channels, channels, 1))

    def forward(self, x):
        b, ch, hgt, wid = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, ch // self.heads, hgt * wid).transpose(-2, -1)
        out = attention(*qkv.unbind(1))
        return x + self.proj(out.transpose(-2, -1).reshape(b, ch, hgt, wid))


class Stage(nn.Module):
    def __init__(self, cin, cout, emb_dim, with_attention, heads, scale_shift):
        super().__init__()
        self.res = ResBlock(cin, cout, emb_dim, scale_shift)
        self.attention = AttentionBlock(cout, heads) if with_attention else None

    def forward(self, x, emb):
        a = self.res(x, emb)
        return self.attention(a) if self.attention is not None else a


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = conv(channels, channels, 3)

    def forward(self, x, size):
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


def attention_levels(text, levels):
    out = []
    for item in (part.strip() for part in text.split(",")):
        if item:
            out.append(levels - 1 if item == "lowest" else int(item))
    return out


class Unet(nn.Module):
    """nets/unet.cpp: DDPM/ADM-style U-Net with scale-shift conditioning."""

    def __init__(self, shape, num_classes, cfg):
        super().__init__()
        emb_dim, channels, heads = cfg["emb_dim"], cfg["channels"], cfg["heads"]
        mult = [int(m) for m in str(cfg["channel_mult"]).split(",")]
        scale_shift = cfg["scale_shift"]
        attends = attention_levels(cfg["attention_levels"], len(mult))
        self.t_embedding = TimeEmbedding(emb_dim, cfg["time_max_period"], cfg["time_scale"])
        self.h_embedding = TimeEmbedding(emb_dim, cfg["time_max_period"], cfg["time_scale"])
        self.class_embedding = ClassEmbedding(num_classes, emb_dim) if num_classes > 0 else None
        ch = channels
        self.input = conv(shape[0], ch, 3)
        skips = [ch]
        self.down = nn.ModuleList()
        for level, m in enumerate(mult):
            out = channels * m
            for _ in range(cfg["num_res_blocks"]):
                self.down.append(Stage(ch, out, emb_dim, level in attends, heads, scale_shift))
                ch = out
                skips.append(ch)
            if level + 1 < len(mult):
                self.down.append(conv(ch, ch, 3, 2))
                skips.append(ch)
        self.middle = nn.ModuleList([Stage(ch, ch, emb_dim, True, heads, scale_shift),
                                     Stage(ch, ch, emb_dim, False, heads, scale_shift)])
        self.up = nn.ModuleList()
        for level in reversed(range(len(mult))):
            out = channels * mult[level]
            for _ in range(cfg["num_res_blocks"] + 1):
                self.up.append(Stage(ch + skips.pop(), out, emb_dim, level in attends, heads, scale_shift))
                ch = out
            if level > 0:
                self.up.append(Upsample(ch))
        self.output_norm = group_norm(ch)
        self.output = zero_(conv(ch, shape[0], 3))

    def forward(self, z, t, h, c=None):
        emb = self.t_embedding(t) + self.h_embedding(h)
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(c, z.size(0), z.device)
        x = self.input(z)
        skips = [x]
        for module in self.down:
            x = module(x, emb) if isinstance(module, Stage) else module(x)
            skips.append(x)
        for module in self.middle:
            x = module(x, emb)
        for module in self.up:
            if isinstance(module, Stage):
                x = module(torch.cat([x, skips.pop()], 1), emb)
            else:
                x = module(x, skips[-1].shape[2:])
        return self.output(F.silu(self.output_norm(x)))


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def xavier_(linear):
    with torch.no_grad():
        nn.init.xavier_uniform_(linear.weight)
        linear.bias.zero_()
    return linear


def sincos_1d(positions, dim):
    omega = torch.pow(10000.0, -torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = positions.unsqueeze(1) * omega.unsqueeze(0)
    return torch.cat([torch.sin(angles), torch.cos(angles)], 1)


def sincos_2d(rows, cols, dim):
    row = torch.arange(rows, dtype=torch.float64).repeat_interleave(cols)
    col = torch.arange(cols, dtype=torch.float64).repeat(rows)
    return torch.cat([sincos_1d(row, dim // 2), sincos_1d(col, dim // 2)], 1).unsqueeze(0).float()


class DitBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        width, self.heads = cfg["width"], cfg["heads"]
        self.rms, self.qk_norm, self.mod_norm = cfg["norm"] == "rmsnorm", cfg["qk_norm"], cfg["mod_norm"]
        hidden = round(width * cfg["mlp_ratio"])
        self.qkv = xavier_(nn.Linear(width, 3 * width))
        self.proj = xavier_(nn.Linear(width, width))
        self.fc1 = xavier_(nn.Linear(width, hidden))
        self.fc2 = xavier_(nn.Linear(hidden, width))
        self.modulation = zero_(nn.Linear(width, 6 * width))

    def norm(self, x):
        return rms_norm(x) if self.rms else layer_norm(x)

    def self_attention(self, x):
        b, n, width = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if self.qk_norm:
            q, k = rms_norm(q), rms_norm(k)
        return self.proj(attention(q, k, v).transpose(1, 2).reshape(b, n, width))

    def forward(self, x, cond):
        m = modulation(self.modulation, cond, 6, self.mod_norm)
        out = x + m[2].unsqueeze(1) * self.self_attention(modulate(self.norm(x), m[0], m[1]))
        mlp = self.fc2(F.gelu(self.fc1(modulate(self.norm(out), m[3], m[4])), approximate="tanh"))
        return out + m[5].unsqueeze(1) * mlp


def modulation(linear, cond, parts, mod_norm):
    chunks = linear(F.silu(cond)).chunk(parts, 1)
    return [rms_norm(chunk) for chunk in chunks] if mod_norm else chunks


class Dit(nn.Module):
    """nets/dit.cpp: patchify, 2-D sin-cos positions, adaLN-zero blocks, final adaLN layer."""

    def __init__(self, shape, num_classes, cfg):
        super().__init__()
        width, p = cfg["width"], cfg["patch_size"]
        self.p, self.out_channels = p, shape[0]
        self.rms, self.mod_norm = cfg["norm"] == "rmsnorm", cfg["mod_norm"]
        self.t_embedding = TimeEmbedding(width, cfg["time_max_period"], cfg["time_scale"])
        self.h_embedding = TimeEmbedding(width, cfg["time_max_period"], cfg["time_scale"])
        self.class_embedding = ClassEmbedding(num_classes, width) if num_classes > 0 else None
        self.patchify = nn.Conv2d(shape[0], width, p, stride=p)
        with torch.no_grad():
            nn.init.xavier_uniform_(self.patchify.weight.view(width, -1))
            self.patchify.bias.zero_()
        self.register_buffer("position", sincos_2d(shape[1] // p, shape[2] // p, width))
        self.blocks = nn.ModuleList([DitBlock(cfg) for _ in range(cfg["depth"])])
        self.final_modulation = zero_(nn.Linear(width, 2 * width))
        self.final_linear = zero_(nn.Linear(width, p * p * shape[0]))

    def forward(self, z, t, h, c=None):
        b, p = z.size(0), self.p
        rows, cols = z.size(2) // p, z.size(3) // p
        cond = self.t_embedding(t) + self.h_embedding(h)
        if self.class_embedding is not None:
            cond = cond + self.class_embedding(c, b, z.device)
        x = self.patchify(z).flatten(2).transpose(1, 2) + self.position
        for block in self.blocks:
            x = block(x, cond)
        m = modulation(self.final_modulation, cond, 2, self.mod_norm)
        x = self.final_linear(modulate(rms_norm(x) if self.rms else layer_norm(x), m[0], m[1]))
        return (x.reshape(b, rows, cols, p, p, self.out_channels).permute(0, 5, 1, 3, 2, 4)
                .reshape(b, self.out_channels, rows * p, cols * p))


NETWORKS = {"mlp": Mlp, "unet": Unet, "dit": Dit}
