#!/usr/bin/env bash
# usage: bash benchmarks/peers_wheelhouse.sh [DIR] [--python-version X.Y]
#
# Prepares the peers that benchmarks/bench_maml.py compares metaloop with (learn2learn,
# higher, TorchOpt, pinned in benchmarks/requirements.txt) for a GPU machine that has no
# network, as files that travel with the checkout: DIR (default: the checkout's runs/peers,
# ignored by git; a DIR given is relative to where the script is called) gets
#   - wheels of higher, TorchOpt and optree (its compiled dependency, for CPython X.Y,
#     default 3.12, the GPU machines' Python), graphviz (TorchOpt imports it), gym and
#     gym_notices (learn2learn imports gym), qpth; the pure-Python ones are built here from their sdists;
#   - learn2learn-0.2.0/, learn2learn's source with its C files regenerated from the .pyx
#     sources by Cython (the shipped ones include longintrepr.h, which moved in CPython
#     3.11; the generated C compiles on any CPython 3), built on the GPU machine, where it
#     is installed, since its extension must match that machine's Python.
# torch, torchvision, numpy, scipy, tqdm and requests are the GPU machine's own. About 4 MB.
#
# benchmarks/gpu_session.sh finds DIR at runs/peers (or --peers DIR), installs it there into
# a folder of its own (`install_peers DIR SITE` below, also usable by hand) while the first
# part trains, and adds learn2learn, higher and TorchOpt to its bench_maml.py run.
#
# Here, to try the folder with this machine's Python and torch:
#   bash benchmarks/peers_wheelhouse.sh /tmp/peers --python-version 3.11
#   bash benchmarks/peers_wheelhouse.sh --install /tmp/peers /tmp/peers-site
#   PYTHONPATH=/tmp/peers-site python benchmarks/bench_maml.py --random-data --iters 1 ...
# (learn2learn also needs torchvision, which this script does not bring.)
set -euo pipefail
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0;; esac
HERE="$(cd "$(dirname "$0")" && pwd)"
REQ="$HERE/requirements.txt"
PY=${PYTHON:-python3}

pin() {                      # pin NAME: NAME==VERSION as benchmarks/requirements.txt pins it
  local line
  line=$(grep -E "^$1==" "$REQ") || { echo "peers_wheelhouse.sh: error: $1 is not pinned in $REQ" >&2; exit 2; }
  echo "$line"
}

install_peers() {            # install_peers DIR SITE: the wheels, then learn2learn built here
  local dir=$1 site=$2
  [ -d "$dir/learn2learn-0.2.0" ] || { echo "peers_wheelhouse.sh: error: $dir holds no learn2learn-0.2.0/ (make it with this script)" >&2; return 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "$dir"/*.whl
  # --no-build-isolation: the machine's own setuptools builds the regenerated .c files
  # (no Cython needed there); the build writes into the source folder, so it is built from
  # a copy
  local src
  src=$(mktemp -d)
  cp -r "$dir/learn2learn-0.2.0" "$src/"
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
      --upgrade --target "$site" "$src/learn2learn-0.2.0"
  rm -rf "$src"
}

if [ "${1:-}" = "--install" ]; then
  [ $# -eq 3 ] || { echo "usage: peers_wheelhouse.sh --install DIR SITE" >&2; exit 2; }
  install_peers "$2" "$3"
  exit $?
fi

DIR="$(cd "$HERE/.." && pwd)/runs/peers"       # the checkout's; a DIR given is the caller's
PYV=3.12
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) PYV=${2:-}; shift 2 || { echo "peers_wheelhouse.sh: error: --python-version needs a value" >&2; exit 2; };;
    -*) echo "peers_wheelhouse.sh: error: unknown option $1 (see --help)" >&2; exit 2;;
    *) DIR=$1; shift;;
  esac
done
case "$PYV" in 3.[0-9]|3.[0-9][0-9]) ;; *) echo "peers_wheelhouse.sh: error: --python-version must be like 3.12, got '$PYV'" >&2; exit 2;; esac
if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then
  echo "peers_wheelhouse.sh: error: $DIR is not empty; give a new folder" >&2; exit 2
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/out"
# pure-Python wheels, built here from whatever the registry has (gym 0.26.2 is an sdist)
"$PY" -m pip wheel -q --no-deps -w "$WORK/out" "$(pin higher)" "$(pin gym)" "$(pin qpth)" \
    "$(pin gym_notices)" "$(pin graphviz)"
# TorchOpt (pure Python for some versions of CPython, compiled for others) and optree
# (compiled): the wheels for the GPU machine's Python
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$WORK/out" "$(pin torchopt)" "$(pin optree)"
for w in "$WORK"/out/*.whl; do
  case "$(basename "$w")" in *-none-any.whl|*-cp${PYV/./}-*) ;;
    *) echo "peers_wheelhouse.sh: error: $(basename "$w") is not for CPython $PYV" >&2; exit 1;;
  esac
done

# learn2learn: its source, the C regenerated with the pinned Cython (installed apart)
L2L=$(pin learn2learn)
"$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation "$L2L" -d "$WORK/sdist"
tar xzf "$WORK"/sdist/learn2learn-*.tar.gz -C "$WORK"
SRC="$WORK/learn2learn-${L2L#learn2learn==}"
rm -rf "$SRC/docs" "$SRC/examples" "$SRC/tests" "$SRC"/learn2learn/data/*.c
"$PY" -m pip install -q --no-deps --target "$WORK/cython" "$(pin cython)"
PYTHONPATH="$WORK/cython" "$PY" -m cython -3 "$SRC"/learn2learn/data/*.pyx
mv "$SRC" "$WORK/out/"

mkdir -p "$DIR"
cp -r "$WORK"/out/. "$DIR"/
echo "peers for CPython $PYV in $DIR ($(du -sh "$DIR" | cut -f1)):"
ls "$DIR"
