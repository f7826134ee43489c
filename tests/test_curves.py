"""benchmarks/curves.py records learning curves: packed in one process (the GPU default) and in worker
processes the numbers are the same on the CPU, a rerun continues a recording, a bad --set is one message."""

from __future__ import annotations

import subprocess
import sys

import pytest

from _proc import ROOT, cli_env

SPEC = ROOT / "benchmarks" / "curves_digits_tiny_cnn.yaml"
SMALL = ["--limit", "2", "--set", "schedule.budget=3"]


def _curves(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "curves.py"), str(SPEC), *SMALL, *args],
                          env=cli_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reader():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import curves

    return curves.read_curves


@pytest.mark.slow
def test_packed_and_worker_recordings_agree_and_a_rerun_continues(tmp_path, reader) -> None:
    packed, workers = tmp_path / "packed.parquet", tmp_path / "workers.parquet"
    r = _curves("--seeds", "1", "--pack", "2", "--out", str(packed))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 trials packed in one process" in r.stdout
    r = _curves("--seeds", "2", "--pack", "2", "--out", str(packed))  # continues: seed 1 only
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 trials to train (2 recorded)" in r.stdout
    r = _curves("--seeds", "2", "--pack", "0", "--workers", "1", "--out", str(workers))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "1 worker processes" in r.stdout

    a, meta_a = reader(packed)
    b, meta_b = reader(workers)
    assert meta_a["packed"] == 2 and meta_b["packed"] == 0 and meta_a["budget"] == 3
    key = ["config_id", "seed", "epoch"]
    a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    assert len(a) == 2 * 2 * 3 and a["config_id"].nunique() == 2
    same = [c for c in a.columns if c != "epoch_seconds"]
    assert a[same].equals(b[same]), (a[same].compare(b[same]))
    assert a["val_acc"].nunique() > 1 and a["test_acc"].notna().all()

    # a copy of a wider recording, rerun with a narrower spec: nothing trained, only its configs kept
    narrow = tmp_path / "narrow.parquet"
    narrow.write_bytes(workers.read_bytes())
    r = _curves("--seeds", "2", "--limit", "1", "--out", str(narrow))
    assert r.returncode == 0 and "nothing to train" in r.stdout, r.stderr[-3000:]
    c, _ = reader(narrow)
    assert c["config_id"].nunique() == 1 and set(c["config_id"]) < set(b["config_id"])
    kept = b[b["config_id"].isin(set(c["config_id"]))].reset_index(drop=True)
    assert c.sort_values(key).reset_index(drop=True)[same].equals(kept[same])


def test_a_bad_override_is_one_message(tmp_path) -> None:
    r = _curves("--set", "schedule.budget=-1", "--out", str(tmp_path / "x.parquet"))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "schedule.budget" in r.stderr and "-1" in r.stderr


@pytest.mark.parametrize("spec", ["curves_digits_tiny_cnn.yaml", "curves_digits_tiny_cnn_wide.yaml",
                                  "curves_cifar10_tiny_cnn.yaml",
                                  "curves_cifar10_tiny_cnn_mix.yaml"])
def test_each_shipped_recording_holds_every_config_of_its_spec_on_every_seed(spec, reader) -> None:
    """The replays in the README read these files: each must hold the whole grid its YAML names, every
    seed and every epoch of the budget (a recording cut short would replay a smaller grid)."""
    import curves

    s = curves.load_spec(ROOT / "benchmarks" / spec, {})
    df, meta = reader(s["out"])
    want = {c["id"] for c in s["configs"]}
    assert set(df["config_id"]) == want
    per = df.groupby(["config_id", "seed"])["epoch"].agg(["count", "max"])
    assert len(per) == len(want) * len(s["seeds"]) and set(df["seed"]) == set(s["seeds"])
    assert (per["count"] == meta["budget"]).all() and (per["max"] == meta["budget"]).all()
    # recorded with every run's per-image validation results at its last epoch
    size = "288:" if "digits" in spec else "5000:"
    last = df[df["epoch"] == meta["budget"]]
    assert last["val_correct"].map(lambda c: isinstance(c, str) and c.startswith(size)).all()


def test_the_wide_digits_recording_repeats_the_narrow_one_row_for_row(reader) -> None:
    """The 35 configs both recordings hold are the same runs (training is deterministic on the CPU):
    equal in every column but the epoch times, per-image validation results included."""
    narrow, _ = reader(ROOT / "benchmarks" / "results" / "curves-digits-tiny_cnn.parquet")
    wide, _ = reader(ROOT / "benchmarks" / "results" / "curves-digits-tiny_cnn-wide.parquet")
    key = ["config_id", "seed", "epoch"]
    shared = wide[wide["config_id"].isin(set(narrow["config_id"]))]
    assert shared["config_id"].nunique() == narrow["config_id"].nunique() == 35
    cols = [c for c in narrow.columns if c in wide.columns and c != "epoch_seconds"]
    assert "val_correct" in cols
    a = narrow[cols].sort_values(key).reset_index(drop=True)
    b = shared[cols].sort_values(key).reset_index(drop=True)
    assert a.equals(b)
    assert wide["config_id"].nunique() == 75


def test_the_cifar10_recording_is_the_mix_recordings_14_configs(reader) -> None:
    """Both CIFAR-10 files hold the same runs of their 14 shared configs (one recording, one trainer)."""
    small, _ = reader(ROOT / "benchmarks" / "results" / "curves-cifar10-tiny_cnn.parquet")
    mix, _ = reader(ROOT / "benchmarks" / "results" / "curves-cifar10-tiny_cnn-mix.parquet")
    key = ["config_id", "seed", "epoch"]
    shared = mix[mix["config_id"].isin(set(small["config_id"]))]
    assert small["config_id"].nunique() == 14 and mix["config_id"].nunique() == 18
    cols = [c for c in small.columns if c in mix.columns]
    assert small[cols].sort_values(key).reset_index(drop=True).equals(shared[cols].sort_values(key)
                                                                       .reset_index(drop=True))
