"""Both benchmarks run on a CPU with small settings and print their tables (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from _proc import ROOT, cleanup, cli_env


def _run(script: str, tmp_path, *extra: str) -> tuple[str, dict]:
    out = tmp_path / "result.json"
    env = cli_env()
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / script), "--small", "--json",
                             str(out), *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        text, _ = proc.communicate(timeout=400)
    finally:
        cleanup(env, proc.pid)
    assert proc.returncode == 0, text[-3000:]
    return text, json.loads(out.read_text())


def test_throughput_benchmark_runs_on_cpu(tmp_path) -> None:
    text, data = _run("throughput.py", tmp_path)
    assert "vs classic" in text and "targets" in text
    modes = [r["mode"] for r in data["rows"]]
    assert modes[0].startswith("classic") and "ours eager" in modes
    assert any("processes" in m for m in modes)
    assert all(r["images_per_s"] > 0 for r in data["rows"])


@pytest.mark.ray
def test_search_efficiency_benchmark_runs_on_cpu(tmp_path) -> None:
    text, data = _run("search_efficiency.py", tmp_path)
    assert "full grid" in text and "sync halving" in text and "async ASHA" in text
    full, sync, asynchronous = data["rows"]
    assert full["trial_epochs"] == full["trials"] * 3
    assert sync["trial_epochs"] < full["trial_epochs"]
    assert asynchronous["trial_epochs"] <= full["trial_epochs"]
    assert 0 < full["best_val_acc"] <= 1 and 0 < sync["winner_score"] <= 1
