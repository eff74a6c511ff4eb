#!/usr/bin/env bash
# Regenerates the toy tables of docs/results.md: for each 2-D dataset, MeanFlow with its shipped
# config and Flow Matching with the same network, steps and schedule, evaluated at the listed
# NFE against held-out data; then the MeanFlow ablations on checkerboard (JVP tangent, time
# embedding scale, adaptive weight power). Runs two trainings at a time, one thread each;
# ONESTEP_BIN overrides the binary (default build/onestep).
# Usage: scripts/toy-results.sh [OUT_DIR]   (default runs/toy-results; about 35 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/toy-results}
bin=${ONESTEP_BIN:-build/onestep}
mkdir -p "$out"

train_eval() {  # name, nfe list, config, overrides...
  local name=$1 nfe=$2 config=$3
  shift 3
  rm -rf "${out:?}/$name"
  "$bin" train -c "$config" train.threads=1 train.sample_every=0 eval.at_end=false "$@" --out "$out/$name" \
    > "$out/$name.train.log" 2>&1
  "$bin" eval --ckpt "$out/$name" --nfe "$nfe" --num 4000 train.threads=1 > "$out/$name.eval.txt" 2>&1
}

for data in checkerboard moons spirals 8gaussians swissroll; do
  cfg=configs/toy/meanflow-$data.toml
  train_eval "meanflow-$data" 1,2,4 "$cfg" &
  train_eval "fm-$data" 1,2,4,50 "$cfg" method.name=fm
  wait
done

cfg=configs/toy/meanflow-checkerboard.toml
# The ablations run at half the budget (train.steps=8000), all with the same seed.
abl="train.steps=8000"
train_eval ablation-tangent-v00 1 "$cfg" $abl method.tangent=v,0,0 &
train_eval ablation-tangent-v10 1 "$cfg" $abl method.tangent=v,1,0
wait
train_eval ablation-tangent-v11 1 "$cfg" $abl method.tangent=v,1,1 &
train_eval ablation-time-scale-1000 1,2,4 "$cfg" $abl model.time_scale=1000
wait
train_eval ablation-time-scale-10 1,2,4 "$cfg" $abl model.time_scale=10 &
train_eval ablation-adaptive-p1 1,2,4 "$cfg" $abl method.adaptive_p=1.0
wait
train_eval ablation-baseline 1,2,4 "$cfg" $abl

for f in "$out"/*.eval.txt; do
  echo "== $(basename "$f" .eval.txt)"
  grep -v '^{' "$f"
done
