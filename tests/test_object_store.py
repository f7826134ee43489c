"""--storage s3://...: Ray keeps its state in the bucket, our results are written locally and copied
there. Runs against a real S3 API (moto's server on 127.0.0.1), with resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest
import yaml

from _proc import cleanup, cli_env, free_port, port_open, run_cli, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def s3(tmp_path):
    port = free_port()
    env = cli_env({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1"})
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                               "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    query = f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"

    try:
        wait_for(lambda: port_open(port), 60, what="moto S3 server")
        fs, _ = pafs.FileSystem.from_uri(f"s3://tfkd?{query}&allow_bucket_creation=true")
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[key]
        fs.create_dir("tfkd")
        yield fs, f"s3://tfkd/runs?{query}", env
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        cleanup(env, server.pid)


def test_search_with_s3_storage_writes_results_locally_and_to_the_bucket(tmp_path, s3) -> None:
    fs, uri, env = s3
    env["TFKD_RESULTS_DIR"] = str(tmp_path / "local")
    space = tmp_path / "s.yaml"
    space.write_text(yaml.safe_dump({
        "name": "s3run",
        "base": {"model": "tiny_cnn", "method": "tfkd_reg", "data": {"dataset": "digits"},
                 "schedule": {"epochs": 2, "milestones": [1]}},
        "search": {"params": {"loss.tau": {"kind": "grid", "values": [1.0, 4.0]}},
                   "scheduler": {"kind": "none"}, "resources": {"cpu": 1, "gpu": 0},
                   # one finalist and the baselines on one fresh seed: the stage's Tune
                   # experiment in the bucket too
                   "finalists": {"top": 1, "seeds": 1}}}))
    res = run_cli(["--space", str(space), "--storage", uri], env, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "results copied to s3://tfkd/runs/s3run" in res.stdout
    local = tmp_path / "local" / "s3run"
    trials = pd.read_parquet(local / "trials.parquet")
    assert sorted(trials["loss.tau"]) == [1.0, 4.0] and set(trials["status"]) == {"completed"}
    assert (local / "best" / "rank1.yaml").exists()
    names = {Path(i.path).name for i in fs.get_file_info(pafs.FileSelector("tfkd/runs/s3run"))}
    assert {"trials.parquet", "history.parquet", "best", "report", "tuner.pkl"} <= names
    assert any(n.startswith("trial_") for n in names)  # Ray's checkpoints live in the bucket
    # the finalists stage: its Tune experiment in the bucket, its table beside the others
    assert {"finalists", "finalists.parquet"} <= names
    fin = pd.read_parquet(local / "finalists.parquet")
    assert sorted(fin["name"]) == ["ce", "finalist1", "lsr"] and set(fin["seed"]) == {1}
    assert set(fin["status"]) == {"completed"}
    assert (local / "best" / "baseline-ce.yaml").exists()
    with fs.open_input_file("tfkd/runs/s3run/trials.parquet") as f:
        assert len(pd.read_parquet(f)) == 2
    # the same name again is refused, and --resume of a finished search re-runs nothing
    res = run_cli(["--space", str(space), "--storage", uri], env, timeout=120, cwd=tmp_path)
    assert res.returncode == 2 and "--resume" in res.stderr
    res = run_cli(["--space", str(space), "--storage", uri, "--resume"], env, timeout=300,
                  cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    again = pd.read_parquet(local / "trials.parquet")
    assert sorted(again["trial_id"]) == sorted(trials["trial_id"])
