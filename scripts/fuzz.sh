#!/usr/bin/env bash
# Fuzzes the loaders with libFuzzer (fuzz/, CMake option ONESTEP_FUZZ): builds the targets with
# clang, AddressSanitizer and UndefinedBehaviorSanitizer in BUILD (default build-fuzz), makes a
# seed corpus (fuzz/make_seeds.py), runs each target for FUZZ_SECONDS (default 60) and prints
# one line per target. Crash inputs go to BUILD/fuzz-runs/crashes/<target>/; exits 1 if any
# target crashed. JOBS (default nproc) compile jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
build=${BUILD:-build-fuzz}
jobs=${JOBS:-$(nproc)}

bash scripts/install-deps.sh scripts/packages.txt scripts/packages-fuzz.txt
CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DONESTEP_FUZZ=ON \
  -DONESTEP_BUILD_TESTS=OFF -DONESTEP_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "$jobs"

runs=$build/fuzz-runs
rm -rf "$runs/seeds" "$runs/crashes" "$runs/tmp"
python3 fuzz/make_seeds.py "$runs/seeds"
# The targets write their inputs to per-process temporary files: keep them in the build folder.
mkdir -p "$runs/tmp"
export TMPDIR=$PWD/$runs/tmp

crashed=0
for target in safetensors config points_csv idx png; do
  corpus=$runs/corpus/$target
  crashes=$runs/crashes/$target
  log=$runs/$target.log
  mkdir -p "$corpus" "$crashes"
  status=0
  "$build/fuzz/fuzz_$target" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$crashes/" "$corpus" "$runs/seeds/$target" >"$log" 2>&1 || status=$?
  executions=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  found=$(find "$crashes" -type f | wc -l)
  # A failure that left no input behind (e.g. a sanitizer report at exit) still counts.
  if [ "$status" -ne 0 ] && [ "$found" -eq 0 ]; then found=1; fi
  echo "fuzz_$target: ${executions:-?} executions in ${seconds} s, $found crashes (log: $log)"
  [ "$found" -eq 0 ] || crashed=1
done
rm -rf "$runs/tmp"
exit "$crashed"
