#!/usr/bin/env bash
# Build ONE archive of every Python package that a bare GPU host (Python + torch, torchvision, numpy,
# pandas, pyarrow, and no package index) lacks to run the real search from a checkout:
#   python -m tfkd_search.cli --space SPACE --gpus 1     (PYTHONPATH=checkout:bundle)
# i.e. ray[tune] (embedded local Ray), optuna, MLflow tracking on SQLite (mlflow-skinny + SQLAlchemy +
# alembic: no scikit-learn/scipy/matplotlib/flask), pydantic, PyYAML, filelock, pytest (for
# tests/test_gpu.py), and their dependencies, for one CPython version on manylinux x86_64.
#
# With --minimal: only what the trainer and benchmarks/curves.py need beyond the host's packages
# (pydantic, PyYAML), for benchmarks/gpu_trust.sh: tfkd-gpu-bundle-min-cp<XY>.tar.xz, about 2 MB.
#
# Usage: benchmarks/gpu_bundle.sh [--dry-run] [--minimal] [--keep DIR] OUT_DIR
#        benchmarks/gpu_bundle.sh --prune-only SITE_DIR     (apply the prune + strip rules to a folder)
#        benchmarks/gpu_bundle.sh --print-rules             (print the prune rules and the excluded names)
#   --dry-run   resolve the set (wheel metadata only, no wheel downloads) and list what would go in
#   --minimal   pydantic and PyYAML only (the trainer without Ray, Optuna or MLflow)
#   --keep DIR  keep the downloaded wheels in DIR (reused on the next run)
# Environment: PYVER (default 3.12), PLATFORMS (default "manylinux_2_28_x86_64 manylinux2014_x86_64
#   manylinux_2_17_x86_64"), PYTHON (default python3: the interpreter whose pip resolves; needs pip>=23),
#   EXTRA_REQS (more requirements, space separated), MAX_MB (default 40: fail above it), XZ_LEVEL (9).
# Writes OUT_DIR/tfkd-gpu-bundle[-min]-cp<XY>.tar.xz holding site/ (a site-packages folder) and MANIFEST.txt.
# Install on the host (what benchmarks/gpu_check.sh does, bundle in the checkout's ignored .gpu_bundle/):
#   mkdir -p /tmp/tfkd-site && tar -xJf .gpu_bundle/tfkd-gpu-bundle-cp312.tar.xz -C /tmp/tfkd-site
#   export PYTHONPATH=$PWD:/tmp/tfkd-site/site
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-python3}
PYVER=${PYVER:-3.12}
PLATFORMS=${PLATFORMS:-"manylinux_2_28_x86_64 manylinux2014_x86_64 manylinux_2_17_x86_64"}
MAX_MB=${MAX_MB:-40}
REQS="ray[tune] optuna mlflow-skinny sqlalchemy alembic pydantic>=2 PyYAML filelock pytest pluggy iniconfig packaging pytest-timeout ${EXTRA_REQS:-}"
# On the host already (torch, torchvision, numpy, pandas, pyarrow and their own dependencies): never bundled.
EXCLUDE="torch torchvision numpy pandas pyarrow python-dateutil six pytz tzdata jinja2 networkx sympy mpmath setuptools pillow triton nvidia-*"

# Prune rules, one per line: 'dir PATH' deletes a folder of site/, 'glob PATTERN' deletes matching files
# anywhere, 'strip PATH' strips a native binary (all ELF *.so are stripped too).
read -r -d '' RULES <<'EOF' || true
dir ray/jars
dir ray/rllib
dir ray/serve
dir ray/llm
dir ray/dashboard/client/build
dir ray/tests
dir ray/tune/tests
dir ray/train/tests
dir ray/data/tests
dir ray/air/tests
dir ray/util/collective/tests
dir mlflow/server/js
dir bin
dir share
glob __pycache__
glob *.pyc
glob *.pyi
strip ray/core/src/ray/raylet/raylet
strip ray/core/src/ray/gcs/gcs_server
EOF

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; }

prune() {  # prune SITE_DIR: apply RULES, strip ELF binaries; prints what it removed/stripped
  local site=$1 kind path
  while read -r kind path; do
    [ -n "$kind" ] || continue
    case $kind in
      dir) if [ -d "$site/$path" ]; then echo "pruned $path/"; rm -rf "${site:?}/$path"; fi ;;
      glob) find "$site" -depth -name "$path" -exec rm -rf {} + 2>/dev/null || true ;;
      strip) if [ -f "$site/$path" ]; then strip "$site/$path" && echo "stripped $path"; fi ;;
    esac
  done <<<"$RULES"
  # every ELF shared object: symbols are not needed to run (only .dynsym is)
  while IFS= read -r -d '' so; do
    if head -c 4 "$so" | grep -q $'\x7fELF'; then
      strip --strip-unneeded "$so" 2>/dev/null && echo "stripped ${so#"$site"/}" || echo "kept ${so#"$site"/} (strip failed)"
    fi
  done < <(find "$site" -name '*.so*' -type f -print0)
}

DRY=0 KEEP="" MINIMAL=0
case ${1:-} in
  -h|--help) usage; exit 0 ;;
  --print-rules) echo "$RULES"; echo "exclude $EXCLUDE"; exit 0 ;;
  --prune-only) [ $# -eq 2 ] || { usage >&2; exit 2; }; prune "$2"; exit 0 ;;
esac
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1; shift ;;
    --minimal) MINIMAL=1; shift ;;
    --keep) KEEP=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -eq 1 ] || { usage >&2; exit 2; }
OUT=$1
[ "$MINIMAL" = 1 ] && REQS="pydantic>=2 PyYAML ${EXTRA_REQS:-}"
NAME=tfkd-gpu-bundle$([ "$MINIMAL" = 1 ] && echo -min)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
TAG=cp${PYVER/./}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tfkd-bundle.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
PLAT_ARGS=()
for p in $PLATFORMS; do PLAT_ARGS+=(--platform "$p"); done
TARGET_ARGS=(--only-binary=:all: --python-version "$PYVER" --implementation cp --abi "$TAG" "${PLAT_ARGS[@]}")

echo "== resolving for $TAG (${PLATFORMS}): $REQS" >&2
# shellcheck disable=SC2086
"$PYTHON" -m pip install --dry-run --ignore-installed --quiet --disable-pip-version-check \
  --report "$WORK/report.json" --target "$WORK/none" "${TARGET_ARGS[@]}" $REQS 2> >(grep -v "is ignored: it is neither" >&2)

# the resolved set minus the host's packages -> WORK/pins (name==version) and a printed listing
"$PYTHON" - "$WORK/report.json" "$EXCLUDE" "$WORK/pins" <<'PY'
import fnmatch, json, re, sys
report, exclude, pins = sys.argv[1], sys.argv[2].split(), sys.argv[3]
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
keep, skip = [], []
for item in json.load(open(report))["install"]:
    name, ver = item["metadata"]["name"], item["metadata"]["version"]
    wheel = item["download_info"]["url"].rsplit("/", 1)[-1]
    (skip if any(fnmatch.fnmatch(norm(name), norm(p)) for p in exclude) else keep).append((name, ver, wheel))
for name, ver, wheel in sorted(keep, key=lambda t: norm(t[0])):
    print(f"bundle   {name}=={ver}  {wheel}")
for name, ver, _ in sorted(skip, key=lambda t: norm(t[0])):
    print(f"on host  {name}=={ver}")
open(pins, "w").write("".join(f"{n}=={v}\n" for n, v, _ in keep))
print(f"{len(keep)} packages to bundle, {len(skip)} left to the host", file=sys.stderr)
PY
if [ "$DRY" = 1 ]; then
  echo "== prune rules:"; echo "$RULES"
  exit 0
fi

WHEELS=${KEEP:-$WORK/wheels}
mkdir -p "$WHEELS"
echo "== downloading into $WHEELS" >&2
"$PYTHON" -m pip download --no-deps --quiet --disable-pip-version-check -d "$WHEELS" "${TARGET_ARGS[@]}" \
  -r "$WORK/pins" 2> >(grep -v "is ignored: it is neither" >&2)

echo "== unpacking" >&2
SITE=$WORK/bundle/site
mkdir -p "$SITE"
"$PYTHON" - "$WHEELS" "$WORK/pins" "$SITE" <<'PY'
import re, shutil, sys, zipfile
from pathlib import Path
wheels, pins, site = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
norm = lambda s: re.sub(r"[-_.]+", "_", s).lower()
want = {norm(l.split("==")[0]): l.split("==")[1].strip() for l in open(pins) if l.strip()}
done = set()
for whl in sorted(wheels.glob("*.whl")):
    name, ver = whl.name.split("-")[:2]
    if norm(name) not in want or want[norm(name)] != ver:
        continue  # a stale wheel of --keep
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            parts = info.filename.split("/")
            if parts[0].endswith(".data"):  # purelib/platlib go in site/, scripts/headers/data are dropped
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                parts = parts[2:]
            dest = site.joinpath(*parts)
            if info.is_dir():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
            mode = info.external_attr >> 16
            if mode & 0o111:
                dest.chmod(0o755)
    done.add(norm(name))
missing = set(want) - done
if missing:
    sys.exit(f"missing wheels: {sorted(missing)}")
PY
du -sm "$SITE" | awk '{print "unpacked: " $1 " MB"}' >&2
prune "$SITE" >"$WORK/pruned.txt"
grep -c . "$WORK/pruned.txt" | awk '{print "prune/strip actions: " $1}' >&2
du -sm "$SITE" | awk '{print "after prune + strip: " $1 " MB"}' >&2
{
  echo "$NAME $TAG (${PLATFORMS}) built $(date -u +%FT%TZ)"
  echo "install: tar -xJf THIS -C DIR && export PYTHONPATH=CHECKOUT:DIR/site"
  echo "left to the host: $EXCLUDE"
  sed 's/^/bundle /' "$WORK/pins"
  cat "$WORK/pruned.txt"
} >"$WORK/bundle/MANIFEST.txt"
ARCHIVE=$OUT/$NAME-$TAG.tar.xz
echo "== compressing $ARCHIVE" >&2
tar -C "$WORK/bundle" -cf - site MANIFEST.txt | xz -T0 "-${XZ_LEVEL:-9}" >"$ARCHIVE.tmp"
mv "$ARCHIVE.tmp" "$ARCHIVE"
SIZE=$(( $(stat -c %s "$ARCHIVE") / 1000000 ))
echo "$ARCHIVE: $SIZE MB (limit $MAX_MB MB)"
[ "$SIZE" -le "$MAX_MB" ] || { echo "bundle too big: $SIZE MB > $MAX_MB MB" >&2; exit 1; }
