#!/usr/bin/env bash
# Issue 33's GPU run as one command on the device machine (one H100, at most 8 minutes); see
# benchmarks/gpu_shape_run.py for what it does. Extra arguments go to it (e.g. --budget-min 7).
# Everything it makes lands in $OUT: the learnt part, gpu_shape_run.json, log.txt.
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_shape_run}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/log.txt"
python3 benchmarks/gpu_shape_run.py --device cuda --out "$OUT" "$@" 2>&1 | tee -a "$OUT/log.txt"
status=$?
# The GPU half of the portability test (skipped on the CPU-only CI): trained on CUDA, hashed on the CPU.
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_backbone_training.py -k on_the_gpu 2>&1 | tail -3 | tee -a "$OUT/log.txt"
exit $status
