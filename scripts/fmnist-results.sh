#!/usr/bin/env bash
# Regenerates the Fashion-MNIST table of docs/results.md, like for like: Flow Matching
# (configs/fmnist/fm.toml) sampled without guidance and with `method.cfg_scale=2` (the effective
# scale MeanFlow's config folds into training), MeanFlow (configs/fmnist/meanflow.toml) with the
# paper's adaptive weight p = 1 and with p = 0; same U-Net, batch and steps. METHODS adds the
# other methods' Fashion-MNIST configs (tvm, dtm, artm, fhtm, drifting; drifting also sampled with
# `method.cfg_scale=2`; drifting-nposN is its config with `method.n_pos=N`, for the N_pos curve,
# e.g. drifting-npos8 and drifting-npos128 beside configs/fmnist's 32). Each run is evaluated with
# its config's eval.nfe and eval.num (FD, KID, precision, recall, class accuracy against the
# held-out test split). ONESTEP_BIN overrides the binary (default build/onestep), DEVICE the
# device (default cpu), JOBS the trainings run at once (default 2), METHODS the runs (default
# "fm meanflow meanflow-p0"). TRAIN_SECONDS, when set, stops
# each training after that many seconds (SIGTERM: it checkpoints the step reached and exits 0); a
# run stopped short of its steps is not evaluated (its EMA weights would still hold much of the
# initialisation), and with RESUME=1 the next call continues it (`onestep train --resume`)
# instead of starting afresh. TRAIN_OVERRIDES adds key=value settings to every training (e.g.
# "train.ema_warmup=true"); EVAL_RAW=1 also evaluates each run's raw weights (NAME-raw.eval.txt,
# `onestep eval --no-ema`). CONFIGS is the folder of the runs' configs (default configs/fmnist;
# configs/fmnist-small-dit holds fm, meanflow, dtm, tvm, artm, fhtm and drifting at one small
# size, a comparison sized for a 2-core CPU: about 2 hours with JOBS=2 and METHODS="meanflow dtm
# fm"; on one core beside another run tvm's training takes about 2.4 hours, artm's 69 minutes,
# fhtm's 1.9 hours, drifting's 2 hours).
# Usage: scripts/fmnist-results.sh [OUT_DIR]   (default runs/fmnist-results; on 2 CPU cores about
# 4 hours: measured 36 min FM training + ~100 min for its 67 NFE x 10,000 samples, 89 min per
# MeanFlow training, on a loaded machine; on one H200 with JOBS=3, 2-4 min of training and more
# than 4 min of evaluation)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/fmnist-results}
bin=${ONESTEP_BIN:-build/onestep}
device=${DEVICE:-cpu}
jobs=${JOBS:-2}
runs=${METHODS:-fm meanflow meanflow-p0}
configs=${CONFIGS:-configs/fmnist}
limit=()
[ -n "${TRAIN_SECONDS:-}" ] && limit=(timeout "$TRAIN_SECONDS")
mkdir -p "$out"

train() {  # name, config, overrides...; fails for a run stopped short of its steps
  local name=$1 config=$2
  shift 2
  local start=(-c "$configs/$config.toml" "$@" --out "$out/$name")
  if [ "${RESUME:-0}" = 1 ] && [ -f "$out/$name/checkpoint.safetensors" ]; then
    start=(--resume "$out/$name")
  else
    rm -rf "${out:?}/$name"
    : > "$out/$name.train.log"
  fi
  # shellcheck disable=SC2086  # TRAIN_OVERRIDES is a list
  "${limit[@]}" "$bin" train "${start[@]}" ${TRAIN_OVERRIDES:-} eval.at_end=false train.device="$device" \
    >> "$out/$name.train.log" 2>&1 &&
    ! grep -q '^stopped by a signal' <(tail -n 3 "$out/$name.train.log")
}
evaluate() {  # eval name, run name, overrides...
  local name=$1 run=$2
  shift 2
  "$bin" eval --ckpt "$out/$run" train.threads=1 "$@" > "$out/$name.eval.txt" 2>&1
  if [ "${EVAL_RAW:-0}" = 1 ]; then
    "$bin" eval --ckpt "$out/$run" --no-ema train.threads=1 "$@" > "$out/$name-raw.eval.txt" 2>&1
  fi
  "$bin" sample --ckpt "$out/$run" --nfe 1 --num 100 train.threads=1 "$@" --out "$out/$name-nfe1.png" > /dev/null 2>&1
}

running=0
guided=()  # the evaluations with method.cfg_scale=2
for name in $runs; do
  config=$name overrides=
  case $name in
    meanflow-p0) config=meanflow overrides=method.adaptive_p=0 ;;
    drifting-npos[1-9]*) config=drifting overrides=method.n_pos=${name#drifting-npos} ;;
    fm | drifting) guided+=("$name-cfg2") ;;
    meanflow | tvm | dtm | artm | fhtm) ;;
    *) echo "fmnist-results: unknown run '$name' (fm, meanflow, meanflow-p0, tvm, dtm, artm, fhtm, drifting, drifting-nposN)" >&2; exit 2 ;;
  esac
  # shellcheck disable=SC2086  # overrides is a list
  { train "$name" "$config" $overrides && evaluate "$name" "$name" &&
      case $name in fm | drifting) evaluate "$name-cfg2" "$name" method.cfg_scale=2 ;; esac; } &
  running=$((running + 1))
  if [ $running -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
done
wait || true

for f in "$out"/*.eval.txt; do
  [ -f "$f" ] || continue
  echo "== $(basename "$f" .eval.txt)"
  grep -v '^{' "$f"
done
for name in $runs "${guided[@]}"; do
  grep -q '^{' "$out/$name.eval.txt" 2> /dev/null || { echo "fmnist-results: $name did not finish: see $out/$name.*" >&2; exit 1; }
done
