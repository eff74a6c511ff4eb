#!/usr/bin/env bash
# GPU check on a machine with a CUDA PyTorch wheel and no Debian packages (the device machine,
# see docs/benchmarks.md): builds onestep against the wheel's LibTorch, then runs the parts named
# in GPU_CHECK_PARTS (default "nccl smoke compare tests") and the optional parts named there
# ("speed", "results"), in the order below, within GPU_CHECK_SECONDS (default 560) counted from
# the start, so that one device call of 10 minutes holds them all:
#   nccl     one process through an NCCL group (WORLD_SIZE=1, as `torchrun --nproc-per-node 1`)
#            against the same run alone on CUDA and alone on the CPU (the wheel has no gloo
#            headers), for fm and for drifting on unlabelled data (its gather of the step's samples);
#            and fm with its step captured as CUDA graphs (train.cuda_graph=true), alone and
#            through NCCL (the average between the graphs), against the eager run alone;
#   smoke    every registered method trains 50 steps on CUDA and evaluates;
#   compare  `make bench-compare` on CUDA (ROUNDS rounds, default 1; ITERS, default 10), fp32 and
#            bf16, with the twin's torch.profiler kernel time (PROFILE=1), leaving TESTS_SECONDS
#            (default 240) to the tests;
#   speed    (when named) training steps/s of FM and MeanFlow on the U-Net, and of FM, MeanFlow
#            and TVM on the DiT (SPEED_MODELS, default "unet dit"; GPU_CHECK_BATCHES, default
#            "64 256"), each also with the step captured as CUDA graphs (train.cuda_graph=true),
#            and `onestep bench`'s median step time and peak CUDA memory of each;
#   tests    ctest, 16 at a time, in the time left (the log has the output of any failure;
#            TESTS_REGEX, default all: only the tests whose names match, as `ctest -R`);
#   results  (when named) scripts/fmnist-results.sh on CUDA, every run of METHODS at once (default "dtm fhtm";
#            TVM alone and the drifting runs, "drifting drifting-npos8 drifting-npos128", each need
#            a call of their own: docs/benchmarks.md, ninth session), in runs/gpu-fmnist. Each
#            training stops at the time left less EVAL_SECONDS (default 150); a finished one is
#            evaluated, one stopped short keeps its checkpoint and the next call on the warm machine
#            continues it (RESUME=1 of that script); that script's TRAIN_OVERRIDES and EVAL_RAW
#            pass through (e.g. TRAIN_OVERRIDES=train.ema_warmup=true EVAL_RAW=1). Without `tests`
#            among the parts, the test targets build meanwhile (niced), so that a next call can
#            run them.
# Needs the Debian .deb files of the header libraries in .deps/ (fetch them here with
# `scripts/gpu-check.sh --fetch`). Writes OUT/summary.md and, with every log and result,
# OUT/detail.tar.gz (the device machine returns at most 8 files, so the rest travels packed).
# Usage: scripts/gpu-check.sh [--fetch] [OUT_DIR]   (OUT_DIR default: gpu-check-out)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
debs=(libcli11-dev libtomlplusplus-dev libtomlplusplus3 nlohmann-json3-dev libgtest-dev googletest
      libbenchmark-dev libbenchmark1debian libstb-dev libstb0 dataset-fashion-mnist)
if [ "${1:-}" = "--fetch" ]; then
  mkdir -p .deps && (cd .deps && apt-get download "${debs[@]}")
  exit $?
fi
out=$(realpath -m "${1:-gpu-check-out}")
parts=" ${GPU_CHECK_PARTS:-nccl smoke compare tests} "
has() { [[ $parts == *" $1 "* ]]; }
deadline=$(( $(date +%s) + ${GPU_CHECK_SECONDS:-560} ))
left() { echo $(( deadline - $(date +%s) )); }
detail="$out/detail"
mkdir -p "$detail/runs"
summary="$out/summary.md"
trap 'rm -rf "$detail/runs"; tar czf "$out/detail.tar.gz" --exclude="*.safetensors" -C "$out" detail && rm -rf "$detail"' EXIT
deps=/opt/deps
mkdir -p "$deps"
for f in .deps/*.deb; do dpkg -x "$f" "$deps"; done
# Fashion-MNIST where Debian puts it (the default data.path and the tests expect it there).
mkdir -p /usr/share/datasets && ln -sfn "$deps/usr/share/datasets/fashion-mnist" /usr/share/datasets/fashion-mnist
export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
torch_prefix=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
{
  echo "# onestep GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)"
  echo "- PyTorch: $(python3 -c 'import torch;print(torch.__version__, "CUDA", torch.version.cuda, "cxx11 abi", torch._C._GLIBCXX_USE_CXX11_ABI)')"
  echo "- compiler: $(c++ --version | head -1); CPU cores: $(nproc)"
} > "$summary"

start=$(date +%s)
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$deps/usr" -DCMAKE_CXX_FLAGS="-isystem $deps/usr/include" \
  -DCMAKE_POLICY_VERSION_MINIMUM=3.5 > "$detail/configure.log" 2>&1
targets=(); has tests || targets=(--target onestep)
cmake --build build-gpu -j "$(nproc)" "${targets[@]}" > "$detail/build.log" 2>&1
build_rc=$?
echo "- build: exit $build_rc in $(( $(date +%s) - start )) s; warnings: $(grep -c 'warning:' "$detail/build.log")" >> "$summary"
grep -A3 'warning:\|error:' "$detail/build.log" | head -40 >> "$detail/build-warnings.log"
[ $build_rc -eq 0 ] || { tail -40 "$detail/build.log"; cat "$summary"; exit 1; }

if has nccl; then
  echo >> "$summary"; echo "## One process through NCCL against alone (CUDA) and alone on the CPU, 20 steps" >> "$summary"
  launcher=(env RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29533)
  for method in fm drifting; do
    common=(train data.name=checkerboard method.name="$method" model.width=64 model.depth=2 train.steps=20
            train.log_every=1 train.sample_every=0 train.threads=1 eval.at_end=false)
    run="$detail/runs/nccl-$method"; rm -rf "$run"-*
    timeout 120 build-gpu/onestep "${common[@]}" train.device=cuda --out "$run-alone" > "$run-alone.log" 2>&1
    timeout 120 "${launcher[@]}" build-gpu/onestep "${common[@]}" train.device=cuda --out "$run-nccl" > "$run-nccl.log" 2>&1
    timeout 120 build-gpu/onestep "${common[@]}" train.device=cpu --out "$run-cpu" > "$run-cpu.log" 2>&1
    if [ "$method" = fm ]; then
      timeout 120 build-gpu/onestep "${common[@]}" train.device=cuda train.cuda_graph=true --out "$run-graph" \
        > "$run-graph.log" 2>&1
      timeout 120 "${launcher[@]}" build-gpu/onestep "${common[@]}" train.device=cuda train.cuda_graph=true \
        --out "$run-nccl-graph" > "$run-nccl-graph.log" 2>&1
    fi
    python3 - "$run" "$method" >> "$summary" <<'PY'
import json, sys
run, method = sys.argv[1:]
def losses(kind):
    try:
        return [json.loads(line)["loss"] for line in open(f"{run}-{kind}/metrics.jsonl") if '"loss"' in line]
    except OSError:
        return []
alone, nccl, cpu = losses("alone"), losses("nccl"), losses("cpu")
def gap(a, b):
    return max((abs(x - y) / abs(y) for x, y in zip(a, b)), default=float("nan")) if len(a) == len(b) else "length differs"
banner = open(f"{run}-nccl.log").read().count("1 process (nccl)")
print(f"- {method}: steps alone/nccl/cpu {len(alone)}/{len(nccl)}/{len(cpu)}; 'nccl' in banner: {banner == 1}; "
      f"largest relative loss gap nccl vs alone {gap(nccl, alone)}, nccl (CUDA) vs alone on the CPU {gap(nccl, cpu)}")
if method == "fm":
    graph, nccl_graph = losses("graph"), losses("nccl-graph")
    print(f"- {method}, train.cuda_graph=true: steps alone/nccl {len(graph)}/{len(nccl_graph)}; largest relative loss "
          f"gap against the eager run alone: alone {gap(graph, alone)}, nccl {gap(nccl_graph, alone)}")
PY
  done
fi

if has smoke; then
  echo >> "$summary"; echo "## CUDA smoke (each method's shipped checkerboard config, else its Fashion-MNIST one: 50 steps, then eval)" >> "$summary"
  for method in $(build-gpu/onestep info | sed -n 's/^methods: //p' | tr -d ','); do
    run="$detail/runs/smoke-$method"; rm -rf "$run"
    config=configs/toy/$method-checkerboard.toml; [ -f "$config" ] || config=configs/fmnist/$method.toml
    if timeout 60 build-gpu/onestep train -c "$config" train.device=cuda train.steps=50 train.log_every=25 \
         train.sample_every=0 train.ckpt_every=0 eval.num=500 --out "$run" > "$run.log" 2>&1; then
      echo "- $method ($config): ok, $(grep -o '"loss":[0-9.e+-]*' "$run/metrics.jsonl" | tail -1), eval $(grep -c nfe "$run/metrics.jsonl") record" >> "$summary"
    else
      echo "- $method ($config): FAILED: $(tail -2 "$run.log" | tr '\n' ' ')" >> "$summary"
    fi
  done
fi

# onestep against the Python twin on CUDA (issue 12): the wheel's python runs bench/python.
if has compare; then
  echo >> "$summary"; echo "## make bench-compare on CUDA" >> "$summary"
  ROUNDS=${ROUNDS:-1} ITERS=${ITERS:-10} PROFILE=1 PYTHON=python3 OUT="$detail/compare" \
    timeout "$(( $(left) - ${TESTS_SECONDS:-240} ))" scripts/bench-compare.sh build-gpu cuda \
    > "$detail/compare.md" 2> "$detail/compare.log"
  echo "- exit $?" >> "$summary"
  cat "$detail/compare.md" >> "$summary"
fi

if has speed; then
  echo >> "$summary"; echo "## CUDA training speed (fp32, steps/s over steps 101-200)" >> "$summary"
  # The DiT runs take each config without its [model] keys (the same plain DiT for every method:
  # TVM's step over FM's and MeanFlow's, issue 9).
  for model in ${SPEED_MODELS:-unet dit}; do
    methods="fm meanflow"; [ "$model" = dit ] && methods="fm meanflow tvm"
    for method in $methods; do
      config="configs/fmnist/$method.toml" extra=()
      if [ "$model" = dit ]; then
        config="$detail/dit-$method.toml"
        awk '/^\[/ { m = ($0 == "[model]") } !m || /^\[/ || /^name *=/' "configs/fmnist/$method.toml" > "$config"
        extra=(model.name=dit model.width=256 model.depth=6 model.heads=4 model.patch_size=2)
      fi
      for batch in ${GPU_CHECK_BATCHES:-64 256}; do
        for graph in false true; do
          if [ "$(left)" -lt 120 ]; then  # keep time for the parts after this one
            echo "- $method $model batch $batch, train.cuda_graph=$graph: not run (GPU_CHECK_SECONDS)" >> "$summary"
            continue
          fi
          run="$detail/runs/$method-$model-$batch-graph-$graph"; rm -rf "$run"
          timeout 240 build-gpu/onestep train -c "$config" --out "$run" train.device=cuda \
            train.steps=200 train.log_every=100 train.sample_every=0 train.ckpt_every=0 eval.at_end=false \
            train.batch_size="$batch" train.cuda_graph="$graph" "${extra[@]}" > "$run.log" 2>&1
          rate=$(tail -1 "$run/metrics.jsonl" 2>/dev/null | python3 -c 'import json,sys;print(json.loads(sys.stdin.read())["steps_per_s"])' 2>/dev/null)
          echo "- $method $model batch $batch, train.cuda_graph=$graph: ${rate:-failed ($(tail -1 "$run.log"))} steps/s" >> "$summary"
          # The step's median time and the peak of the CUDA allocator (the graphs' pools included).
          timeout 120 build-gpu/onestep bench -c "$config" train.device=cuda train.batch_size="$batch" \
            train.cuda_graph="$graph" "${extra[@]}" --warmup 3 --iters 20 --json "$run-bench.json" > "$run-bench.log" 2>&1
          python3 - "$run-bench.json" >> "$summary" 2> /dev/null <<'PY' || echo "  - bench failed: $(tail -1 "$run-bench.log")" >> "$summary"
import json, sys
r = json.load(open(sys.argv[1]))
print(f"  - bench: step {r['train_step_ms']:.2f} ms (median of 20), peak memory {r['peak_memory_mib']:.0f} MiB")
PY
        done
      done
    done
  done
fi

if has tests && [ "$(left)" -lt 60 ]; then
  echo >> "$summary"; echo "## ctest: not run, $(left) s left of GPU_CHECK_SECONDS" >> "$summary"
elif has tests; then
  echo >> "$summary"; echo "## ctest" >> "$summary"
  start=$(date +%s)
  # One intra-op thread per test: 16 test processes on 16 cores (the wheel's default pools
  # oversubscribe them). Tests still running at the deadline are cut and listed as not run.
  (cd build-gpu && OMP_NUM_THREADS=1 timeout "$(( $(left) - 20 ))" ctest -j 16 --timeout 300 --output-on-failure \
     -R "${TESTS_REGEX:-.}" > "$detail/ctest.log" 2>&1)
  echo "- ctest: $(grep -E 'tests passed|tests failed' "$detail/ctest.log" | tail -1) in $(( $(date +%s) - start )) s;" \
       "finished $(grep -cE 'Test +#[0-9]+: ' "$detail/ctest.log") of $(cd build-gpu && ctest -N | sed -n 's/^Total Tests: //p')" >> "$summary"
  grep -E '\*\*\*Failed|\(SEGFAULT\)|\(Subprocess aborted\)|\*\*\*Exception|Timeout' "$detail/ctest.log" | head -30 >> "$summary"
fi

# The Fashion-MNIST result runs on CUDA (docs/results.md). Toy studies stay on CPU cores: processes
# on one GPU are time-sliced (docs/benchmarks.md, third session).
if has results; then
  start=$(date +%s)
  has tests || nice -n 19 timeout "$(( $(left) - 5 ))" cmake --build build-gpu -j 6 > "$detail/build-tests.log" 2>&1 &
  methods=${METHODS:-dtm fhtm}
  # shellcheck disable=SC2086  # methods is a list
  set -- $methods
  DEVICE=cuda JOBS=$# METHODS="$methods" ONESTEP_BIN=build-gpu/onestep RESUME=1 \
    TRAIN_SECONDS=$(( $(left) - ${EVAL_SECONDS:-150} )) timeout "$(( $(left) - 10 ))" \
    scripts/fmnist-results.sh runs/gpu-fmnist > "$detail/fmnist.log" 2>&1
  fmnist_rc=$?
  wait
  (cd runs && tar cf - --exclude='*.safetensors' gpu-fmnist) | tar xf - -C "$detail"
  { echo; echo "## Fashion-MNIST runs on CUDA: $methods ($(( $(date +%s) - start )) s; exit $fmnist_rc)"
    cat "$detail/fmnist.log"
    for method in $methods; do
      echo "- $method: $([ -f "runs/gpu-fmnist/$method.eval.txt" ] || echo 'not evaluated; ')training log's end:"
      tail -2 "runs/gpu-fmnist/$method.train.log" 2> /dev/null | sed 's/^/    /'
    done; } >> "$summary"
fi
cat "$summary"
