#!/usr/bin/env bash
# For a GPU machine available for a few minutes: exactness and speed of the GPU path, and an
# Omniglot MAML run of 300 s with its evaluation, in under 8 minutes on one H100.
#
#   METALOOP_DATA=<folder holding omniglot/> bash benchmarks/gpu_quick.sh [OUT]
#
# Step 1 (gpu_runs.py's check and probe, ~20 s): the second-order meta-gradient on CUDA equals
# the CPU's (float32, TF32 off), loop and vmap task batching, and seconds per meta-gradient
# for each. Step 2: configs/omniglot_maml_5w1s_cpu.toml (meta-batch 16) with the faster
# batching for 300 s, stopped there with a checkpoint unless its iterations end first
# (summary.json has the count reached), then 600 test tasks. Measured on an H100
# (docs/benchmarks.md): 0.041 s per vmap meta-gradient.
set -euo pipefail
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0;; esac
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-runs/gpu_quick}}
export PYTHONUNBUFFERED=1
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total --format=csv || true
fi
timeout 470 python benchmarks/gpu_runs.py --out "$OUT" --work "${TMPDIR:-/tmp}/gpu_quick" \
    --train-seconds 300 --eval-seconds 120 omniglot_maml_5w1s_cpu
echo "summary: $OUT/summary.json"
