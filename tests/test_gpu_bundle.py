"""benchmarks/gpu_bundle.sh (the offline package bundle for a bare GPU host) and the CPU smoke mode of
benchmarks/search_throughput.py. The cheap tests need no network; the bundle build itself downloads
~100 MB and runs only with TFKD_TEST_BUNDLE=1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest

from _proc import ROOT, cleanup, cli_env

SCRIPT = ROOT / "benchmarks" / "gpu_bundle.sh"


def _sh(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_help_and_rules() -> None:
    r = _sh("--help")
    assert r.returncode == 0 and "Usage: benchmarks/gpu_bundle.sh" in r.stdout and "--dry-run" in r.stdout
    rules = _sh("--print-rules").stdout
    for needle in ("dir ray/jars", "dir ray/rllib", "dir ray/serve", "dir ray/llm",
                   "dir ray/dashboard/client/build", "strip ray/core/src/ray/raylet/raylet",
                   "strip ray/core/src/ray/gcs/gcs_server"):
        assert needle in rules
    exclude = next(line for line in rules.splitlines() if line.startswith("exclude ")).split()[1:]
    assert {"torch", "torchvision", "numpy", "pandas", "pyarrow"} <= set(exclude)
    assert not {"ray", "optuna", "mlflow-skinny", "pydantic", "filelock", "pytest"} & set(exclude)
    assert _sh("--bogus", "x").returncode == 2 and _sh().returncode == 2


def _elf_so() -> Path | None:
    """A real ELF shared object to strip (PyYAML's C extension, or any in site-packages)."""
    site = Path(sysconfig.get_paths()["platlib"])
    for pattern in ("yaml/_yaml*.so", "markupsafe/_speedups*.so", "*/*.so"):
        found = sorted(site.glob(pattern))
        if found:
            return found[0]
    return None


@pytest.mark.skipif(shutil.which("strip") is None, reason="needs binutils' strip")
def test_prune_only_removes_the_listed_folders_and_strips(tmp_path) -> None:
    site = tmp_path / "site"
    keep = ["ray/tune/__init__.py", "ray/data/__init__.py", "mlflow/__init__.py", "ray/dashboard/x.py"]
    drop = ["ray/jars/a.jar", "ray/rllib/x.py", "ray/serve/x.py", "ray/llm/x.py",
            "ray/dashboard/client/build/index.html", "ray/tune/tests/test_x.py", "pkg/__pycache__/a.pyc",
            "pkg/stub.pyi"]
    for rel in keep + drop:
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text("x")
    so = _elf_so()
    assert so is not None, "no ELF shared object in site-packages to strip"
    shutil.copy(so, site / "mod.cpython-312-x86_64-linux-gnu.so")
    (site / "fake.so").write_text("not an ELF file")
    r = _sh("--prune-only", str(site))
    assert r.returncode == 0, r.stderr
    assert all((site / rel).exists() for rel in keep), r.stdout
    assert not any((site / rel).exists() for rel in drop), r.stdout
    assert "pruned ray/rllib/" in r.stdout and (site / "fake.so").read_text() == "not an ELF file"
    assert "stripped mod.cpython-312-x86_64-linux-gnu.so" in r.stdout
    assert (site / "mod.cpython-312-x86_64-linux-gnu.so").stat().st_size <= so.stat().st_size


BUNDLE_TESTS = os.environ.get("TFKD_TEST_BUNDLE") == "1"


@pytest.mark.slow
@pytest.mark.skipif(not BUNDLE_TESTS, reason="resolves from PyPI; set TFKD_TEST_BUNDLE=1")
def test_dry_run_lists_the_bundle(tmp_path) -> None:
    r = _sh("--dry-run", str(tmp_path), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    names = {line.split()[1].split("==")[0].lower() for line in r.stdout.splitlines()
             if line.startswith("bundle ")}
    host = {line.split()[2].split("==")[0].lower() for line in r.stdout.splitlines()
            if line.startswith("on host ")}
    assert {"ray", "optuna", "mlflow-skinny", "sqlalchemy", "alembic", "pydantic", "pyyaml", "filelock",
            "pytest"} <= names
    assert not {"torch", "numpy", "pandas", "pyarrow", "mlflow", "scikit-learn", "matplotlib",
                "flask", "scipy"} & names
    assert {"numpy", "pandas", "pyarrow"} <= host
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


# The host's own packages, taken from this interpreter's site-packages (what a GPU host has).
HOST = ["torch", "torchvision", "torchgen", "functorch", "numpy", "numpy.libs", "pandas", "pyarrow",
        "dateutil", "pytz", "tzdata", "six.py", "fsspec", "jinja2", "networkx", "sympy", "mpmath", "PIL",
        "pillow.libs", "nvidia", "triton", "torch.libs"]


def _bare_python(tmp_path: Path, bundle_site: Path) -> tuple[Path, dict]:
    """A venv without any package (no system site-packages) + PYTHONPATH = checkout, bundle, host set."""
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    host = tmp_path / "host"
    host.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for name in HOST:
        for p in [site / name, *site.glob(f"{name.split('.')[0]}-*.dist-info")]:
            if p.exists() and not (host / p.name).exists():
                (host / p.name).symlink_to(p)
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(bundle_site), str(host)])
    return venv / "bin" / "python", env


@pytest.mark.slow
@pytest.mark.skipif(not BUNDLE_TESTS, reason="downloads ~100 MB; set TFKD_TEST_BUNDLE=1")
def test_bundle_for_this_python_runs_a_search(tmp_path) -> None:
    """Build the bundle for this interpreter's version, extract it, and run a tiny real search with a
    Python that has nothing but the bundle and the host's packages."""
    env = dict(os.environ, PYVER=f"{sys.version_info[0]}.{sys.version_info[1]}", XZ_LEVEL="1", MAX_MB="200")
    r = _sh(str(tmp_path / "out"), env=env, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    archive = next((tmp_path / "out").glob("tfkd-gpu-bundle-cp*.tar.xz"))
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    py, penv = _bare_python(tmp_path, tmp_path / "x" / "site")
    check = subprocess.run([str(py), "-c", "import sklearn"], env=penv, capture_output=True, text=True)
    assert check.returncode != 0  # really bare: no scikit-learn
    code = ("import ray, optuna, mlflow, pydantic, yaml, filelock, sqlalchemy, alembic\n"
            "from ray import tune\nfrom ray.tune.search.optuna import OptunaSearch\n"
            "from mlflow.tracking import MlflowClient\nprint('ok', ray.__version__, mlflow.__version__)\n")
    check = subprocess.run([str(py), "-c", code], env=penv, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and "ok" in check.stdout, check.stderr[-3000:]
    out = tmp_path / "s.json"
    proc = subprocess.run([str(py), str(ROOT / "benchmarks" / "search_throughput.py"), "--smoke",
                           "--no-baseline", "--json", str(out)], env=penv, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads(out.read_text())["ok"]


@pytest.mark.slow
@pytest.mark.ray
def test_gpu_check_script_rehearses_on_the_cpu(tmp_path) -> None:
    """benchmarks/gpu_check.sh (issue #11's GPU run) end to end with SMOKE=1: tests/test_gpu.py (skipped
    here), the real search of search_throughput.py's smoke (packed, embedded Ray), the end-to-end train."""
    out = tmp_path / "out"
    env = dict(cli_env(), SMOKE="1", OUT=str(out), WORK=str(tmp_path / "w"), PYTHON=sys.executable)
    proc = subprocess.Popen(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        text, _ = proc.communicate(timeout=500)
    finally:
        cleanup(env, proc.pid)
    assert proc.returncode == 0, text[-4000:]
    steps = (out / "steps.txt").read_text()
    assert all(f"== {n}." in steps for n in (0, 1, 2, 3)) and "== done" in steps
    assert steps.index("end to end") < steps.index("search throughput")  # the searches take what is left
    assert "skipped" in (out / "test_gpu.log").read_text()  # no CUDA here
    data = json.loads((out / "search_throughput-cpu.json").read_text())
    assert data["ok"] and data["smoke"] and data["device"] == "cpu" and data["planned"] == 1
    assert [r["mode"] for r in data["baseline"]][0].startswith("classic")
    (s,) = data["searches"]  # the smoke runs the packed search (one host process) only
    assert s["packed"] and s["returncode"] == 0 and s["trials"] == 2 and s["images_per_s"] > 0
    assert s["first_epoch_s"] is not None and s["first_epoch_s"] > 0
    assert s["overhead_fraction"] is not None  # from Ray's result.json (2 epochs per trial)
    assert s["gpu_busy"] is None and s["peak_mib"] is None  # no nvidia-smi on a CPU machine
    log = (out / "search_throughput.log").read_text()
    assert "vs classic" in log and "search 2 trials/GPU, packed" in log
    assert "summary: 2 run(s), seeds [0, 1]" in (out / "e2e.log").read_text()
