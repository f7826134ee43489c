#!/usr/bin/env bash
# Every GPU check of the project in ONE run, for a lent GPU host that has Python 3.12 with torch,
# torchvision, numpy, pandas, pyarrow and nothing else (no package index). At most ~10 minutes:
#   0. install the bundle: .gpu_bundle/tfkd-gpu-bundle-cp<XY>.tar.xz (an ignored folder of the checkout,
#      built beforehand with `benchmarks/gpu_bundle.sh .gpu_bundle` on a machine with registry access and
#      carried with the checkout) is extracted to $WORK/site and put on PYTHONPATH;
#   1. tests/test_gpu.py (graph steps = eager steps, no host sync per step, every zoo model on CUDA,
#      packed trials on CUDA streams, a forced out-of-memory trial beside one that goes on, a user model
#      that breaks capture going on eagerly);
#   1b. `tfkd-search train` of that user model (benchmarks/byo_fallback.yaml): completes, says why once;
#   2. `tfkd-search train --seeds 2 --gpus 1` end to end on CIFAR-100-shaped files (seeds as Ray tasks);
#   3. benchmarks/search_throughput.py: the real search (Ray Tune + MLflow, --gpus 1) with 1, 2, 4, 8
#      trials per GPU packed in one host process and 4 as one process each, side by side with the
#      classic pipeline and batch 512 (with what time is left; its JSON is rewritten after every search).
# Each step is time-boxed with `timeout`, and all of them together by TOTAL (default 570 s); a failed step
# does not stop the next, and search_throughput.py rewrites its JSON after every search. Logs and JSON go to
# $OUT (default ./gpu-out; at most 8 files, what the device tool hands back) and the JSON also to
# benchmarks/results/. Env: MINUTES (GPU-busy minutes per
# search, default 0.5), PACKING (default "1 2 4 8"), PROCESSES (default "4"), SKIP_TESTS=1, SKIP_E2E=1,
# WORK (scratch folder, default /tmp/tfkd-gpu-check), PYTHON, SMOKE=1 (a CPU rehearsal: the search smoke of
# search_throughput.py, a 1-epoch tiny_cnn end-to-end train without --gpus; results stay in $OUT).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
MINUTES=${MINUTES:-0.5}
PACKING=${PACKING:-1 2 4 8}
PROCESSES=${PROCESSES:-4}
PY=${PYTHON:-python3}
SMOKE=${SMOKE:-0}
TOTAL=${TOTAL:-570}
WORK=${WORK:-/tmp/tfkd-gpu-check}
RESULTS=benchmarks/results
[ "$SMOKE" = 1 ] && RESULTS=$OUT
mkdir -p "$RESULTS"
source benchmarks/gpu_lib.sh

step "0. bundle"
install_bundle ".gpu_bundle/tfkd-gpu-bundle-$PYTAG.tar.xz"
timeout 120 $PY -c "import ray, optuna, mlflow, pydantic, yaml, filelock, sqlalchemy, alembic; from ray import tune
from mlflow.tracking import MlflowClient
print('ray', ray.__version__, 'optuna', optuna.__version__, 'mlflow', mlflow.__version__, 'pydantic', pydantic.__version__)" \
  2>&1 | tee -a "$OUT/steps.txt"
machine_facts

if [ "${SKIP_TESTS:-0}" != 1 ]; then
  step "1. tests/test_gpu.py"
  timeout "$(box 120)" $PY -m pytest tests/test_gpu.py -q -p no:cacheprovider -o addopts="" 2>&1 | tail -25 \
    | tee "$OUT/test_gpu.log"
  cp "$OUT/test_gpu.log" "$RESULTS/test_gpu-$GPU.log"
fi

step "1b. CUDA-graph fallback"
# a user model whose forward syncs with the host cannot be captured: the run goes on eagerly and says
# why once (on the CPU, SMOKE=1, there is no graph to fall back from)
timeout "$(box 60)" $PY -m tfkd_search train --config benchmarks/byo_fallback.yaml --code-dir tests/usermodels \
  --no-mlflow --out "$WORK/fallback" 2>&1 | tail -6 | tee "$OUT/fallback.log"
if grep -q "could not be captured in a CUDA graph" "$OUT/fallback.log"; then
  echo "fallback: the run went on eagerly and said why" | tee -a "$OUT/steps.txt"
else
  echo "fallback: no capture failure reported" | tee -a "$OUT/steps.txt"
fi

if [ "$SMOKE" = 1 ]; then
  $PY benchmarks/make_fake_cifar.py "$WORK/fakecifar" 600 120 >/dev/null
else
  $PY benchmarks/make_fake_cifar.py "$WORK/fakecifar" >/dev/null
fi

if [ "${SKIP_E2E:-0}" != 1 ]; then  # before the searches, which take what time is left
  step "2. end to end train"
  E2E_ARGS=(--gpus 1)
  [ "$SMOKE" = 1 ] && E2E_ARGS=(--set model=tiny_cnn --set schedule.budget=1)
  timeout "$(box 90)" $PY -m tfkd_search train --config benchmarks/e2e_resnet18_cifar100.yaml --seeds 2 "${E2E_ARGS[@]}" \
    --data-dir "$WORK/fakecifar" --no-mlflow --out "$WORK/e2e" 2>&1 | tail -20 | tee "$OUT/e2e.log"
fi

step "3. search throughput"
THR_ARGS=(--smoke)
# shellcheck disable=SC2206
[ "$SMOKE" = 1 ] || THR_ARGS=(--minutes "$MINUTES" --packing $PACKING --processes $PROCESSES --data-dir "$WORK/fakecifar")
timeout "$(box 390)" $PY benchmarks/search_throughput.py "${THR_ARGS[@]}" --work "$WORK/search-thr" --search-timeout 120 \
  --json "$OUT/search_throughput.json" 2>&1 | tee "$OUT/search_throughput.log"
# the searches' own logs as one file ($OUT hands back 8 files at most)
(cd "$WORK/search-thr" 2>/dev/null && tar -czf "$OUT/search_logs.tgz" ./*.log 2>/dev/null)
[ -f "$OUT/search_throughput.json" ] && cp "$OUT/search_throughput.json" "$RESULTS/search_throughput-$GPU.json"
cp "$OUT/search_throughput.log" "$RESULTS/search_throughput-$GPU.log"
step "done"
