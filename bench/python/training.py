"""The Python twin's training step, as onestep's TrainingState::step and train/optimizer.cpp,
ema.cpp do it: the loss (under bf16 autocast with train.precision = bf16), its value on the
host, zero_grad (zeroing existing gradients), backward, global-norm clipping with a host sync,
Adam written out per parameter with bias correction, the learning-rate schedule, and an EMA by
lerp_."""
import math

import torch


class Adam:
    def __init__(self, params, lr, beta1, beta2, weight_decay, decoupled, eps=1e-8):
        self.params = list(params)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.weight_decay, self.decoupled = weight_decay, decoupled
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = 0

    def zero_grad(self):
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self, lr):
        self.steps += 1
        bias1 = 1.0 - self.beta1 ** self.steps
        bias2 = 1.0 - self.beta2 ** self.steps
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            if p.grad is None:
                continue
            grad = p.grad
            if self.weight_decay != 0.0:
                if self.decoupled:
                    p.mul_(1.0 - lr * self.weight_decay)
                else:
                    grad = grad + self.weight_decay * p
            m.mul_(self.beta1).add_(grad, alpha=1.0 - self.beta1)
            v.mul_(self.beta2).addcmul_(grad, grad, value=1.0 - self.beta2)
            denom = (v / bias2).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-lr / bias1)


def schedule(cfg, step):
    lr, warmup, steps = cfg["lr"], cfg["warmup"], cfg["steps"]
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    if cfg["lr_schedule"] != "cosine" or steps <= warmup:
        return lr
    progress = min(1.0, (step - warmup) / (steps - warmup))
    return 0.5 * lr * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def clip_gradients(params, max_norm):
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = math.sqrt(torch.stack([g.pow(2).sum() for g in grads]).sum().item())
    if max_norm > 0 and norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for g in grads:
            g.mul_(scale)
    return norm


class Ema:
    def __init__(self, shadow, live, decay):
        self.shadow, self.decay = shadow, decay
        shadow.load_state_dict(live.state_dict())
        for p in shadow.parameters():
            p.requires_grad_(False)
        shadow.eval()

    @torch.no_grad()
    def update(self, live):
        for s, p in zip(self.shadow.parameters(), live.parameters()):
            s.lerp_(p, 1.0 - self.decay)
        for s, b in zip(self.shadow.buffers(), live.buffers()):
            s.copy_(b)


class TrainingState:
    """Network, EMA, Adam and generator of one run; step() is one training step."""

    def __init__(self, method, net, shadow, null, data, cfg, device):
        self.method, self.net, self.null, self.data, self.cfg, self.device = method, net, null, data, cfg, device
        train = cfg["train"]
        self.ema = Ema(shadow, net, train["ema_decay"])
        self.optimizer = Adam(net.parameters(), train["lr"], train["beta1"], train["beta2"], train["weight_decay"],
                              train["optimizer"] == "adamw")
        self.gen = torch.Generator().manual_seed(train["seed"])
        self.batch_size, self.grad_clip = train["batch_size"], train["grad_clip"]
        self.bf16 = train["precision"] == "bf16"

    def step(self, step):
        """Returns the loss; a non-finite loss or gradient skips the update (loss returned)."""
        x, y = self.data.train_batch(self.batch_size, self.gen)
        x = x.to(self.device)
        y = y.to(self.device) if y is not None else None
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out, _parts = self.method.loss(self.net, self.null, x, y, self.gen)
        loss = out.item()
        if not math.isfinite(loss):
            return loss
        self.optimizer.zero_grad()
        out.backward()
        if not math.isfinite(clip_gradients(self.optimizer.params, self.grad_clip)):
            return loss
        self.optimizer.step(schedule(self.cfg["train"], step))
        self.ema.update(self.net)
        return loss
