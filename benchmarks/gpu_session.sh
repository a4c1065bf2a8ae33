#!/usr/bin/env bash
# usage: OUT=<dir> bash benchmarks/gpu_session.sh [--part challenge|paper|peers] [--budget S]
#                                                [--peers DIR] [--smoke]
#
# The GPU work of this repository as one command for a GPU that is available for a short time,
# with a limit on each command's wall time and on the files that come back: the parts run in
# priority order, each under its own `timeout` so that one part's failure or overrun cannot
# take the others, all inside --budget; each part writes what it has finished before the next
# starts. The exit status is 0 when every part finished with exit 0, 1 when one failed, timed
# out or was skipped for lack of time, 3 without the Omniglot data, 2 for a usage error; the
# last line of the output (and of $OUT/session.log) lists each part's exit.
#
# --part challenge (the default):
#   (a) benchmarks/gpu_paper.sh --config configs/omniglot_challenge_all_gpu.toml
#       --iterations fit --name challenge: checks, the challenge config trained for the time
#       left and evaluated -> $OUT/challenge/{summary,record,results}.json, config.toml,
#       metrics.jsonl (record.json, the challenge table's record, only for a complete run);
#   (b) benchmarks/bench_maml.py --device cuda --only metaloop,plain --iters 20 --reps 3
#       (~30-60 s) -> $OUT/bench/benchmarks_maml_gpu_*.json, the benchmarks-maml-gpu records.
# --part paper:
#   (a) gpu_paper.sh --iterations 2000 --name pilot: the MAML paper's 5-way 1-shot pilot
#       (iterations/s, the projected full run) -> $OUT/pilot/ (the same five files);
#   (b) the CUDA tests (tests/generative/test_generative_cuda.py,
#       tests/cli/test_cli_vae_device.py, tests/meta/test_compile_cuda.py and the CUDA tests
#       of tests/train/test_device_tasks.py) -> $OUT/tests.log.
# --part peers (about 3 minutes on an H100; give it --budget 200 or more):
#   (a) learn2learn, higher and TorchOpt installed from the folder that
#       benchmarks/peers_wheelhouse.sh prepares (--peers DIR, default runs/peers) into
#       runs/gpu_session_peers_site, learn2learn built there (~20 s);
#   (b) benchmarks/bench_maml.py --device cuda --only metaloop,plain,learn2learn,higher,
#       torchopt,torchopt-vmap --iters 10 --reps 3: each peer's meta-gradient checked
#       against metaloop's
#       in float64 on the GPU, then all timed in one process -> $OUT/bench/ (the same
#       records as the challenge part's bench, and one per peer). Without the folder the
#       part is skipped, saying how to make it.
# Both: everything printed -> $OUT/session.log. At most 8 files are left under $OUT, none
# deeper than $OUT/a/file; more are packed into $OUT/logs.tar.gz.
#
# --budget S   total wall seconds (default 570, for a 600 s limit per command); a gpu_paper.sh
#              part is given what is left less the time kept for the parts after it, and is
#              skipped, with a line saying so, when that is not more than its --eval-seconds
#              (110; 30 with --smoke) + 115 s (margin, a training's start and the checks)
# --smoke      a dry run on the CPU (also GPU_SESSION_SMOKE=1): forwards --smoke --device cpu
#              --eval-seconds 30 to gpu_paper.sh and runs bench_maml.py with tiny random-data
#              settings and no records; on a 2-core CPU it takes about 2 minutes:
#              OUT=/tmp/gpu_session_smoke bash benchmarks/gpu_session.sh --smoke --budget 330
#
# The Omniglot data is read from runs/data/omniglot, else from ../shared/data/omniglot when
# that exists (copied to runs/data/omniglot first), else from $METALOOP_DATA/omniglot; without
# any, the parts that need it are skipped and the log says so. To take the data along with a
# copy of the checkout: `mkdir -p runs/data && cp -r <data>/omniglot runs/data/` (5.5 MB).
# The package runs from this checkout (PYTHONPATH=src).
set -uo pipefail
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0;; esac
PART=challenge
BUDGET=570
PEERS=""                     # --peers DIR (the caller's); default: the checkout's runs/peers
SMOKE=${GPU_SESSION_SMOKE:-0}
while [ $# -gt 0 ]; do
  case "$1" in
    --part) PART=${2:-}; shift 2 || { echo "gpu_session.sh: error: --part needs a value" >&2; exit 2; };;
    --budget) BUDGET=${2:-}; shift 2 || { echo "gpu_session.sh: error: --budget needs a value" >&2; exit 2; };;
    --smoke) SMOKE=1; shift;;
    --peers) PEERS=${2:-}; shift 2 || { echo "gpu_session.sh: error: --peers needs a folder" >&2; exit 2; };;
    *) echo "gpu_session.sh: error: unknown argument $1 (see --help)" >&2; exit 2;;
  esac
done
case "$PART" in challenge|paper|peers) ;; *) echo "gpu_session.sh: error: --part must be challenge, paper or peers, got '$PART'" >&2; exit 2;; esac
case "$BUDGET" in ''|*[!0-9]*) echo "gpu_session.sh: error: --budget must be whole seconds, got '$BUDGET'" >&2; exit 2;; esac
if [ "$BUDGET" -lt 120 ]; then
  echo "gpu_session.sh: error: --budget $BUDGET is too short (at least 120 s)" >&2; exit 2
fi
case "$PEERS" in
  "") ;;
  /*) ;;
  *) PEERS=$PWD/$PEERS;;     # relative to where the script is called
esac
cd "$(dirname "$0")/.."
ROOT=$PWD
PEERS=${PEERS:-$ROOT/runs/peers}
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
  EVAL_S=30
  BENCH_DEV=(--device cpu --iters 1 --reps 1 --random-data --meta-batch 2 --queries 2 --hidden 8
             --check-tasks 1)
  BENCH_RECORDS=()           # (bench_maml.py writes records of its base settings only)
else
  EVAL_S=110
  BENCH_DEV=(--device cuda --iters 20 --reps 3)
  BENCH_RECORDS=(--records "$OUT/bench")
fi
PAPER_DEV=(--eval-seconds "$EVAL_S")
[ "$SMOKE" = 1 ] && PAPER_DEV+=(--smoke --device cpu)
# a gpu_paper.sh part needs more than its --eval-seconds + 25 s margin + 30 s for a training's
# start (what gpu_paper.sh itself requires of its --budget) + 60 s for its checks
PAPER_NEED=$(( EVAL_S + 25 + 30 + 60 ))
EXITS=()                     # "part exit" of each part, for the last line
FAILED=0
part_exit() {                # part_exit NAME RC: note a part's exit (124/137: timed out)
  local why=""
  case "$2" in 124|137) why=" (timed out)";; esac
  EXITS+=("$1 $2$why")
  if [ "$2" != 0 ]; then FAILED=1; fi
}
run_parts() {
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
  say "NO OMNIGLOT DATA: none of runs/data/omniglot, ../shared/data/omniglot and" \
      "\$METALOOP_DATA/omniglot exists; set METALOOP_DATA to the folder holding omniglot/," \
      "or copy it into the checkout ('mkdir -p runs/data && cp -r <data>/omniglot" \
      "runs/data/') before the checkout is copied to the GPU machine." \
      "The parts that need the data are skipped."
  RC=3
fi

# gpu_paper.sh under a part's time: its own --budget ends it inside; timeout is the backstop
# (SIGTERM, which it answers by writing its summary, then SIGKILL 10 s later)
paper() {            # paper RESERVE NAME ARGS...: leave RESERVE s for the parts after it
  local reserve=$1 name=$2; shift 2
  local t=$(( $(left) - reserve - 10 ))
  if [ $(( t - 5 )) -le "$PAPER_NEED" ]; then
    say "skipped $name: $((t - 5)) s left for it, it needs more than $PAPER_NEED s" \
        "(--eval-seconds $EVAL_S + 25 s margin + 30 s a training's start + 60 s checks)"
    part_exit "$name" skipped; return 0
  fi
  say "$name: gpu_paper.sh with --budget $((t - 5)), timeout $t s"
  timeout -k 10 "$t" bash benchmarks/gpu_paper.sh --out "$OUT" --name "$name" \
      --budget $((t - 5)) "${PAPER_DEV[@]}" "$@"
  local rc=$?
  say "$name: exit $rc"
  part_exit "$name" "$rc"
}

case "$PART" in
challenge)
  if [ -n "$DATA" ]; then
    paper 90 challenge --config configs/omniglot_challenge_all_gpu.toml --iterations fit
    t=$(( $(left) - 10 ))
    if [ "$t" -ge 20 ]; then
      say "bench: bench_maml.py ${BENCH_DEV[*]}, timeout $t s"
      timeout -k 10 "$t" python benchmarks/bench_maml.py "${BENCH_DEV[@]}" \
          --only metaloop,plain ${BENCH_RECORDS[@]+"${BENCH_RECORDS[@]}"}
      rc=$?
      say "bench: exit $rc"
      part_exit bench "$rc"
    else
      say "skipped bench: ${t} s left"
      part_exit bench skipped
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
      rc=$?
      echo "exit $rc"
      part_exit tests "$rc"
      t2=$(( $(left) - 10 ))
      if [ "$t2" -ge 10 ]; then
        HOME=$ROOT/runs/gpu_session_home timeout -k 5 "$t2" python -m pytest -q \
            -p no:cacheprovider tests/train/test_device_tasks.py -k cuda
        rc=$?
        echo "exit $rc"
        part_exit device_tasks_tests "$rc"
      else
        echo "skipped tests/train/test_device_tasks.py: ${t2} s left"
        part_exit device_tasks_tests skipped
      fi
    } > "$OUT/tests.log" 2>&1
    tail -n 15 "$OUT/tests.log"
  else
    say "skipped the tests: ${t} s left"
    part_exit tests skipped
  fi
  ;;
peers)
  if [ -z "$DATA" ] && [ "$SMOKE" != 1 ]; then
    part_exit peers skipped
  elif [ ! -d "$PEERS/learn2learn-0.2.0" ]; then
    say "NO PEERS: $PEERS does not hold what benchmarks/peers_wheelhouse.sh makes; run" \
        "'bash benchmarks/peers_wheelhouse.sh' (or --python-version for another Python than" \
        "3.12) before the checkout is copied to the GPU machine"
    part_exit peers skipped
  else
    SITE=$ROOT/runs/gpu_session_peers_site
    rm -rf "$SITE"
    t=$(( $(left) - 60 ))
    say "peers: installing $PEERS into $SITE, timeout $t s"
    # installed for the python that runs the bench below
    PYTHON=python timeout -k 5 "$t" bash benchmarks/peers_wheelhouse.sh --install "$PEERS" "$SITE" 2>&1 \
        | grep -v "as the 'root' user"
    rc=${PIPESTATUS[0]}
    say "peers: install exit $rc"
    part_exit install "$rc"
    if [ "$rc" = 0 ]; then
      PY_PEERS=(env "PYTHONPATH=$PYTHONPATH:$SITE" python)
      "${PY_PEERS[@]}" -c "import importlib.metadata as m; print('peers:', ', '.join(f'{n} {m.version(n)}' for n in ('learn2learn', 'higher', 'torchopt')))" || true
      t=$(( $(left) - 10 ))
      PEER_BENCH=("${BENCH_DEV[@]}")
      [ "$SMOKE" = 1 ] || PEER_BENCH=(--device cuda --iters 10 --reps 3)
      say "bench: bench_maml.py ${PEER_BENCH[*]} with the peers, timeout $t s"
      timeout -k 10 "$t" "${PY_PEERS[@]}" benchmarks/bench_maml.py "${PEER_BENCH[@]}" \
          --only metaloop,plain,learn2learn,higher,torchopt,torchopt-vmap \
          ${BENCH_RECORDS[@]+"${BENCH_RECORDS[@]}"} 2>&1 | tee "$ROOT/runs/gpu_session_peers_bench.log"
      rc=${PIPESTATUS[0]}
      say "bench: exit $rc"
      part_exit bench "$rc"
      # a peer that did not import or whose meta-gradient differs was not timed: the part
      # did not do what it is for
      if grep -E "^  skip (learn2learn|higher|torchopt|torchopt-vmap):|WRONG" "$ROOT/runs/gpu_session_peers_bench.log"; then
        say "peers: not every peer was timed (above)"
        part_exit peers_timed 1
      fi
    fi
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
if [ "$RC" = 0 ] && [ "$FAILED" = 1 ]; then RC=1; fi
LIST=$(IFS=,; echo "${EXITS[*]:-none run}")
say "done, exit $RC; parts: ${LIST//,/, }"
return $RC
}
run_parts 2>&1 | tee "$OUT/session.log"
