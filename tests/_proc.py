"""Run the real CLI in a subprocess and clean up every process it started (by PID)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import socket

ROOT = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).parent / "tfkd-search"
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tfkd_search"]


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # a short, private Ray temp dir per run (AF_UNIX paths are limited to 107 bytes)
    env["TFKD_RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def kill_tree(pids: set[int]) -> None:
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def ray_processes(tmpdir: str) -> set[int]:
    """Processes of the Ray instance that lives under `tmpdir` (and their children)."""
    found: set[int] = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(tmpdir in part for part in (p.info["cmdline"] or [])):
                found.add(p.pid)
                found.update(c.pid for c in p.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def descendants(pid: int) -> set[int]:
    try:
        return {c.pid for c in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def cleanup(env: dict[str, str], pid: int | None = None) -> None:
    pids = ray_processes(env["TFKD_RAY_TMPDIR"])
    if pid is not None:
        pids |= descendants(pid) | {pid}
    kill_tree(pids)


def run_cli(args: list[str], env: dict[str, str], timeout: float = 600, cwd: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen([*CLI, *args], env=env, cwd=cwd or ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        cleanup(env, proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def start_cli(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    f = open(log, "wb")  # noqa: SIM115 - closed by the OS when the process ends
    return subprocess.Popen([*CLI, *args], env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                            start_new_session=True)


def sigkill_driver(proc: subprocess.Popen[bytes], env: dict[str, str]) -> None:
    """SIGKILL the driver, then everything it started (as if its machine went down)."""
    pids = descendants(proc.pid) | ray_processes(env["TFKD_RAY_TMPDIR"])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    kill_tree(pids)


def result_lines(trial_dir: Path) -> list[dict]:
    """The epoch results a Ray Tune trial folder holds so far (its result.json, one JSON per line)."""
    f = trial_dir / "result.json"
    if not f.exists():
        return []
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def search_runs(uri: str, experiment: str) -> tuple[object, list]:
    """The one parent run of a search and its child runs, read back through MLflow's client."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("tfkd.role") == "search"]
    assert len(parents) == 1, [r.data.tags for r in runs]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], kids
