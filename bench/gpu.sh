#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (CUDA 12): install the gpu extra in a fresh venv, then run
# bench/gpu.py, which writes docs/gpu_results.md. `bench/gpu.sh --dry-run` runs the same steps
# on the CPU provider with the current interpreter (no install), to check the script itself.
# Where the machine cannot reach a package index, set PYTHON to an interpreter that already has
# onnxruntime-gpu and the train extra (SKIP_INSTALL=1).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--dry-run" ]]; then
    exec "${PYTHON:-python3}" bench/gpu.py --dry-run --out "${OUT:-/tmp/gpu_results_dry_run.md}"
fi
PYTHON=${PYTHON:-python3.11}
if [[ -z "${SKIP_INSTALL:-}" ]]; then
    VENV=${VENV:-/tmp/asd-edge-gpu-venv}
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q -c constraints.txt -e '.[gpu,train]'
    PYTHON="$VENV/bin/python"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
PYTHONPATH="$PWD" "$PYTHON" bench/gpu.py --out docs/gpu_results.md
