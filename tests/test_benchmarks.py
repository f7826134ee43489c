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


def _fake_npz(path, n_per_class: int, classes: int = 10, seed: int = 0):
    """An .npz in the development copy's format: JPEG files concatenated, offsets, labels, names."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes, dtype=np.uint8), n_per_class)
    images = rng.integers(0, 256, (len(y), 32, 32, 3), dtype=np.uint8)
    files = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=75)
        files.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in files])]).astype(np.int64)
    np.savez(path, blob=np.concatenate(files), offsets=offsets, y=y,
             class_names=np.array([f"class{c}" for c in range(classes)]))
    return y


def test_cifar10_dev_unpacks_a_stratified_stand_in_that_the_loader_reads(tmp_path) -> None:
    import numpy as np

    from tfkd_search.data import load_splits

    ya = _fake_npz(tmp_path / "a.npz", 6, seed=0)
    yb = _fake_npz(tmp_path / "b.npz", 4, seed=1)
    script = str(ROOT / "benchmarks" / "cifar10_dev.py")
    r = subprocess.run([sys.executable, script, str(tmp_path / "out"), "--npz", str(tmp_path / "a.npz"),
                        str(tmp_path / "b.npz"), "--test-fraction", "0.3"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "70 train, 30 stand-in test" in r.stdout  # 3 of each class's 10 held out
    s = load_splits("cifar10", tmp_path / "out", val_fraction=0.0, split_seed=0, with_test=True,
                    download=False, synthetic_size=0)
    assert s.train_x.shape == (70, 3, 32, 32) and s.test_x.shape == (30, 3, 32, 32)
    assert np.bincount(s.test_y.numpy()).tolist() == [3] * 10
    assert sorted(s.train_y.tolist() + s.test_y.tolist()) == sorted(ya.tolist() + yb.tolist())
    # no image is in both splits
    train = {bytes(x.numpy().tobytes()) for x in s.train_x}
    assert not any(bytes(x.numpy().tobytes()) in train for x in s.test_x)

    r = subprocess.run([sys.executable, script, str(tmp_path / "small"), "--npz", str(tmp_path / "a.npz"),
                        str(tmp_path / "b.npz"), "--per-class", "4", "--test-fraction", "0.5"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "20 train, 20 stand-in test" in r.stdout, r.stderr
    small = load_splits("cifar10", tmp_path / "small", val_fraction=0.0, split_seed=0, with_test=True,
                        download=False, synthetic_size=0)
    assert np.bincount(small.train_y.numpy()).tolist() == [2] * 10

    bad = subprocess.run([sys.executable, script, str(tmp_path / "o2"), "--npz", str(tmp_path / "nope.npz")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "nope.npz" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_gpu_trust_script_rehearses_on_the_cpu(tmp_path) -> None:
    """benchmarks/gpu_trust.sh (issue #10's GPU run) end to end with SMOKE=1 on small fake JPEG halves:
    unpacking, the accuracy runs at both precisions, the curves recording, the files it hands back."""
    import pandas as pd

    data = tmp_path / "data"
    data.mkdir()
    _fake_npz(data / "cifar10_train_jpeg_a.npz", 10, seed=0)
    _fake_npz(data / "cifar10_train_jpeg_b.npz", 10, seed=1)
    out = tmp_path / "out"
    env = dict(cli_env(), SMOKE="1", DATA=str(data), OUT=str(out), WORK=str(tmp_path / "work"),
               PYTHON=sys.executable)
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_trust.sh")], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    steps = (out / "steps.txt").read_text()
    assert "160 train, 40 stand-in test" in steps and "100 train, 100 stand-in test" in steps
    assert "== done" in steps and "without packing" not in steps
    acc = json.loads((out / "accuracy-cifar10-resnet18-cpu.json").read_text())
    assert [run["precision"] for run in acc["runs"]] == ["fp32", "bf16"]
    assert all(run["status"] == "completed" and run["epochs"] == 2 for run in acc["runs"])
    assert acc["checks"]["gap"] is not None and acc["packed"] == 2
    curves = pd.read_parquet(out / "curves-cifar10-resnet18.parquet")
    assert curves["config_id"].nunique() == 2 and sorted(curves["seed"].unique()) == [0, 1]
    assert len(curves) == 2 * 2 * 2 and curves["test_acc"].notna().all()
    assert (out / "curves-resnet18.log").read_text().count("completed") == 4
    assert "3. curves with 6 seeds" not in steps

    # STEPS=seeds: the finalists issue's 6-seed curves alone, with per-image validation results
    out2 = tmp_path / "out2"
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_trust.sh")], env={**env, "OUT": str(out2),
                       "STEPS": "seeds"}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    steps = (out2 / "steps.txt").read_text()
    assert "3. curves with 6 seeds" in steps and "1. accuracy" not in steps and "2. curves" not in steps
    assert "160 train" not in steps and "100 train, 100 stand-in test" in steps
    seeds = pd.read_parquet(out2 / "curves-cifar10-resnet18-seeds.parquet")
    assert seeds["config_id"].nunique() == 2 and sorted(seeds["seed"].unique()) == [0, 1, 2, 3, 4, 5]
    last = seeds[seeds["epoch"] == 2]
    assert len(last) == 12 and last["val_correct"].str.startswith("20:").all()
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_trust.sh")], env={**env, "STEPS": "seed"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown step 'seed'" in r.stderr


def test_imagefolder_load_benchmark_runs_on_fake_halves(tmp_path) -> None:
    """benchmarks/imagefolder_load.py on two small fake halves: the folder and torchvision copies are
    written, the four loads timed, the decoded pixels equal Pillow's, the table and JSON written."""
    data = tmp_path / "data"
    data.mkdir()
    _fake_npz(data / "cifar10_train_jpeg_a.npz", 4, seed=0)
    _fake_npz(data / "cifar10_train_jpeg_b.npz", 4, seed=1)
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "imagefolder_load.py"), "--data",
                        str(data), "--work", str(tmp_path / "work"), "--repeats", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=300, env=dict(
                           cli_env(), XDG_CACHE_HOME=str(tmp_path / "xdg")))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "built-in cifar10 loader" in r.stdout and "targets: cached load" in r.stdout
    result = json.loads(out.read_text())
    assert result["images"] == 80 and result["train"] == 72 and result["val"] == 8
    assert [row["what"].split(",")[0] for row in result["rows"]] == [
        "plain Pillow loop (one thread)", "imagefolder", "imagefolder", "built-in cifar10 loader (median)"]
    assert all(row["seconds"] > 0 for row in result["rows"])
    assert result["checks"]["same_pixels_as_pillow"] is True
    assert len(list((tmp_path / "work" / "imagefolder" / "train").glob("*/*.jpg"))) == 80
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "imagefolder_load.py"), "--data",
                          str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "cifar10_train_jpeg_a.npz" in bad.stderr
