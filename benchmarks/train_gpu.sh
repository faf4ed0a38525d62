#!/usr/bin/env bash
# Training throughput of sa2va-1b and sa2va-4b under DeepSpeed ZeRO-2 and ZeRO-3 on 1, 2, 4, … GPUs (powers of two up
# to the GPUs present, and all of them), then one table with scaling efficiency: on stdout and in $OUT/train_gpu.md.
# Extra arguments go to every measurement (see `python benchmarks/train_gpu.py --help`), e.g. --micro-batch 16.
# Without GPUs: `python benchmarks/train_gpu.py --dry-run` runs the same path on the CPU with the tiny preset.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
# These hosts say 9.0a, which DeepSpeed's op builder cannot parse: harmless while no op is JIT-built (torch's AdamW
# needs none), a failure for any experiment that builds one. NCCL_NVLS_ENABLE is left as the host sets it.
export TORCH_CUDA_ARCH_LIST=9.0
# As the finetune stage's launcher sets it for GPU workers (vesselseg/finetune/launch.py).
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
PYTHON=${PYTHON:-python3}

gpus=$($PYTHON -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -lt 1 ]; then
  echo "no GPU visible; for a CPU check run: $PYTHON benchmarks/train_gpu.py --dry-run" >&2
  exit 1
fi
counts=()
for ((n = 1; n < gpus; n *= 2)); do counts+=("$n"); done
counts+=("$gpus")

results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
started=$(date +%s)
for n in "${counts[@]}"; do
  echo "== $n GPU(s) =="
  # A failed launch (e.g. out of memory) leaves its rows out of the table instead of stopping the others.
  $PYTHON -m torch.distributed.run --standalone --nproc-per-node "$n" benchmarks/train_gpu.py \
    --worker --results "$results/gpus-$n.jsonl" "$@" || echo "launch with $n GPU(s) failed (exit $?)" >&2
done
$PYTHON benchmarks/train_gpu.py --report "$results"
echo "total wall time: $(( $(date +%s) - started )) s"
