"""`tfkd-search train` for every method, on digits and on fake CIFAR-10 folders in the real format."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from _fakedata import make_fake_cifar10
from tfkd_search.cli import main

METHODS = ["ce", "lsr", "tfkd_reg", "kd", "tfkd_self"]


def _config(tmp_path, dataset: str, method: str, teacher: str | None) -> str:
    cfg = {"name": f"{dataset}-{method}", "model": "tiny_cnn", "method": method, "device": "cpu",
           "threads": 1, "data": {"dataset": dataset, "val_fraction": 0.2},
           "loss": {"tau": 4.0, "alpha": 0.5, "a": 0.9},
           "schedule": {"epochs": 2, "milestones": [1]}}
    if teacher:
        cfg["teacher"] = {"checkpoint": teacher}
    p = tmp_path / f"{dataset}-{method}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


@pytest.mark.parametrize("dataset", ["digits", "cifar10"])
def test_train_every_method(tmp_path, capsys, dataset) -> None:
    data_dir = tmp_path / "data"
    if dataset == "cifar10":
        make_fake_cifar10(data_dir)
    teacher = None
    for method in METHODS:
        out = tmp_path / "runs" / method
        args = ["train", "--config", _config(tmp_path, dataset, method, teacher), "--out", str(out),
                "--no-mlflow", "--data-dir", str(data_dir)]
        assert main(args) == 0, capsys.readouterr().err
        text = capsys.readouterr().out
        assert "epoch 2/2" in text and "summary:" in text
        assert "±" not in text  # one seed: a value, not a spread of one
        metrics = pd.read_parquet(out / "seed0" / "metrics.parquet")
        assert list(metrics["epoch"]) == [1, 2] and metrics["train_loss"].notna().all()
        summary = json.loads((out / "seed0" / "summary.json").read_text())
        assert summary["status"] == "completed"
        if method == "ce":
            teacher = str(out / "seed0" / "checkpoint.pt")  # the teacher of kd and tfkd_self
        if method in ("kd", "tfkd_self"):
            assert (metrics["train_kl"] > 0).all()


def test_train_resume_refuses_to_overwrite_and_continues(tmp_path, capsys) -> None:
    cfg = _config(tmp_path, "digits", "ce", None)
    out = tmp_path / "r"
    assert main(["train", "--config", cfg, "--out", str(out), "--no-mlflow"]) == 0
    capsys.readouterr()
    assert main(["train", "--config", cfg, "--out", str(out), "--no-mlflow"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--config", cfg, "--out", str(out), "--no-mlflow", "--resume",
                 "--set", "schedule.epochs=3", "--set", "schedule.milestones=[2]"]) == 0
    metrics = pd.read_parquet(out / "seed0" / "metrics.parquet")
    assert list(metrics["epoch"]) == [1, 2, 3]
