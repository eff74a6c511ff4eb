#!/usr/bin/env bash
# Regenerates the Fashion-MNIST table of docs/results.md: Flow Matching (configs/fmnist/fm.toml)
# and MeanFlow (configs/fmnist/meanflow.toml) trained side by side, one thread each, then each
# evaluated with its config's eval.nfe and eval.num (FD, KID, precision, recall, class accuracy
# against the held-out test split). ONESTEP_BIN overrides the binary (default build/onestep).
# Usage: scripts/fmnist-results.sh [OUT_DIR]   (default runs/fmnist-results; about 2.5 hours on 2 cores:
# measured 36 min FM training + ~100 min for its 67 NFE x 10,000 samples, beside 89 min of MeanFlow)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/fmnist-results}
bin=${ONESTEP_BIN:-build/onestep}
mkdir -p "$out"

train_eval() {  # method
  local name=$1
  rm -rf "${out:?}/$name"
  "$bin" train -c "configs/fmnist/$name.toml" eval.at_end=false --out "$out/$name" > "$out/$name.train.log" 2>&1
  "$bin" eval --ckpt "$out/$name" train.threads=1 > "$out/$name.eval.txt" 2>&1
  "$bin" sample --ckpt "$out/$name" --nfe 1 --num 100 --out "$out/$name-nfe1.png" >> "$out/$name.eval.txt" 2>&1
}

train_eval fm &
train_eval meanflow
wait
tail -n 20 "$out"/*.eval.txt
