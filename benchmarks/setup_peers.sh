#!/usr/bin/env bash
# Creates the benchmark environment with the peers (learn2learn, higher, TorchOpt) pinned in
# benchmarks/requirements.txt, beside metaloop's own environment:
#
#     bash benchmarks/setup_peers.sh [VENV]      # default: $HOME/.venvs/metaloop-peers
#     VENV/bin/python benchmarks/bench_maml.py   # then runs metaloop and every peer
#
# The venv sees the system site-packages, so it reuses the installed torch and metaloop.
# learn2learn 0.2.0 needs two workarounds: its shipped C files include longintrepr.h, which
# moved in CPython 3.11, so they are regenerated from the .pyx sources with a current Cython
# and installed with --no-build-isolation; and its import pulls in torchvision, whose PyPI
# build for torch 2.13 fails on the CPU torch build with "operator torchvision::nms does not
# exist" -- bench_maml.py defines those op schemas with torch.library before importing it.
set -euo pipefail
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0;; esac
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${1:-$HOME/.venvs/metaloop-peers}"
REQ="$HERE/requirements.txt"

python -m venv --system-site-packages "$VENV"
PY="$VENV/bin/python"
# everything but learn2learn, from PyPI as they are
grep -v '^learn2learn' "$REQ" > "$VENV/requirements-peers.txt"
"$PY" -m pip install -r "$VENV/requirements-peers.txt"

# learn2learn: regenerate the C sources, then build against the venv's own packages
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
L2L="$(grep '^learn2learn==' "$REQ")"
"$PY" -m pip download --no-deps --no-binary :all: --no-build-isolation "$L2L" -d "$WORK"
tar xzf "$WORK"/learn2learn-*.tar.gz -C "$WORK"
SRC="$(echo "$WORK"/learn2learn-*/)"
rm -f "$SRC"/learn2learn/data/*.c
"$PY" -m cython -3 "$SRC"/learn2learn/data/*.pyx
"$PY" -m pip install --no-build-isolation --no-deps "$SRC"

echo "peers installed in $VENV:"
"$PY" - <<'PY'
import importlib.metadata as md
for name in ("torch", "torchvision", "higher", "torchopt", "learn2learn"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} NOT INSTALLED")
PY
