#!/usr/bin/env bash
# The GPU check, ready for a machine with a CUDA GPU and no internet: a random ~1.1B-parameter
# Llama built locally; extraction, knowledge patching, truth steering and refusal generation
# in bf16, each checked against float32 and timed (benchmarks/gpu_check.py says what and how).
#
#   bash benchmarks/gpu_check.sh              # on the GPU, a few minutes
#   bash benchmarks/gpu_check.sh --dry        # the same steps on the CPU with a tiny model
#
# Needs torch, transformers, tokenizers, h5py, pandas (not an install of ptmech: the library is
# read from this checkout). Writes $OUT/gpu_check.json when OUT is set (the device tool's
# folder), else benchmarks/results/gpu_check.json; exits 1 if a check failed.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/workflow_scripts${PYTHONPATH:+:$PYTHONPATH}"
out="${OUT:-benchmarks/results}/gpu_check.json"
if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true; fi
exec "${PYTHON:-python3}" benchmarks/gpu_check.py --out "$out" "$@"
