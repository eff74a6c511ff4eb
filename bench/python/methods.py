"""The Python twin's methods: Flow Matching and MeanFlow as onestep computes them
(src/onestep/methods/linear_path.cpp, flow_matching.cpp, meanflow.cpp, jvp.cpp): every random
draw from the run's CPU generator, then moved to the device; MeanFlow's du/dt by forward-mode
AD with dual tensors (torch.autograd.forward_ad, onestep's default method.jvp = "forward"; the
same API on PyTorch 1.13 and 2.x) and in float32 under bf16 autocast, as onestep's jvp.cpp, the
tangent detached, CFG folded into the target."""
import torch
from torch.autograd import forward_ad


def require_independent_coupling(cfg):
    """The twin pairs noise with data as drawn: the minibatch-OT coupling needs an assignment
    solver that plain PyTorch lacks, so comparisons set method.coupling=independent on both sides."""
    if cfg["coupling"] != "independent":
        raise ValueError("bench/python: only method.coupling = independent is mirrored; "
                         "compare with method.coupling=independent")


class TimeSampler:
    def __init__(self, cfg):
        self.kind, self.mu, self.sigma = cfg["time_sampler"], cfg["time_mu"], cfg["time_sigma"]

    def draw(self, n, gen):
        if self.kind == "uniform":
            return torch.rand(n, generator=gen)
        return torch.sigmoid(torch.randn(n, generator=gen) * self.sigma + self.mu)


def per_sample(value, rank):
    return value.reshape(value.size(0), *([1] * (rank - 1)))


def draw_path_point(x, t, gen):
    """(t, e, z_t = (1 - t) x + t e, v_t = e - x) with e drawn on the CPU."""
    e = torch.randn(x.shape, generator=gen).to(x.device)
    tb = per_sample(t, x.dim())
    return t, (1 - tb) * x + tb * e, e - x


def drop_labels(labels, null, p, gen):
    if labels is None:
        return None
    drop = (torch.rand(labels.size(0), generator=gen) < p).to(labels.device)
    return torch.where(drop, torch.full_like(labels, null), labels)


def conditional_and_unconditional(net, z, t, h, labels, null):
    n = z.size(0)
    both = net(torch.cat([z, z]), torch.cat([t, t]), torch.cat([h, h]),
               torch.cat([labels, torch.full((n,), null, dtype=torch.long, device=z.device)]))
    return both[:n], both[n:]


def uniform_time_grid(steps):
    return [1.0 - i / steps for i in range(steps)] + [0.0]


def filled(n, value, like):
    return torch.full((n,), value, dtype=like.dtype, device=like.device)


class FlowMatching:
    """loss() returns the loss and the method's logged parts (detached), as onestep's LossOutput."""
    name = "fm"

    def __init__(self, cfg):
        self.times = TimeSampler(cfg)
        self.label_dropout = cfg["label_dropout"]
        self.cfg_scale = cfg["cfg_scale"]
        require_independent_coupling(cfg)
        if cfg["sampler"] != "euler":
            raise ValueError("bench/python: only the euler sampler of fm is mirrored")

    def loss(self, net, null, x, y, gen):
        t = self.times.draw(x.size(0), gen).to(x.device)
        t, z_t, v_t = draw_path_point(x, t, gen)
        c = drop_labels(y, null, self.label_dropout, gen)
        v_pred = net(z_t, t, torch.zeros_like(t), c)
        return (v_pred - v_t).pow(2).flatten(1).sum(1).mean(), {}

    def velocity(self, net, z, t, labels, null):
        n = z.size(0)
        t, h = filled(n, t, z), filled(n, 0, z)
        if labels is None or self.cfg_scale == 1.0:
            return net(z, t, h, labels)
        cond, uncond = conditional_and_unconditional(net, z, t, h, labels, null)
        return uncond + self.cfg_scale * (cond - uncond)

    @torch.no_grad()
    def sample(self, net, null, noise, labels, nfe):
        grid = uniform_time_grid(nfe)
        z = noise
        for i in range(nfe):
            z = z - (grid[i] - grid[i + 1]) * self.velocity(net, z, grid[i], labels, null)
        return z


class MeanFlow:
    name = "meanflow"

    def __init__(self, cfg):
        self.times = TimeSampler(cfg)
        self.label_dropout = cfg["label_dropout"]
        self.ratio, self.p, self.c = cfg["ratio"], cfg["adaptive_p"], cfg["adaptive_c"]
        self.omega, self.kappa = cfg["cfg_omega"], cfg["cfg_kappa"]
        self.t_lo, self.t_hi = cfg["cfg_t_lo"], cfg["cfg_t_hi"]
        if cfg["jvp"] != "forward" or cfg["tangent"] != "v,0,1" or cfg["gap_sampler"] != "pairs":
            raise ValueError("bench/python: only method.jvp = forward, tangent v,0,1 and gap_sampler pairs are mirrored")
        self.model_tangent = cfg["tangent_velocity"] == "model"
        require_independent_coupling(cfg)

    def time_pair(self, n, gen):
        a, b = self.times.draw(n, gen), self.times.draw(n, gen)
        t, r = torch.maximum(a, b), torch.minimum(a, b)
        keep_gap = torch.rand(n, generator=gen) < self.ratio
        return t, torch.where(keep_gap, r, t)

    def guided_velocity(self, net, z_t, t, v_t, labels, dropped, null):
        if labels is None or (self.omega == 1.0 and self.kappa == 0.0):
            return v_t
        with torch.no_grad():
            cond, uncond = conditional_and_unconditional(net, z_t, t, torch.zeros_like(t), labels, null)
            guided = self.omega * v_t + self.kappa * cond + (1.0 - self.omega - self.kappa) * uncond
            apply = (t >= self.t_lo).logical_and(t <= self.t_hi).logical_and(dropped.logical_not())
            return torch.where(per_sample(apply, v_t.dim()), guided, v_t)

    def loss(self, net, null, x, y, gen):
        t, r = self.time_pair(x.size(0), gen)
        t, z_t, v_t = draw_path_point(x, t.to(x.device), gen)
        r = r.to(x.device)
        c = drop_labels(y, null, self.label_dropout, gen)
        v = self.guided_velocity(net, z_t, t, v_t, y, c.eq(null), null) if c is not None else v_t
        h = t - r
        tangent = v
        if self.model_tangent:
            with torch.no_grad():
                tangent = net(z_t, t, torch.zeros_like(t), c).to(v.dtype)
        with torch.autocast(x.device.type, enabled=False), forward_ad.dual_level():
            out = net(forward_ad.make_dual(z_t, tangent), forward_ad.make_dual(t, torch.ones_like(t)),
                      forward_ad.make_dual(h, torch.ones_like(h)), c)
            u, du_dt = forward_ad.unpack_dual(out)
        du_dt = torch.zeros_like(u) if du_dt is None else du_dt.detach()
        u_target = (v - per_sample((t - r).clamp(0, 1), v.dim()) * du_dt).detach()
        error = (u - u_target).pow(2).flatten(1).sum(1)
        weight = torch.ones_like(error) if self.p == 0.0 else (error.detach() + self.c).pow(-self.p)
        instantaneous = r.eq(t)
        fm_error = (u.detach() - v_t).pow(2).flatten(1).sum(1)
        return (weight * error).mean(), {
            "mse": error.detach().mean(),
            "velocity_error": (fm_error * instantaneous).sum() / instantaneous.sum().clamp_min(1)}

    @torch.no_grad()
    def sample(self, net, null, noise, labels, nfe):
        grid = uniform_time_grid(nfe)
        n, z = noise.size(0), noise
        for i in range(nfe):
            t, r = grid[i], grid[i + 1]
            z = z - (t - r) * net(z, filled(n, t, z), filled(n, t - r, z), labels)
        return z


METHODS = {"fm": FlowMatching, "meanflow": MeanFlow}
