#!/usr/bin/env bash
# Every check and timing for a lent GPU machine, in one call of at most ~560 s (BENCHMARKS.md,
# "GPU blocks"). Fetch the wheels here first (benchmarks/gpu_wheels.sh), then run on the
# device, from the repository root, with `.whl` carried: bash benchmarks/gpu_session.sh
# Each part has its own time limit and prints as it measures; its output goes to
# $OUT/<part>.txt, so a part cut short keeps what it measured.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench-output/gpu_session}
mkdir -p "$out"
wheels=${GPU_WHEELS:-.whl}
if ! ls "$wheels"/*.whl > /dev/null 2>&1; then
  echo "gpu_session: no wheels in $wheels/ (run benchmarks/gpu_wheels.sh here, carry .whl)" >&2
  exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$wheels"/*.whl || { echo "gpu_session: the wheels did not install" >&2; exit 2; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 KERAS_BACKEND=jax
nvidia-smi -L 2>&1 | tee "$out/device.txt"

part() {  # part NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name (at most $limit s)"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"
  echo "== $name: exit status ${PIPESTATUS[0]}"
}

# the training step first (its heads and losses compile since session 50), then the
# per-block timings, the host steps, and the --gpus mosaic run with its per-worker check
part train_step_speed 170 python3 benchmarks/train_step_speed.py --modes compiled \
    --steps 20 --batch-size 16 --crop 256
part gpu_blocks 170 python3 benchmarks/gpu_blocks.py --skip-mosaic --batches 1,8 --repeats 3
part host_steps 60 python3 benchmarks/maskrcnn_host_steps.py --repeats 3
part gpu_mosaic 150 python3 benchmarks/gpu_blocks.py --gpus --skip-blocks
