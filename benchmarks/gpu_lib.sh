# Shared by benchmarks/gpu_check.sh and benchmarks/gpu_trust.sh (sourced from the checkout's root, after
# they set OUT, WORK, PY and TOTAL): the step log, the time boxes, the bundle install, the machine facts.

mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s)

# step TEXT: a line in the log and in $OUT/steps.txt, with the seconds since the start
step() { echo "== $* ($(( $(date +%s) - T0 )) s)" | tee -a "$OUT/steps.txt"; }

# box SECONDS: a step's time box, cut to what is left of TOTAL (so the whole run ends inside the device
# tool's 600 s per command, with the files in $OUT written)
box() { local left=$(( TOTAL - ($(date +%s) - T0) )); [ "$left" -lt 10 ] && left=10; echo $(( $1 < left ? $1 : left )); }

# install_bundle ARCHIVE: extract a gpu_bundle.sh archive into $WORK and put its site/ on PYTHONPATH
install_bundle() {
  local dir="$WORK/$(basename "$1" .tar.xz)"
  if [ ! -f "$1" ]; then
    echo "no $1 (benchmarks/gpu_bundle.sh builds it); using what $PY has" | tee -a "$OUT/steps.txt"
    return 1
  fi
  rm -rf "$dir" && mkdir -p "$dir" && timeout 120 tar -xJf "$1" -C "$dir" || return 1
  export PYTHONPATH="$PYTHONPATH:$dir/site"
  head -1 "$dir/MANIFEST.txt" | tee -a "$OUT/steps.txt"
}

# machine_facts: the GPU, torch and CPU count in $OUT/steps.txt; sets GPU (a file-name tag, "cpu" if none)
machine_facts() {
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"
    $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__,
'cuda', torch.cuda.is_available())"
    echo "$(nproc) CPUs"; } 2>&1 | tee -a "$OUT/steps.txt"
  GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | sed 's/NVIDIA //' | tr ' /' '__')
  GPU=${GPU:-cpu}
}

PYTAG=$($PY -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
