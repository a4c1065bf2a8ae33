#!/usr/bin/env bash
# The full MAML benchmark: every bench_maml.py variant, side by side with the peers, 2 CPU
# threads (the sinusoid 1, as recorded), on an otherwise idle machine. Each variant's table
# goes to OUT/<variant>.txt.
#
#     bash benchmarks/setup_peers.sh VENV            # once
#     bash benchmarks/acceptance.sh VENV OUT [ITERS]
#
# ITERS (default 10) timed iterations per measurement for the 5-way variants; the heavy
# 20-way variants take 3 (each is 10-60 s), the memory variants only need the peak.
set -euo pipefail
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0;; esac
VENV="${1:?usage: acceptance.sh VENV OUT [ITERS]}"
OUT="${2:?usage: acceptance.sh VENV OUT [ITERS]}"
ITERS="${3:-10}"
HERE="$(cd "$(dirname "$0")" && pwd)"
if [[ ! -x "$VENV/bin/python" ]]; then   # before OUT is made: nothing half-written
  echo "acceptance.sh: error: $VENV/bin/python does not exist: make the venv with" \
       "bash benchmarks/setup_peers.sh $VENV" >&2
  exit 2
fi
if [[ ! "$ITERS" =~ ^[1-9][0-9]*$ ]]; then
  echo "acceptance.sh: error: ITERS must be a positive int, got '$ITERS'" >&2
  exit 2
fi
mkdir -p "$OUT"
run() {   # name, then bench_maml.py arguments
  local name="$1"; shift
  echo "== $name: bench_maml.py $*" | tee "$OUT/$name.txt"
  "$VENV/bin/python" "$HERE/bench_maml.py" --threads 2 "$@" 2>&1 \
    | grep -v -i "gym" | tee -a "$OUT/$name.txt"
}
run base         --iters "$ITERS" --reps 2 --warmup 1
run first_order  --first-order --iters "$ITERS" --reps 2 --warmup 1
run anil         --anil --iters "$ITERS" --reps 2 --warmup 1
run steps5       --steps 5 --iters 3 --reps 1 --warmup 1
run mem10        --ways 20 --shots 5 --queries 5 --meta-batch 4 --steps 10 --inner-lr 0.1 \
                 --checkpoint --only metaloop,metaloop-ckpt --iters 3 --reps 1 --warmup 1 \
                 --check-tasks 1
run mem20        --ways 20 --shots 5 --queries 5 --meta-batch 4 --steps 20 --inner-lr 0.1 \
                 --checkpoint --only metaloop,metaloop-ckpt --iters 3 --reps 1 --warmup 1 \
                 --check-tasks 1
run w20s1        --ways 20 --meta-batch 16 --steps 5 --inner-lr 0.1 --iters 3 --reps 1 \
                 --warmup 1 --check-tasks 1
# the sinusoid, where per-task overhead decides: the recorded settings (1 thread)
run sinusoid     --model sinusoid --threads 1 --iters 200 --warmup 5 --reps 5
run sinusoid_fo  --model sinusoid --first-order --threads 1 --iters 200 --warmup 5 --reps 5
