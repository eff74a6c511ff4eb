#!/usr/bin/env python3
"""The Python twin of `onestep bench` (issue 12): builds the network, method, Adam and EMA of
a fully resolved onestep config in plain PyTorch (nets.py, methods.py, training.py, data.py)
and prints the same JSON keys as `onestep bench`, with "tool": "python-twin".

    python3 bench/python/bench.py --from-onestep REPORT.json [--warmup N] [--iters N] [--json FILE]
                                  [--profile FILE]
    python3 bench/python/bench.py -c RUN/config.toml [section.key=value ...]

The config must be fully resolved (every key written out): the "config" of an `onestep bench`
report, or a run folder's config.toml; the twin has no defaults of its own. Bad input exits
with status 2. Runs on PyTorch 1.13 (Debian's python3-torch: /usr/bin/python3) and 2.x."""
import argparse
import ctypes
import json
import math
import os
import resource
import statistics
import sys
import time
import tomllib

import torch

from data import make_dataset
from methods import METHODS
from nets import NETWORKS
from training import TrainingState

SAMPLING_NFE = (1, 2, 4)


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def read_config(args):
    if args.from_onestep:
        with open(args.from_onestep) as f:
            text = json.load(f)["config"]
    else:
        with open(args.config) as f:
            text = f.read()
    cfg = tomllib.loads(text)
    for assignment in args.overrides:
        key, _, value = assignment.partition("=")
        section, _, name = key.partition(".")
        if section not in cfg or name not in cfg[section]:
            fail(f"key '{key}' is not in the resolved config (overrides can change its keys, not add any)")
        old = cfg[section][name]
        if isinstance(old, bool):
            cfg[section][name] = value == "true"
        elif isinstance(old, (int, float)):
            cfg[section][name] = type(old)(float(value)) if isinstance(old, int) else float(value)
        else:
            cfg[section][name] = value
    return cfg, text


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_ms(fn, warmup, iters, device):
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def bf16_unavailable(device):
    if device.type == "cuda":
        return ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "" if " avx512_bf16" in line else "the CPU lacks avx512_bf16"
    except OSError:
        pass
    return "no /proc/cpuinfo flags to check for avx512_bf16"


def blas_threads():
    """Threads of the matrix products: OpenBLAS's own pool where this PyTorch uses OpenBLAS
    (Debian's; OPENBLAS_NUM_THREADS sets it, torch.set_num_threads does not), else torch's."""
    with open("/proc/self/maps") as maps:
        if "libopenblas" in maps.read():
            return ctypes.CDLL("libopenblas.so.0").openblas_get_num_threads()
    return torch.get_num_threads()


def cpu_memory_tunables():
    """The glibc.malloc settings of this process's GLIBC_TUNABLES ("" for glibc's defaults), as
    scripts/bench-compare.sh sets them with TWIN_MEMORY=keep from onestep's report."""
    settings = os.environ.get("GLIBC_TUNABLES", "").split(":")
    return ":".join(s for s in settings if s.startswith("glibc.malloc."))


def cpu_memory():
    """onestep's train.cpu_memory as this process has it: "keep" where glibc's malloc was told to
    serve large blocks from its heap (cpu_memory_tunables), else "release" (glibc's defaults)."""
    return "keep" if "glibc.malloc.mmap_threshold" in cpu_memory_tunables() else "release"


def openmp_wait():
    """How idle OpenMP workers wait, read from the environment as libgomp reads it (onestep's
    openmp_wait in src/onestep/core/runtime.h words it the same way)."""
    policy, spins = os.environ.get("OMP_WAIT_POLICY", "").lower(), os.environ.get("GOMP_SPINCOUNT")
    if policy == "passive" and (spins is None or spins.isdigit() and int(spins) == 0):
        return "sleep"
    if spins is not None:
        return f"spin {spins} times, then sleep"
    return "spin" if policy == "active" else "spin (OpenMP's default)"


def peak_memory(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_allocator_peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "cpu_peak_rss"


def profile_steps(train_step, iters, device, path):
    """Runs `iters` training steps under torch.profiler, writes its operator table to `path`
    (sorted by GPU time on CUDA, by CPU time on the CPU) and returns the GPU kernel time per step
    in milliseconds (0 on the CPU)."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(iters):
            train_step()
        synchronize(device)
    events = prof.key_averages()
    # PyTorch 2.x names the device times self_device_time_total, 1.13 self_cuda_time_total.
    key = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
    with open(path, "w") as f:  # on the CPU the operators' own CPU time
        f.write(events.table(sort_by=key if device.type == "cuda" else "self_cpu_time_total", row_limit=25))
    # The kernels' own rows; older profilers attribute them to the launching operators instead.
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA] or events
    return sum(getattr(e, key) for e in kernels) / 1000.0 / iters


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-onestep", help="an `onestep bench` JSON report: bench its config")
    source.add_argument("-c", "--config", help="a fully resolved onestep config (a run's config.toml)")
    parser.add_argument("--warmup", type=int, help="untimed steps and sampler calls before timing "
                        "(default: the onestep report's)")
    parser.add_argument("--iters", type=int, help="timed repetitions; the report gives their median "
                        "(default: the onestep report's)")
    parser.add_argument("--json", help="write the report to this file instead of stdout")
    parser.add_argument("--profile", help="after the timed steps, run --iters more under torch.profiler and "
                        "write its table of operators, by device time (CPU time on the CPU), to this file; the report gains "
                        "profile_kernel_ms_per_step (GPU kernel time per step; 0 on the CPU)")
    parser.add_argument("overrides", nargs="*", help="config overrides section.key=value")
    try:
        args = parser.parse_args()
    except SystemExit as exit_:
        sys.exit(0 if exit_.code == 0 else 2)
    try:
        cfg, text = read_config(args)
        if args.from_onestep:
            with open(args.from_onestep) as f:
                onestep = json.load(f)
            args.warmup = onestep["warmup"] if args.warmup is None else args.warmup
            args.iters = onestep["iters"] if args.iters is None else args.iters
    except (OSError, KeyError, ValueError, tomllib.TOMLDecodeError) as err:
        fail(f"config: {err}")
    if args.warmup is None or args.iters is None:
        fail("--warmup and --iters are needed with -c")
    if args.warmup < 0 or args.iters < 1:
        fail("--warmup must be >= 0 and --iters >= 1")
    train = cfg["train"]
    method_name, network_name = cfg["method"]["name"], cfg["model"]["name"]
    if method_name not in METHODS or network_name not in NETWORKS:
        fail(f"method {method_name} on {network_name} is not mirrored (methods: fm, meanflow; "
             "networks: mlp, unet, dit)")
    threads = train["threads"] or os.cpu_count()
    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = train["tf32"]
    device_name = train["device"]
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_name)

    torch.manual_seed(train["seed"])
    try:
        data = make_dataset(cfg["data"])
        method = METHODS[method_name](cfg["method"])
    except (OSError, ValueError) as err:
        fail(str(err))
    net = NETWORKS[network_name](data.shape, data.num_classes, cfg["model"]).to(device)
    shadow = NETWORKS[network_name](data.shape, data.num_classes, cfg["model"]).to(device)
    null = data.num_classes
    state = TrainingState(method, net, shadow, null, data, cfg, device)
    batch = train["batch_size"]
    report = {
        "tool": "python-twin", "torch": torch.__version__, "method": method_name, "network": network_name,
        "data": cfg["data"]["name"], "parameters": sum(p.numel() for p in net.parameters()), "batch": batch,
        "device": str(device), "threads": torch.get_num_threads(),
        # PyTorch's own library for the float32 products and its GELU kernel (onestep's
        # train.cpu_gemm and train.cpu_gelu can choose).
        "blas_threads": blas_threads(), "cpu_gemm": "BLAS", "cpu_gelu": "LibTorch",
        "openmp_wait": openmp_wait(), "cpu_memory": cpu_memory(), "cpu_memory_tunables": cpu_memory_tunables(),
        "warmup": args.warmup, "iters": args.iters,
    }

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    net.train()
    step = 0
    report["loss_step0"] = state.step(step)
    step += 1

    def train_step():
        nonlocal step
        if not math.isfinite(state.step(step)):
            raise SystemExit(f"bench/python: step {step + 1} had a non-finite loss")
        step += 1
    step_ms = median_ms(train_step, max(args.warmup - 1, 0), args.iters, device)
    report["train_step_ms"] = step_ms
    report["train_samples_per_s"] = batch / (step_ms / 1000.0)
    report["peak_memory_mib"], report["peak_memory_kind"] = peak_memory(device)
    if args.profile:
        report["profile_kernel_ms_per_step"] = profile_steps(train_step, args.iters, device, args.profile)

    sampler_net = state.ema.shadow
    sampler_net.eval()
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(batch, *data.shape, generator=gen).to(device)
    labels = (torch.arange(batch) % data.num_classes).to(device) if data.num_classes else None
    report["sampling"] = []
    for nfe in SAMPLING_NFE:
        ms = median_ms(lambda: method.sample(sampler_net, null, z, labels, nfe), args.warmup, args.iters, device)
        report["sampling"].append({"nfe": nfe, "ms_per_batch": ms, "samples_per_s": batch / (ms / 1000.0)})

    def latency(dtype):
        with torch.inference_mode():
            z1 = torch.randn(1, *data.shape, generator=torch.Generator().manual_seed(0)).to(device).to(dtype)
            y1 = torch.zeros(1, dtype=torch.long, device=device) if data.num_classes else None
            return median_ms(lambda: method.sample(sampler_net, null, z1, y1, 1), args.warmup, args.iters, device)
    report["latency_1nfe_batch1_ms"] = latency(torch.float32)
    unavailable = bf16_unavailable(device)
    if unavailable:
        report["latency_1nfe_batch1_bf16_ms"], report["bf16_note"] = None, unavailable
    else:
        sampler_net.to(torch.bfloat16)
        report["latency_1nfe_batch1_bf16_ms"] = latency(torch.bfloat16)
        report["bf16_note"] = "weights and activations in bfloat16"
    report["config"] = text
    out = json.dumps(report)
    if args.json:
        with open(args.json, "w") as f:
            f.write(out + "\n")
        print(f"wrote {args.json}")
    else:
        print(out)


if __name__ == "__main__":
    main()
