#!/usr/bin/env bash
# Inference strategies on the GPUs present (4 H100s, else 2); see benchmarks/infer_gpu.py for the cases.
#   benchmarks/infer_gpu.sh [--dry-run] [--images N] [--batch-size B] [--cap-gib G]
# Writes its table to stdout and, when OUT is set, to $OUT/infer_gpu.md and $OUT/infer_gpu.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false
# The GPU machines' own python3 (torch with CUDA); PYTHON=.venv/bin/python for a dry run here.
exec "${PYTHON:-python3}" benchmarks/infer_gpu.py "$@"
