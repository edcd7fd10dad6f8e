#!/usr/bin/env bash
# The key performance check on one GPU, in under 5 minutes:
#   * AIS loop overhead at 10^5 particles (gaussian10, mixture): AIS wall time over a bare
#     loop of the same number of batched potential-and-gradient evaluations;
#   * scaling at 10^5 particles: cost and device peak memory against dimension (100, 1000)
#     and 100 vs 1000 annealing steps, one fresh process per configuration;
#   * torch: CUDA synchronisations per annealing step (sync-debug mode; expected 0).
# JAX and torch each run on CUDA when they see a GPU. On a machine without one (or without a
# CUDA build of a backend) the GPU parts are skipped and a small CPU smoke run of the same code
# path runs instead, so the script always exits 0 when the code works.
#
# Usage: bash benchmarks/gpu.sh   (PYTHON=/path/to/python to choose the interpreter)
# CUDA builds, if the environment has CPU-only wheels (as .ci/setup.sh installs):
#   pip install -U "jax[cuda12]"
#   pip install torch --index-url https://download.pytorch.org/whl/cu126
# Writes benchmarks/results/overhead_gpu.json (saved after each part);
# `python benchmarks/make_results.py` adds it to benchmarks/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python

if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
else
    echo "nvidia-smi not found: no NVIDIA GPU visible, the GPU parts will be skipped"
fi

"$PY" - <<'EOF'
import jax, torch
print(f"jax {jax.__version__}: default backend {jax.default_backend()}, devices {jax.devices()}")
cuda = torch.cuda.is_available()
name = torch.cuda.get_device_name(0) if cuda else "none"
print(f"torch {torch.__version__}: CUDA available {cuda} ({name})")
EOF

# A hard cap keeps the check under 5 minutes; what finished is already in the JSON file.
start=$(date +%s)
status=0
timeout --kill-after=10 285 "$PY" benchmarks/bench_overhead.py --gpu || status=$?
echo "gpu.sh: $(( $(date +%s) - start )) s"
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "gpu.sh: hit the 285 s cap; partial results are in benchmarks/results/overhead_gpu.json"
fi
exit "$status"
