#!/usr/bin/env bash
# One device command on a lent GPU (15 minutes of device time in all, start-up included; at
# most 600 s a command): the prepared parts in priority order, each under its own `timeout`
# so that one part's failure or overrun cannot take the others, all inside a total budget.
#
#   OUT=<dir> bash benchmarks/gpu_session.sh [--part challenge|paper] [--budget S] [--smoke]
#
# --part challenge (the default; the first call):
#   (a) benchmarks/gpu_paper.sh --config configs/omniglot_challenge_all_gpu.toml
#       --iterations fit --name challenge: checks, the challenge config trained for the time
#       left and evaluated -> $OUT/challenge/{summary,record,results}.json, config.toml,
#       metrics.jsonl (record.json is the challenge table's record);
#   (b) benchmarks/bench_maml.py --device cuda --only metaloop,plain --iters 20 --reps 3
#       (~30-60 s) -> $OUT/bench/benchmarks_maml_gpu_*.json, the benchmarks-maml-gpu records.
# --part paper (the second call):
#   (a) gpu_paper.sh --iterations 2000 --name pilot: the MAML paper's 5-way 1-shot pilot
#       (iterations/s, the projected full run) -> $OUT/pilot/ (the same five files);
#   (b) the CUDA tests (tests/generative/test_generative_cuda.py,
#       tests/cli/test_cli_vae_device.py, tests/meta/test_compile_cuda.py and the CUDA tests
#       of tests/train/test_device_tasks.py) -> $OUT/tests.log.
# Both: everything printed -> $OUT/session.log. At most 8 files come back, none deeper than
# $OUT/a/file; more are packed into $OUT/logs.tar.gz.
#
# --budget S   total wall seconds (default 570: a 600 s command less its start and copies)
# --smoke      a dry run on the CPU (also GPU_SESSION_SMOKE=1): forwards --smoke --device cpu
#              --eval-seconds 30 to gpu_paper.sh and --device cpu --iters 2 --reps 1 to
#              bench_maml.py; e.g. OUT=/tmp/s bash benchmarks/gpu_session.sh --smoke --budget 200
#
# The Omniglot data: runs/data/omniglot (carry runs/data: `mkdir -p runs/data && cp -r
# ../shared/data/omniglot runs/data/`, 5.5 MB), else copied from ../shared/data/omniglot
# when that exists, else $METALOOP_DATA/omniglot; without any, the parts that need it are
# skipped and the log says so. The package runs from this checkout (PYTHONPATH=src).
set -uo pipefail
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0;; esac
PART=challenge
BUDGET=570
SMOKE=${GPU_SESSION_SMOKE:-0}
while [ $# -gt 0 ]; do
  case "$1" in
    --part) PART=${2:-}; shift 2 || { echo "gpu_session.sh: error: --part needs a value" >&2; exit 2; };;
    --budget) BUDGET=${2:-}; shift 2 || { echo "gpu_session.sh: error: --budget needs a value" >&2; exit 2; };;
    --smoke) SMOKE=1; shift;;
    *) echo "gpu_session.sh: error: unknown argument $1 (see --help)" >&2; exit 2;;
  esac
done
case "$PART" in challenge|paper) ;; *) echo "gpu_session.sh: error: --part must be challenge or paper, got '$PART'" >&2; exit 2;; esac
case "$BUDGET" in ''|*[!0-9]*) echo "gpu_session.sh: error: --budget must be whole seconds, got '$BUDGET'" >&2; exit 2;; esac
if [ "$BUDGET" -lt 120 ]; then
  echo "gpu_session.sh: error: --budget $BUDGET is too short (at least 120 s)" >&2; exit 2
fi
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-runs/gpu_session}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ -e "$OUT/session.log" ]; then
  echo "gpu_session.sh: error: $OUT already holds a session (session.log); give an empty OUT" >&2
  exit 2
fi
export PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
T0=$SECONDS
left() { echo $((BUDGET - (SECONDS - T0))); }
say() { echo "== gpu_session [$(( SECONDS - T0 )) s of $BUDGET]: $*"; }

if [ "$SMOKE" = 1 ]; then
  PAPER_DEV=(--smoke --device cpu --eval-seconds 30); BENCH_DEV=(--device cpu --iters 2 --reps 1)
else
  PAPER_DEV=(); BENCH_DEV=(--device cuda --iters 20 --reps 3)
fi
session() {
say "part $PART, OUT $OUT, smoke $SMOKE"
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total --format=csv || true
fi
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || true

# the data: runs/data/omniglot, else a copy of ../shared/data/omniglot, else $METALOOP_DATA
DATA=""
RC=0
if [ -d runs/data/omniglot ]; then
  DATA=$ROOT/runs/data
elif [ -d ../shared/data/omniglot ]; then
  mkdir -p runs/data && cp -r ../shared/data/omniglot runs/data/ && DATA=$ROOT/runs/data
  say "copied ../shared/data/omniglot to runs/data/omniglot"
elif [ -n "${METALOOP_DATA:-}" ] && [ -d "$METALOOP_DATA/omniglot" ]; then
  DATA=$(cd "$METALOOP_DATA" && pwd)
fi
if [ -n "$DATA" ]; then
  export METALOOP_DATA=$DATA
  say "Omniglot data: $DATA/omniglot"
else
  say "NO OMNIGLOT DATA: runs/data/omniglot is missing and there is no ../shared/data/omniglot" \
      "or \$METALOOP_DATA/omniglot; the data must be carried: run 'mkdir -p runs/data &&" \
      "cp -r ../shared/data/omniglot runs/data/' in the checkout and carry runs/data." \
      "The parts that need the data are skipped."
  RC=3
fi

# gpu_paper.sh under a part's time: its own --budget ends it inside; timeout is the backstop
# (SIGTERM, which it answers by writing its summary, then SIGKILL 10 s later)
paper() {            # paper RESERVE NAME ARGS...: leave RESERVE s for the parts after it
  local reserve=$1 name=$2; shift 2
  local t=$(( $(left) - reserve - 10 ))
  if [ "$t" -lt 60 ]; then say "skipped $name: ${t} s left for it"; return 0; fi
  say "$name: gpu_paper.sh with --budget $((t - 5)), timeout $t s"
  timeout -k 10 "$t" bash benchmarks/gpu_paper.sh --out "$OUT" --name "$name" \
      --budget $((t - 5)) "${PAPER_DEV[@]}" "$@"
  say "$name: exit $?"
}

case "$PART" in
challenge)
  if [ -n "$DATA" ]; then
    paper 90 challenge --config configs/omniglot_challenge_all_gpu.toml --iterations fit
    t=$(( $(left) - 10 ))
    if [ "$t" -ge 20 ]; then
      say "bench: bench_maml.py ${BENCH_DEV[*]}, timeout $t s"
      timeout -k 10 "$t" python benchmarks/bench_maml.py "${BENCH_DEV[@]}" \
          --only metaloop,plain --records "$OUT/bench"
      say "bench: exit $?"
    else
      say "skipped bench: ${t} s left"
    fi
  fi
  ;;
paper)
  if [ -n "$DATA" ]; then
    paper 200 pilot --iterations 2000
    # the tests look for Omniglot in ~/.cache/metaloop/omniglot or ../shared/data/omniglot
    # (their session points $METALOOP_DATA at a cache of its own): a HOME of their own holds it
    mkdir -p runs/gpu_session_home/.cache/metaloop
    ln -sfn "$DATA/omniglot" runs/gpu_session_home/.cache/metaloop/omniglot
  fi
  t=$(( $(left) - 15 ))
  if [ "$t" -ge 20 ]; then
    say "tests: timeout $t s -> $OUT/tests.log"
    {
      HOME=$ROOT/runs/gpu_session_home timeout -k 5 "$t" python -m pytest -q -p no:cacheprovider \
          tests/generative/test_generative_cuda.py tests/cli/test_cli_vae_device.py \
          tests/meta/test_compile_cuda.py
      echo "exit $?"
      t2=$(( $(left) - 10 ))
      if [ "$t2" -ge 10 ]; then
        HOME=$ROOT/runs/gpu_session_home timeout -k 5 "$t2" python -m pytest -q \
            -p no:cacheprovider tests/train/test_device_tasks.py -k cuda
        echo "exit $?"
      else
        echo "skipped tests/train/test_device_tasks.py: ${t2} s left"
      fi
    } > "$OUT/tests.log" 2>&1
    tail -n 15 "$OUT/tests.log"
  else
    say "skipped the tests: ${t} s left"
  fi
  ;;
esac

# what comes back: at most 8 files, none deeper than $OUT/a/file
python - "$OUT" <<'PY'
import sys
import tarfile
from pathlib import Path

out = Path(sys.argv[1])
files = sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
for p in out.rglob(".*.tmp"):                       # a copy a kill cut short
    p.unlink()
deep = [p for p in files if len(p.relative_to(out).parts) > 2]
if len(files) > 8 or deep:                          # keep the results, pack the rest
    keep = [p for p in files if p.name in ("summary.json", "record.json", "session.log")
            or p.parent.name == "bench"][:7]
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        for p in files:
            if p not in keep and p.name != "logs.tar.gz":
                tar.add(p, arcname=str(p.relative_to(out)))
                p.unlink()
    for d in sorted((d for d in out.rglob("*") if d.is_dir()), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    files = sorted(p for p in out.rglob("*") if p.is_file())
print(f"gpu_session: {len(files)} file(s) under {out}:")
for p in files:
    print(f"  {p.relative_to(out)}  {p.stat().st_size} bytes")
PY
say "done"
return $RC
}
session 2>&1 | tee "$OUT/session.log"
