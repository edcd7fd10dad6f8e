#!/usr/bin/env bash
# Set up a development environment in .venv: both backends, tests, tutorials.
# Robust to where torch comes from: a local CPU wheel of torch 2.13.0 is tried first
# (seconds, no CUDA libraries); otherwise pip resolves torch normally.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
if ! python -c "import torch" 2>/dev/null; then
    python -m pip install -q "torch==2.13.0" || python -m pip install -q torch
fi
python -m pip install -q -e ".[dev]"
python -c "import ebmppl, ebmppl.numpyro, ebmppl.pyro; print('ebmppl', ebmppl.__version__, 'ready')"
