#!/usr/bin/env bash
# `make bench-compare`: onestep's `bench` against the Python twin (bench/python) on the same
# configs, back to back and interleaved (onestep, twin, onestep, twin, ... for ROUNDS rounds),
# then a table of medians and of the median per-round ratio onestep / Python for the training
# step, 1-NFE sampling at the training batch and the batch-1 one-step latency (below 1: onestep
# is faster). Fails loudly when a twin's parameter count differs from onestep's, or when its
# step-0 loss is more than 20% away (initialisations differ, the losses' scale does not).
#
#   scripts/bench-compare.sh BUILD_DIR DEVICE [LABEL='onestep bench arguments' ...]
#
# Without configs: fm and meanflow on the Fashion-MNIST U-Net and DiT (configs/fmnist/*.toml;
# the DiT of width 256, depth 6, patch 2 that issue 12 measured; batch 8 on cpu, 256 on cuda),
# on cpu also on the toy mlp (checkerboard, batch 256, one thread; also with train.cpu_gemm=blas,
# the twin's matrix-product library), on cuda also in bf16
# (train.precision) and the U-Net FM at batch 64.
# Environment: ROUNDS (3), WARMUP (2), ITERS (15; 5 for the image networks on cpu), PYTHON
# (/usr/bin/python3: Debian's python3-torch), OUT (a temporary folder: the JSON reports),
# PROFILE (1: the twin's first round also runs torch.profiler, see bench/python/bench.py
# --profile; the table gains the twin's GPU kernel time per step), TWIN_MEMORY (release: the
# twin runs with glibc's malloc as Python users do; keep: with GLIBC_TUNABLES set to what onestep's
# train.cpu_memory set in its own process, its bench report's cpu_memory_tunables), TWIN_OPENMP (default:
# the twin's idle OpenMP workers wait as Python users have them, spinning for about 3 ms beside
# OpenBLAS's own threads; passive: OMP_WAIT_POLICY=PASSIVE for the twin, so that they sleep at once).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 BUILD_DIR DEVICE [LABEL='onestep bench arguments' ...]" >&2
  exit 2
fi
build=$1 device=$2
shift 2
here=$(cd "$(dirname "$0")/.." && pwd)
rounds=${ROUNDS:-3} warmup=${WARMUP:-2} python=${PYTHON:-/usr/bin/python3}
case ${TWIN_MEMORY:=release} in
  release | keep) ;;
  *) echo "$0: TWIN_MEMORY=$TWIN_MEMORY: expected release or keep" >&2; exit 2 ;;
esac
case ${TWIN_OPENMP:=default} in
  default) twin_wait=() ;;
  passive) twin_wait=(OMP_WAIT_POLICY=PASSIVE) ;;
  *) echo "$0: TWIN_OPENMP=$TWIN_OPENMP: expected default or passive" >&2; exit 2 ;;
esac
out=$(realpath -m "${OUT:-$(mktemp -d)}")
mkdir -p "$out"
cd "$here"

configs=("$@")
if [ ${#configs[@]} -eq 0 ]; then
  if [ "$device" = cpu ]; then image_batch=8 image_iters=${ITERS:-5}; else image_batch=256 image_iters=${ITERS:-15}; fi
  # The twin pairs noise with data as drawn (bench/python/methods.py), so the toy configs do too.
  toy="train.batch_size=256 train.threads=1 method.coupling=independent --iters ${ITERS:-15}"
  images="train.batch_size=$image_batch --iters $image_iters"
  # The DiT runs the Fashion-MNIST configs with their U-Net keys left out (they do not apply).
  for method in fm meanflow; do
    awk '/^\[/ { model = ($0 == "[model]") } !model || /^\[/ || /^name *=/' \
      "configs/fmnist/$method.toml" > "$out/dit-$method.toml"
  done
  dit="model.name=dit model.width=256 model.depth=6 model.heads=4 model.patch_size=2"
  configs=()
  if [ "$device" = cpu ]; then
    # The toy rows again with LibTorch's own BLAS (train.cpu_gemm), the library the twin uses: the
    # difference between the two rows is the library's, not the language's.
    configs+=("mlp-fm=-c configs/toy/fm-checkerboard.toml $toy"
              "mlp-meanflow=-c configs/toy/meanflow-checkerboard.toml $toy"
              "mlp-fm-blas=-c configs/toy/fm-checkerboard.toml $toy train.cpu_gemm=blas"
              "mlp-meanflow-blas=-c configs/toy/meanflow-checkerboard.toml $toy train.cpu_gemm=blas")
  fi
  configs+=(
    "unet-fm=-c configs/fmnist/fm.toml $images"
    "unet-meanflow=-c configs/fmnist/meanflow.toml $images"
    "dit-fm=-c $out/dit-fm.toml $dit $images"
    "dit-meanflow=-c $out/dit-meanflow.toml $dit $images"
  )
  if [ "$device" != cpu ]; then
    # bf16 autocast (train.precision) on both sides, and the U-Net at a quarter of the batch.
    for config in "${configs[@]}"; do configs+=("${config%%=*}-bf16=${config#*=} train.precision=bf16"); done
    configs+=("unet-fm-batch64=-c configs/fmnist/fm.toml train.batch_size=64 --iters $image_iters")
  fi
fi

labels=()
for config in "${configs[@]}"; do
  label=${config%%=*} args=${config#*=}
  labels+=("$label")
  for round in $(seq 1 "$rounds"); do
    echo "bench-compare: $label, round $round of $rounds" >&2
    # shellcheck disable=SC2086  # args is a list of arguments
    "$build/onestep" bench $args --warmup "$warmup" train.device="$device" --json "$out/$label-$round-onestep.json" >&2
    profile=()
    [ "${PROFILE:-0}" = 1 ] && [ "$round" = 1 ] && profile=(--profile "$out/$label-profile.txt")
    # The twin's OpenBLAS gets onestep's matrix-product threads (src/onestep/core/runtime.cpp);
    # PyTorch's torch.set_num_threads does not reach OpenBLAS's own pool.
    blas=$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["blas_threads"])' \
      "$out/$label-$round-onestep.json")
    twin_tunables=${GLIBC_TUNABLES:-}
    [ "$TWIN_MEMORY" = keep ] && twin_tunables=$("$python" -c \
      'import json, sys; print(json.load(open(sys.argv[1]))["cpu_memory_tunables"])' "$out/$label-$round-onestep.json")
    env "${twin_wait[@]}" GLIBC_TUNABLES="$twin_tunables" OPENBLAS_NUM_THREADS="$blas" "$python" bench/python/bench.py --from-onestep "$out/$label-$round-onestep.json" \
      --json "$out/$label-$round-python.json" "${profile[@]}" >&2
    "$python" -c 'import json, sys
label, paths = sys.argv[1], sys.argv[2:]
ours, twin = (json.load(open(path))["parameters"] for path in paths)
if ours != twin:
    sys.exit(f"bench-compare: FAILED: {label}: PARAMETER COUNT DIFFERS: onestep {ours:,}, Python twin {twin:,}")' \
      "$label" "$out/$label-$round-onestep.json" "$out/$label-$round-python.json"
  done
done

"$python" - "$out" "$rounds" "$TWIN_MEMORY" "${labels[@]}" <<'PY'
"""Medians over rounds, ratios onestep / Python, and the step-0 loss check."""
import json
import statistics
import sys

out, rounds, twin_memory, labels = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
failures = []


def load(label, r, tool):
    with open(f"{out}/{label}-{r}-{tool}.json") as f:
        return json.load(f)


def sampling_ms(report, nfe):
    return next(s["ms_per_batch"] for s in report["sampling"] if s["nfe"] == nfe)


def milliseconds(value):
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def measures(report):
    return {"step": report["train_step_ms"], "nfe1": sampling_ms(report, 1), "latency": report["latency_1nfe_batch1_ms"]}


first = load(labels[0], 1, "onestep"), load(labels[0], 1, "python")
print(f"onestep: LibTorch {first[0]['torch']}; Python twin: PyTorch {first[1]['torch']}; device {first[0]['device']}; "
      f"{rounds} interleaved rounds; the twin's freed memory: {twin_memory} (TWIN_MEMORY), its idle OpenMP workers: "
      f"{first[1].get('openmp_wait', 'not reported')}; "
      "times are medians over rounds of each run's median (ms)")
print()
profiled = any("profile_kernel_ms_per_step" in load(label, 1, "python") for label in labels)
print("| config | batch | threads (products, library, GELU, idle OpenMP workers, memory) | parameters | step-0 loss onestep / twin | train step onestep | twin | ratio "
      "| 1-NFE batch onestep | twin | ratio | batch-1 latency onestep | twin | ratio |"
      + (" twin's GPU kernels per step |" if profiled else ""))
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if profiled else ""))
for label in labels:
    ours = [load(label, r, "onestep") for r in range(1, rounds + 1)]
    twin = [load(label, r, "python") for r in range(1, rounds + 1)]
    loss_ours, loss_twin = ours[0]["loss_step0"], twin[0]["loss_step0"]
    if abs(loss_twin - loss_ours) > 0.2 * abs(loss_ours):
        failures.append(f"{label}: step-0 loss onestep {loss_ours:.4g} vs twin {loss_twin:.4g} (more than 20% apart)")
    row = [label, str(ours[0]["batch"]), f"{ours[0]['threads']} ({ours[0]['blas_threads']}, {ours[0]['cpu_gemm']}, {ours[0]['cpu_gelu']}, {ours[0]['openmp_wait']}, {ours[0]['cpu_memory']})", f"{ours[0]['parameters']:,}",
           f"{loss_ours:.4g} / {loss_twin:.4g}"]
    for key in ("step", "nfe1", "latency"):
        a = [measures(o)[key] for o in ours]
        b = [measures(t)[key] for t in twin]
        ratio = statistics.median(x / y for x, y in zip(a, b))
        row += [milliseconds(statistics.median(a)), milliseconds(statistics.median(b)), f"**{ratio:.2f}**"]
    if profiled:
        kernels = twin[0].get("profile_kernel_ms_per_step")
        row.append("-" if kernels is None else milliseconds(kernels))
    print("| " + " | ".join(row) + " |")
print()
print(f"JSON reports: {out}")
for failure in failures:
    print("bench-compare: FAILED: " + failure, file=sys.stderr)
sys.exit(1 if failures else 0)
PY
