#!/usr/bin/env bash
# Every GPU check of the project in ONE run, for a lent GPU host that has Python 3.12 with torch,
# torchvision, numpy, pandas, pyarrow and nothing else (no package index). At most ~10 minutes:
#   0. install the bundle: .gpu_bundle/tfkd-gpu-bundle-cp<XY>.tar.xz (an ignored folder of the checkout,
#      built beforehand with `benchmarks/gpu_bundle.sh .gpu_bundle` on a machine with registry access and
#      carried with the checkout) is extracted to /tmp/tfkd-site and put on PYTHONPATH;
#   1. tests/test_gpu.py (graph steps = eager steps, no host sync per step, every zoo model on CUDA,
#      packed trials on CUDA streams, a forced out-of-memory trial beside one that goes on);
#   2. benchmarks/search_throughput.py: the real search (Ray Tune + MLflow, --gpus 1) with 1, 2, 4, 8
#      trials per GPU packed in one host process and 4 as one process each, side by side with the
#      classic pipeline and batch 512;
#   3. `tfkd-search train --seeds 2 --gpus 1` end to end on CIFAR-100-shaped files (seeds as Ray tasks).
# Each step is time-boxed with `timeout`; a failed step does not stop the next. Logs and JSON go to
# $OUT (default ./gpu-out) and the JSON also to benchmarks/results/. Env: MINUTES (GPU-busy minutes per
# search, default 0.5), PACKING (default "1 2 4 8"), PROCESSES (default "4"), SKIP_TESTS=1, SKIP_E2E=1.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
MINUTES=${MINUTES:-0.5}
PACKING=${PACKING:-1 2 4 8}
PROCESSES=${PROCESSES:-4}
PY=${PYTHON:-python3}
mkdir -p "$OUT" benchmarks/results
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s)
step() { echo "== $* ($(( $(date +%s) - T0 )) s)" | tee -a "$OUT/steps.txt"; }

step "0. bundle"
TAG=$($PY -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
BUNDLE=.gpu_bundle/tfkd-gpu-bundle-$TAG.tar.xz
if [ -f "$BUNDLE" ]; then
  rm -rf /tmp/tfkd-site && mkdir -p /tmp/tfkd-site
  timeout 120 tar -xJf "$BUNDLE" -C /tmp/tfkd-site && export PYTHONPATH="$PYTHONPATH:/tmp/tfkd-site/site"
  head -3 /tmp/tfkd-site/MANIFEST.txt | tee "$OUT/bundle.txt"
else
  echo "no $BUNDLE (build it with: benchmarks/gpu_bundle.sh .gpu_bundle); using what $PY has" | tee "$OUT/bundle.txt"
fi
timeout 120 $PY -c "import ray, optuna, mlflow, pydantic, yaml, filelock, sqlalchemy, alembic; from ray import tune
from mlflow.tracking import MlflowClient
print('ray', ray.__version__, 'optuna', optuna.__version__, 'mlflow', mlflow.__version__, 'pydantic', pydantic.__version__)" \
  2>&1 | tee -a "$OUT/bundle.txt"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
  nproc; } 2>&1 | tee "$OUT/gpu.txt"
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' /' '__')
GPU=${GPU:-unknown}

if [ "${SKIP_TESTS:-0}" != 1 ]; then
  step "1. tests/test_gpu.py"
  timeout 120 $PY -m pytest tests/test_gpu.py -q -p no:cacheprovider -o addopts="" 2>&1 | tail -25 \
    | tee "$OUT/test_gpu.log"
  cp "$OUT/test_gpu.log" "benchmarks/results/test_gpu-$GPU.log"
fi

step "2. search throughput"
$PY benchmarks/make_fake_cifar.py /tmp/fakecifar >/dev/null
# shellcheck disable=SC2086
timeout 390 $PY benchmarks/search_throughput.py --minutes "$MINUTES" --packing $PACKING --processes $PROCESSES \
  --data-dir /tmp/fakecifar --work /tmp/search-thr --search-timeout 120 \
  --json "$OUT/search_throughput.json" 2>&1 | tee "$OUT/search_throughput.log"
cp /tmp/search-thr/*.log "$OUT/" 2>/dev/null
[ -f "$OUT/search_throughput.json" ] && cp "$OUT/search_throughput.json" "benchmarks/results/search_throughput-$GPU.json"
cp "$OUT/search_throughput.log" "benchmarks/results/search_throughput-$GPU.log"

if [ "${SKIP_E2E:-0}" != 1 ]; then
  step "3. end to end train"
  timeout 90 $PY -m tfkd_search train --config benchmarks/e2e_resnet18_cifar100.yaml --seeds 2 --gpus 1 \
    --data-dir /tmp/fakecifar --no-mlflow --out /tmp/e2e 2>&1 | tail -20 | tee "$OUT/e2e.log"
fi
step "done"
