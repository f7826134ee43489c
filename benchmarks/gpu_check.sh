#!/usr/bin/env bash
# Every GPU check of the project in one run (for a lent H100/H200 without Ray or MLflow):
#   1. tests/test_gpu.py: graph steps equal eager steps, no host sync per step, every zoo model
#      trains with bf16 + channels_last + CUDA graphs, a KD teacher inside the graph;
#   2. benchmarks/throughput.py: classic pipeline vs ours (one trial, packed trials, batch 512);
#   3. `tfkd-search train` end to end on CIFAR-100-shaped files (per-epoch images/s).
# Outputs go to $OUT (default ./gpu-out). Carry .whl (pydantic wheels) when the machine lacks them.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import pydantic" 2>/dev/null && [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$OUT/gpu.txt"
echo "== 1. tests/test_gpu.py"
timeout 300 python3 -m pytest tests/test_gpu.py -q -p no:cacheprovider -o addopts="" 2>&1 | tail -25 | tee "$OUT/test_gpu.log"
echo "== 2. throughput"
timeout 360 python3 benchmarks/throughput.py --model resnet18 --batch 128 --packed 4 --streams 4 8 \
  --json "$OUT/throughput.json" 2>&1 | tee "$OUT/throughput.log"
echo "== 3. end to end"
python3 benchmarks/make_fake_cifar.py /tmp/fakecifar
timeout 240 python3 -m tfkd_search train --config benchmarks/e2e_resnet18_cifar100.yaml \
  --data-dir /tmp/fakecifar --no-mlflow --out /tmp/e2e 2>&1 | tee "$OUT/e2e.log"
