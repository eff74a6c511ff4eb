#!/usr/bin/env bash
# Regenerates the toy tables of docs/results.md. Part 1: for each 2-D dataset, the shipped
# configs of every method (configs/toy/<method>-<data>.toml: fm at 1, 2, 4, 8, 16, 50 NFE, dtm
# at 1, 2, 4, 8, 16 transitions, drifting at 1, meanflow and tvm at 1, 2, 4), evaluated against
# 4,000 held-out points. Part 2 ("before"): the previous recipe (plain 4x256 MLP without
# Fourier features) for fm and meanflow. Part 3: on checkerboard, the adaptive-weight study and
# the MeanFlow ablations, measured with the previous recipe. Part 4: the MeanFlow study on
# checkerboard (the gap sampler, the JVP's tangent velocity, batch against steps, the
# minibatch-OT coupling), from the previous recipe to the shipped one. Part 5: the EMA at a short
# budget on checkerboard (fm, meanflow, artm at 1,000 steps): the shipped EMA, the same
# with train.ema_warmup, and train.ema_decay=0 (the raw weights: the EMA does not change the
# training of these methods, so all three runs share one trajectory). Runs JOBS trainings at a
# time (default 2), one thread each; ONESTEP_BIN overrides the binary (default build/onestep),
# DEVICE the device (default cpu); METHODS (default "fm meanflow tvm dtm drifting") and
# DATASETS restrict part 1, PARTS the parts (default "1 2 3"; 4 and 5 on request).
# Usage: scripts/toy-results.sh [OUT_DIR]   (default runs/toy-results; several hours on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/toy-results}
bin=${ONESTEP_BIN:-build/onestep}
methods=${METHODS:-fm meanflow tvm dtm drifting}
datasets=${DATASETS:-checkerboard moons spirals 8gaussians swissroll}
parts=${PARTS:-1 2 3}
jobs_at_once=${JOBS:-2}
device=${DEVICE:-cpu}
mkdir -p "$out"

train_eval() {  # name, nfe list, config, overrides...
  local name=$1 nfe=$2 config=$3
  shift 3
  rm -rf "${out:?}/$name"
  "$bin" train -c "$config" train.threads=1 train.sample_every=0 eval.at_end=false train.device="$device" "$@" --out "$out/$name" \
    > "$out/$name.train.log" 2>&1
  "$bin" eval --ckpt "$out/$name" --nfe "$nfe" --num "${num:-4000}" train.threads=1 > "$out/$name.eval.txt" 2>&1
  # The picture at the NFE that matters: Flow Matching's last (50), the one-step methods' first (1).
  local picture_nfe=${nfe%%,*}
  [[ $name == *fm-* ]] && picture_nfe=${nfe##*,}
  "$bin" sample --ckpt "$out/$name" --nfe "$picture_nfe" --num 4000 train.threads=1 --out "$out/$name.png" > /dev/null
}

nfe_of() {  # Flow Matching up to 50 steps, DTM up to 16 transitions, drifting 1, the others 1, 2, 4
  case $1 in fm) echo 1,2,4,8,16,50 ;; dtm) echo 1,2,4,8,16 ;; drifting) echo 1 ;; *) echo 1,2,4 ;; esac
}

# The previous recipe: the plain MLP, 16,000 steps of batch 256, that every toy config used
# before the blur study (docs/toy-recipe-study.md).
before="model.residual=false model.fourier_features=0 train.steps=16000 train.batch_size=256"

jobs=()
for part in $parts; do
  case $part in
    1) for data in $datasets; do
         for method in $methods; do jobs+=("$method-$data|$(nfe_of "$method")|configs/toy/$method-$data.toml"); done
       done ;;
    2) for data in $datasets; do
         for method in fm meanflow; do
           extra=""; [ "$method" = meanflow ] && extra=" method.tangent_velocity=conditional method.coupling=independent"
           jobs+=("before-$method-$data|$(nfe_of "$method")|configs/toy/$method-$data.toml|$before$extra")
         done
       done ;;
    3) cfg=configs/toy/meanflow-checkerboard.toml
       before="$before method.tangent_velocity=conditional method.coupling=independent"  # measured before both
       # The adaptive-weight study at the full budget, p = 0, 0.5 and 1, from 1 to 50 NFE.
       for p in 0 0.5 1.0; do jobs+=("adaptive-p$p|1,2,4,8,50|$cfg|$before method.adaptive_p=$p"); done
       # The ablations at half the budget with p = 0.5 (the shipped value when they were measured).
       abl="$before train.steps=8000 method.adaptive_p=0.5"
       for variant in "tangent-v00|method.tangent=v,0,0" "tangent-v10|method.tangent=v,1,0" \
                      "tangent-v11|method.tangent=v,1,1" "time-scale-1000|model.time_scale=1000" \
                      "time-scale-10|model.time_scale=10" "baseline|"; do
         jobs+=("ablation-${variant%%|*}|1,2,4|$cfg|$abl ${variant#*|}")
       done ;;
    4) cfg=configs/toy/meanflow-checkerboard.toml
       # The MeanFlow tables of 2026-11-27 (third and fifth sessions): the previous recipe, one
       # change each, the minibatch-OT coupling, the shipped recipe and the demo's 5,000 steps.
       previous="method.tangent_velocity=conditional method.coupling=independent"
       model="method.coupling=independent"
       for variant in "before|$previous" "uniform-gap|$previous method.gap_sampler=uniform-gap" \
                      "model-tangent|$model" "model-batch1024|$model train.batch_size=1024" \
                      "model-48k|$model train.steps=48000" "ot-conditional-5k|train.steps=5000 method.tangent_velocity=conditional" \
                      "demo|train.steps=5000" "shipped|"; do
         jobs+=("pairs-${variant%%|*}|1,2,4|$cfg|${variant#*|}")
       done
       jobs+=("pairs-tvm-independent|1,2,4|configs/toy/tvm-checkerboard.toml|method.coupling=independent") ;;
    5) for method in fm meanflow artm; do
         for variant in "ema|" "ema-warmup|train.ema_warmup=true" "raw|train.ema_decay=0"; do
           jobs+=("short-$method-${variant%%|*}|$(nfe_of "$method")|configs/toy/$method-checkerboard.toml|train.steps=1000 ${variant#*|}")
         done
       done ;;
  esac
done

running=0
for job in "${jobs[@]}"; do
  IFS='|' read -r name nfe config overrides <<< "$job"
  # shellcheck disable=SC2086
  num=$([[ $name == adaptive-* ]] && echo 16000 || echo 4000) train_eval "$name" "$nfe" "$config" $overrides &
  running=$((running + 1))
  if [ $running -ge "$jobs_at_once" ]; then wait -n; running=$((running - 1)); fi
done
wait

for f in "$out"/*.eval.txt; do
  echo "== $(basename "$f" .eval.txt)"
  grep -v '^{' "$f"
done
