#!/usr/bin/env bash
# The prepared accelerator benchmark (issue 16): one NVIDIA GPU, under 5 minutes.
#
#   bash bench/gpu.sh [--no-install] [bench/gpu.py flags, e.g. --allow-load]
#
# 1. Prints the device (nvidia-smi), the host and the Python in use.
# 2. Runs the load guard once (bench/load_guard.py) on the load read at the start: on the
#    device machine it judges the host. Refused: exit 1 (pass --allow-load to mark figures).
# 3. Checks what is importable (bench/gpu.py --probe: jax with CUDA, faiss with GPU
#    support, torch with CUDA, torchvision, dnh_jax's own dependencies) and, where something
#    is missing and a GPU is present, installs it - best effort, it may fail: first the
#    wheels carried in .whl/ (offline, into /tmp/site; bench/README.md says how to fill it),
#    then pip from the package index if one answers (the device machines reach none).
# 4. Runs the parts of bench/gpu.py one process each, under `timeout`: hamming (hamming_topk
#    vs FAISS GpuIndexBinaryFlat), train (ResNet-50 step, JAX vs PyTorch), pipeline (host
#    Batcher vs the device step rate). A part whose reference is missing prints
#    "SKIPPED: <why>"; a part that fails or overruns is reported and the next one runs.
#
# PYTHON=... picks the interpreter (default python3). --no-install skips step 3's installs.
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
START=$SECONDS
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
PY=${PYTHON:-python3}
INSTALL=1
ARGS=()
for a in "$@"; do
  case "$a" in
    --no-install) INSTALL=0 ;;
    *) ARGS+=("$a") ;;
  esac
done
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
RESULTS=$(mktemp /tmp/dnh_bench_gpu.XXXXXX)
PROBE=$(mktemp /tmp/dnh_bench_probe.XXXXXX)
trap 'rm -f "$RESULTS" "$PROBE"' EXIT
gpu() { "$PY" bench/gpu.py "$@" ${ARGS[@]+"${ARGS[@]}"}; }

echo "== bench/gpu.sh, $(date -u '+%Y-%m-%d %H:%M:%S') UTC, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "== host: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), kernel $(uname -r)"
echo "== device"
GPU=0
if command -v nvidia-smi >/dev/null 2>&1 \
    && timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm \
         --format=csv,noheader; then
  GPU=1
else
  echo "no NVIDIA GPU visible (nvidia-smi missing or failed): the GPU parts will be SKIPPED"
fi
echo "== python: $("$PY" --version 2>&1) at $(command -v "$PY")"

echo "== load guard"
gpu --parts none --load-before "$LOAD0" || { echo "gpu.sh: refused by the load guard"; exit 1; }

echo "== what is importable"
timeout 120 "$PY" bench/gpu.py --probe >"$PROBE" 2>&1
grep -v '^pip-missing:' "$PROBE"
MISSING=$(sed -n 's/^pip-missing: *//p' "$PROBE")
TRIED=0
if [ -n "$MISSING" ] && [ "$INSTALL" = 0 ]; then
  echo "not installing ($MISSING): --no-install"
elif [ -n "$MISSING" ] && [ "$GPU" = 0 ]; then
  echo "not installing ($MISSING): no GPU here"
elif [ -n "$MISSING" ]; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    echo "installing the wheels carried in .whl/ (offline) into /tmp/site"
    TRIED=1
    if timeout 150 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl; then
      export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH#"$PWD"}"
    else
      echo "installing .whl/ failed"
    fi
  fi
  if timeout 30 "$PY" -m pip index versions pip --retries 0 --timeout 5 >/dev/null 2>&1; then
    TRIED=1
    for spec in $MISSING; do
      echo "pip install $spec"
      timeout 150 "$PY" -m pip install -q --retries 0 --timeout 15 "$spec" 2>&1 | tail -n 3 \
        || echo "pip install $spec failed"
    done
  else
    echo "pip: no package index answers from this machine: not installing $MISSING"
    echo "     (carry wheels in .whl/ instead: bench/README.md)"
  fi
  if [ "$TRIED" = 1 ]; then
    echo "== what is importable after installing"
    timeout 120 "$PY" bench/gpu.py --probe 2>&1 | grep -v '^pip-missing:'
  fi
fi

run_part() {  # name, time limit in seconds
  local name=$1 limit=$2 t0=$SECONDS rc
  echo "== part $name (limit ${limit} s)"
  timeout --kill-after=10 "$limit" "$PY" bench/gpu.py --parts "$name" --results "$RESULTS" \
    --load-before "$LOAD0" ${ARGS[@]+"${ARGS[@]}"}
  rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "[$name] TIMEOUT: stopped after $limit s"
  elif [ "$rc" != 0 ]; then
    echo "[$name] FAILED (exit $rc)"
  fi
  echo "== part $name: $((SECONDS - t0)) s"
}

# Limits: 4.5 minutes for the three parts (typical runs take less); with the probe and the
# start, under 5 minutes when nothing has to be installed.
run_part hamming 90
run_part train 140
run_part pipeline 40
echo "== results (JSON)"
cat "$RESULTS"
echo
echo "== bench/gpu.sh: total $((SECONDS - START)) s"
