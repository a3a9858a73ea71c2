#!/usr/bin/env bash
# Packaging check (too slow for CI: a fresh venv, torch, the extension build): python -m build
# makes an sdist and a wheel, the wheel installs into a new venv, and `arcdae train` runs the
# quickstart for 5 steps from a folder outside the checkout. Usage: bash bench/wheel_check.sh [WORK]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-$(mktemp -d)}
PY=${PY:-python3}
mkdir -p "$WORK"
echo "work folder: $WORK"
# the build runs in this checkout's venv (torch is a build requirement of the extension;
# --no-isolation: an isolated build would download another torch)
make venv >/dev/null
.venv/bin/python -m pip install -q build
rm -rf "$WORK/dist"
.venv/bin/python -m build --no-isolation --outdir "$WORK/dist" . > "$WORK/build.log" 2>&1
ls -l "$WORK/dist"
$PY -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q "torch==2.13.0"
"$WORK/venv/bin/python" -m pip install -q "$WORK"/dist/*.whl
mkdir -p "$WORK/elsewhere"
cd "$WORK/elsewhere"
"$WORK/venv/bin/arcdae" train --config quickstart.yaml --out run --max-steps 5 --no-progress
"$WORK/venv/bin/arcdae" info | grep "C++ extension: built"  # the wheel's extension loads
ls run/checkpoints
echo "wheel check passed"
