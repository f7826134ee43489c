"""Faults: nothing computed is lost, and nothing unsafe runs.

* a trial that raises is retried up to search.max_failures, then marked errored (trials.parquet
  `error`, MLflow FAILED + tfkd.error) while the search completes the others, exit 0;
* a diverging trial is marked diverged and the search goes on;
* the driver SIGKILLed at three different moments, then --resume: every grid point exactly once,
  finished trials kept as they were;
* Ctrl-C (SIGINT to the driver's process group, as a terminal sends it) mid-search: exit 130 with
  the command that continues it, no traceback; twice interrupted and resumed, the search ends with
  every trial and the same rung decisions an uninterrupted one takes;
* atomic writes leave the previous file whole; YAML and checkpoints are loaded safely;
* no secret from the environment reaches MLflow or the exported configs; an embedded Ray listens
  on loopback only.

Code review (not run, no GPU here): torch.cuda.OutOfMemoryError is a RuntimeError; run_trial does not
catch it, so Ray Tune retries the trial from its last checkpoint like any other exception
(FailureConfig(max_failures=search.max_failures)) and then marks it errored.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch
import yaml

from _proc import (ROOT, cleanup, cli_env, descendants, ray_processes, result_lines, run_cli,
                   search_runs, sigkill_driver, start_cli, wait_for)
from _spaces import base_cfg, grid_params, search_block, write_space
from tfkd_search.io import atomic_torch_save, atomic_write_bytes, atomic_write_parquet

# ------------------------------------------------------------------------------------------------
# Atomic writes (in-process: real failures, no mocks)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_torch_save_failure_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    atomic_torch_save({"epoch": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()
    with pytest.raises(Exception):  # a lambda cannot be pickled: serialisation fails half-way
        atomic_torch_save({"epoch": 2, "w": torch.zeros(3), "fn": lambda: 0}, path)
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert _leftovers(tmp_path) == []


def test_atomic_write_failure_mid_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    atomic_write_bytes(path, b'{"ok": 1}')
    with pytest.raises(TypeError):  # fails inside the write, after the temp file exists
        atomic_write_bytes(path, "text is not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b'{"ok": 1}'
    with pytest.raises(Exception):  # parquet cannot hold a column of mixed types
        atomic_write_parquet(pd.DataFrame({"x": [0.1, "1e8"]}), tmp_path / "summary.json")
    assert path.read_bytes() == b'{"ok": 1}'
    assert _leftovers(tmp_path) == []


def test_atomic_files_get_normal_permissions(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    os.umask(mask)
    path = tmp_path / "config.yaml"
    atomic_write_bytes(path, b"a: 1\n")
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600
    path.chmod(0o640)
    atomic_write_bytes(path, b"a: 2\n")
    assert path.stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode


_WRITER = """
import sys
from tfkd_search.io import atomic_write_bytes
path, i = sys.argv[1], 0
while True:
    i += 1
    atomic_write_bytes(path, bytes([i % 251]) * 8_000_000)
    print(i, flush=True)
"""


def test_a_process_killed_while_writing_leaves_a_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        for _ in range(3):  # a few complete writes, then kill it in the middle of another
            assert proc.stdout.readline()
        time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    data = path.read_bytes()
    assert len(data) == 8_000_000 and data == data[:1] * len(data)


# ------------------------------------------------------------------------------------------------
# Safe defaults: YAML and checkpoints cannot run code


def test_yaml_with_a_python_tag_is_rejected_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = f'!!python/object/apply:os.system ["touch {marker}"]'
    space = tmp_path / "space.yaml"
    space.write_text(f"name: {evil}\nbase: {{model: tiny_cnn}}\n"
                     "search: {params: {loss.tau: {kind: grid, values: [1.0]}}}\n")
    run = tmp_path / "run.yaml"
    run.write_text(f"name: {evil}\nmodel: tiny_cnn\n")
    env = cli_env()
    for args, path in ((["--space", str(space), "--storage", str(tmp_path / "runs")], space),
                       (["validate", str(space)], space),
                       (["train", "--config", str(run), "--storage", str(tmp_path / "runs")], run)):
        res = run_cli(args, env, timeout=120)
        assert res.returncode == 2, res.stdout + res.stderr
        assert "Traceback" not in res.stderr
        assert f"{path}: line 1" in res.stderr and "!!python" in res.stderr, res.stderr
        assert "safe_load" in res.stderr and "remove the tag" in res.stderr
        assert not marker.exists(), "the YAML ran code"
    assert not (tmp_path / "runs").exists()


class Evil:
    """Unpickling this runs a shell command (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_load_with_weights_only_and_no_code_runs(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = {"format": "tfkd-search/1", "model_name": "tiny_cnn", "num_classes": 10,
            "in_channels": 1, "model": {"payload": Evil(marker)}}
    torch.save(evil, tmp_path / "evil.pt")
    assert not marker.exists()
    env = cli_env()
    # as a teacher
    cfg = {"name": "student", "model": "tiny_cnn", "method": "kd", "device": "cpu", "threads": 1,
           "data": {"dataset": "digits"}, "teacher": {"checkpoint": str(tmp_path / "evil.pt")},
           "schedule": {"epochs": 1, "milestones": [], "warmup_epochs": 0}}
    (tmp_path / "kd.yaml").write_text(yaml.safe_dump(cfg))
    res = run_cli(["train", "--config", str(tmp_path / "kd.yaml"), "--no-mlflow", "--out",
                   str(tmp_path / "out")], env, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert f"teacher checkpoint {tmp_path / 'evil.pt'}: cannot be loaded" in res.stderr, res.stderr
    # torch's weights-only unpickler refused the pickled call (said in tfkd-search's words, without
    # torch's advice to load with weights_only=False)
    assert "holds Python objects beyond tensors and plain data" in res.stderr, res.stderr
    assert "weights_only=False" not in res.stderr
    assert not marker.exists(), "the checkpoint ran code"
    # as the run's own checkpoint on --resume
    cfg.update(method="ce", teacher=None)
    (tmp_path / "ce.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "out2" / "seed0").mkdir(parents=True)
    os.replace(tmp_path / "evil.pt", tmp_path / "out2" / "seed0" / "checkpoint.pt")
    res = run_cli(["train", "--config", str(tmp_path / "ce.yaml"), "--no-mlflow", "--out",
                   str(tmp_path / "out2"), "--resume"], env, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert "resume checkpoint" in res.stderr and "cannot be loaded" in res.stderr, res.stderr
    assert not marker.exists(), "the checkpoint ran code"


# ------------------------------------------------------------------------------------------------
# Trials that raise or diverge (a real search)


@pytest.mark.ray
@pytest.mark.slow
def test_errored_and_diverged_trials_are_recorded_and_the_search_goes_on(tmp_path: Path) -> None:
    """optim.lr 1e8 diverges; data.dataset cifar10 with an empty --data-dir raises DataError inside
    the trial (the driver only checks the base config's dataset, digits)."""
    (tmp_path / "empty").mkdir()
    space = write_space(tmp_path / "faults.yaml", "faults", search_block(grid_params(**{
        "optim.lr": [0.1, "1e8"],  # YAML would read 1e8 as a string too
        "data.dataset": ["digits", "cifar10"]}), max_failures=1))
    env = cli_env()
    res = run_cli(["--space", str(space), "--storage", str(tmp_path / "runs"), "--data-dir",
                   str(tmp_path / "empty")], env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "2 errored" in res.stdout and "1 diverged" in res.stdout and "1 completed" in res.stdout
    assert "Traceback" not in res.stderr  # the trials' tracebacks are in error.txt, not repeated

    trials = pd.read_parquet(tmp_path / "runs" / "faults" / "trials.parquet")
    assert len(trials) == 4
    assert trials["optim.lr"].dtype == float
    by = {(r["optim.lr"], r["data.dataset"]): r for _, r in trials.iterrows()}
    assert by[(0.1, "digits")]["status"] == "completed"
    assert by[(1e8, "digits")]["status"] == "diverged"
    for lr in (0.1, 1e8):
        row = by[(lr, "cifar10")]
        assert row["status"] == "errored"
        assert "DataError" in row["error"] and str(tmp_path / "empty") in row["error"]
        assert "--download" in row["error"]
        # retried: started max_failures + 1 = 2 times, then given up
        tid = row["trial_id"]
        assert res.stdout.count(f"trial {tid} started") == 1, res.stdout
        assert res.stdout.count(f"trial {tid} restarted") == 1, res.stdout
        assert "Failure # 2" in (tmp_path / "runs" / "faults" / f"trial_{row['trial_id']}" /
                                 "error.txt").read_text()
    assert trials.loc[trials.status != "errored", "error"].isna().all()

    parent, kids = search_runs(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", "faults")
    assert parent.info.status == "FINISHED"
    assert len(kids) == 4
    for kid in kids:
        row = trials[trials.trial_id == kid.data.tags["tfkd.trial_id"]].iloc[0]
        assert kid.data.tags["tfkd.status"] == row.status
        if row.status == "errored":
            assert kid.info.status == "FAILED"
            assert kid.data.tags["tfkd.error"].startswith("tfkd_search.errors.DataError: ")
        else:
            assert kid.info.status == "FINISHED" and "tfkd.error" not in kid.data.tags
    exported = sorted((tmp_path / "runs" / "faults" / "best").glob("rank*.yaml"))
    assert [p.name for p in exported] == ["rank1.yaml"]  # only the completed trial is exported


@pytest.mark.ray
@pytest.mark.slow
def test_a_search_where_no_trial_finishes_exits_1(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    space = write_space(tmp_path / "none.yaml", "nothing", search_block(
        grid_params(**{"data.dataset": ["cifar10"]}), max_failures=0))
    res = run_cli(["--space", str(space), "--storage", str(tmp_path / "runs"), "--data-dir",
                   str(tmp_path / "empty")], cli_env(), timeout=600)
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert "no trial finished (1 errored)" in res.stderr
    assert "trials.parquet" in res.stderr and "tfkd.error" in res.stderr
    trials = pd.read_parquet(tmp_path / "runs" / "nothing" / "trials.parquet")
    assert list(trials.status) == ["errored"]


# ------------------------------------------------------------------------------------------------
# The driver killed at three moments, then --resume


TAUS, ALPHAS = [1.0, 4.0], [0.3, 0.9]
EPOCHS = 4
MOMENTS = {  # (finished trials, epochs of the running trial) when the driver is killed
    "while-the-first-trial-starts": (0, 0),
    "mid-search-inside-a-trial": (1, 1),
    "near-the-end-right-after-a-trial-finished": (3, 0),
}


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_driver_killed_then_resume_completes_every_point_once(tmp_path: Path, moment: str) -> None:
    """Trials run one at a time (max_concurrent 1) so that each kill moment is well defined."""
    n_finished, n_epochs = MOMENTS[moment]
    base = base_cfg(EPOCHS, milestones=[2],
                    data={"dataset": "synthetic", "synthetic_size": 6000, "val_fraction": 0.2})
    space = write_space(tmp_path / "grid.yaml", "killed", search_block(
        grid_params(**{"loss.tau": TAUS, "loss.alpha": ALPHAS}), max_concurrent=1), base=base)
    storage = tmp_path / "runs"
    run_dir = storage / "killed"
    env = cli_env()

    def finished() -> list[Path]:
        return [d for d in run_dir.glob("trial_*")
                if any(r.get("epoch") == EPOCHS for r in result_lines(d))]

    def now() -> bool:
        trials = list(run_dir.glob("trial_*"))
        done = finished()
        if n_epochs == 0:
            return len(trials) > n_finished and len(done) >= n_finished
        running = [max((r.get("epoch", 0) for r in result_lines(d)), default=0)
                   for d in trials if d not in done]
        return len(done) >= n_finished and any(n_epochs <= e < EPOCHS for e in running)

    proc = start_cli(["--space", str(space), "--storage", str(storage)], env, tmp_path / "1.log")
    try:
        wait_for(now, 300, interval=0.05, what=moment)
    finally:
        sigkill_driver(proc, env)
    before = {d.name: result_lines(d) for d in finished()}
    assert len(before) == n_finished, (moment, sorted(before))
    assert not (run_dir / "trials.parquet").exists()

    res = run_cli(["--space", str(space), "--storage", str(storage), "--resume"], env, timeout=600)
    assert res.returncode == 0, ((tmp_path / "1.log").read_text()[-2000:] + res.stdout[-3000:]
                                 + res.stderr[-3000:])
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert len(trials) == 4 and trials["trial_id"].is_unique, trials
    assert sorted(zip(trials["loss.tau"], trials["loss.alpha"])) == sorted(
        itertools.product(TAUS, ALPHAS))
    assert (trials["status"] == "completed").all(), trials
    for name, lines in before.items():  # finished trials were kept, not run again
        assert result_lines(run_dir / name) == lines
        row = trials[trials.trial_id == name.removeprefix("trial_")].iloc[0]
        assert row.best_val_acc == pytest.approx(max(r["val_acc"] for r in lines))
    hist = pd.read_parquet(run_dir / "history.parquet")
    for tid, epochs in hist.groupby("trial_id")["epoch"].apply(list).items():
        assert epochs == list(range(1, EPOCHS + 1)), (tid, epochs)
    for d in run_dir.glob("trial_*"):  # the interrupted trial went on from its checkpoint
        epochs = [r["epoch"] for r in result_lines(d)]
        assert epochs.count(1) == 1, (d.name, epochs)
    _, kids = search_runs(f"sqlite:///{storage / 'mlflow.db'}", "killed")
    assert len(kids) == 4 and {k.info.status for k in kids} == {"FINISHED"}


def _ctrl_c_after(args: list[str], env: dict[str, str], log: Path, line: str,
                  sigterm: bool = False) -> int:
    """Start the CLI, wait for `line` in its output, then Ctrl-C it (the whole foreground group, as
    a terminal does) or SIGTERM the driver alone (as `kill` does); returns the exit code, once the
    processes of the search's embedded Ray have exited too (they must not outlive it)."""
    proc = start_cli(args, env, log)
    try:
        wait_for(lambda: line in log.read_text(errors="replace"), 300, interval=0.05, what=line)
        if sigterm:
            os.kill(proc.pid, signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=120)
        wait_for(lambda: not ray_processes(env["TFKD_RAY_TMPDIR"]), 30, what="Ray to exit")
        return code
    finally:
        cleanup(env, proc.pid)


@pytest.mark.ray
@pytest.mark.slow
def test_ctrl_c_says_how_to_continue_and_resume_ends_the_search(tmp_path: Path) -> None:
    quickstart = ROOT / "search_spaces" / "quickstart.yaml"
    args = ["--space", str(quickstart), "--storage", str(tmp_path / "runs"), "--set", "threads=1",
            "--set", "search.finalists.top=0"]  # the finalists stage's own kill test is below
    env = cli_env()
    run_dir = tmp_path / "runs" / "quickstart"
    # once before the first rung is decided, once (resumed) after it
    for k, (extra, line) in enumerate((([], "epoch 2/12"), (["--resume"], "stopped early after 2"))):
        log = tmp_path / f"{k}.log"
        code = _ctrl_c_after([*args, *extra], env, log, line)
        out = log.read_text(errors="replace")
        assert code == 130, out[-3000:]
        assert "interrupted:" in out and "continue with: tfkd-search " in out, out[-3000:]
        assert out.rstrip().endswith("--resume"), out[-500:]
        assert "Traceback" not in out and "Tuner.restore" not in out, out[-3000:]
        assert not (run_dir / "trials.parquet").exists()
    res = run_cli(["export", str(run_dir)], env, timeout=120)
    assert res.returncode == 2 and "has not finished" in res.stderr, res.stderr
    assert f"--storage {tmp_path / 'runs'} --name quickstart --resume" in res.stderr, res.stderr
    res = run_cli([*args, "--resume"], env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert len(trials) == 12 and trials["trial_id"].is_unique
    # the quickstart's halving, 12 -> 4 -> 1, as in an uninterrupted search
    assert sorted(trials["epochs"]) == [2] * 8 + [6] * 3 + [12], trials
    assert set(trials["status"]) == {"completed", "stopped_early"}
    rungs = json.loads((run_dir / "scheduler" / "asha_rungs.json").read_text())
    assert sorted(rungs["decided"]) == ["2", "6"] and rungs["paused"] == {}, rungs
    parent, kids = search_runs(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", "quickstart")
    assert parent.info.status == "FINISHED"
    assert len(kids) == 12 and {k.info.status for k in kids} == {"FINISHED"}


@pytest.mark.ray
@pytest.mark.slow
def test_sigterm_stops_a_search_like_ctrl_c_and_leaves_no_ray_behind(tmp_path: Path) -> None:
    """`kill` (or a batch system's preemption notice) instead of Ray's abort with a stack dump."""
    env = cli_env()
    log = tmp_path / "term.log"
    space = ROOT / "search_spaces" / "quickstart.yaml"
    code = _ctrl_c_after(["--space", str(space), "--storage", str(tmp_path / "runs")], env, log,
                         "epoch 2/12", sigterm=True)
    out = log.read_text(errors="replace")
    assert code == 130, out[-3000:]
    assert "interrupted:" in out and out.rstrip().endswith("--resume"), out[-3000:]
    assert "SIGTERM received" not in out and "Traceback" not in out, out[-3000:]


def test_ctrl_c_in_train_keeps_the_checkpoint_and_says_how_to_continue(tmp_path: Path) -> None:
    args = ["train", "--config", str(ROOT / "examples" / "digits_tfkd_reg.yaml"), "--out",
            str(tmp_path / "out"), "--set", "schedule.epochs=60", "--set", "checkpoint_every=1"]
    env = cli_env()
    log = tmp_path / "train.log"
    code = _ctrl_c_after(args, env, log, "epoch 3/60")
    out = log.read_text(errors="replace")
    assert code == 130, out[-2000:]
    assert "interrupted; the runs' checkpoints are kept: continue with: tfkd-search train" in out
    assert out.rstrip().endswith("--resume") and "Traceback" not in out, out[-2000:]
    res = run_cli([*args, "--resume"], env, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "epoch 1/60" not in res.stdout and "epoch 60/60" in res.stdout  # went on, not again
    epochs = pd.read_parquet(tmp_path / "out" / "seed0" / "metrics.parquet")["epoch"].tolist()
    assert epochs == list(range(1, 61))


# ------------------------------------------------------------------------------------------------
# Secrets and network exposure of a real search


SECRET = "s3cr3t-value-do-not-log"
AWS_SECRET = "AKIAs3cr3tAWSkeyDoNotLog"
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def _listening(pids: set[int]) -> list[tuple[int, str, str, int]]:
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            conns = p.net_connections(kind="inet")
            out += [(pid, p.name(), c.laddr.ip, c.laddr.port) for c in conns
                    if c.status == psutil.CONN_LISTEN]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


@pytest.mark.ray
@pytest.mark.slow
def test_no_secrets_in_mlflow_or_exports_and_ray_listens_on_loopback_only(tmp_path: Path) -> None:
    space = write_space(tmp_path / "small.yaml", "secrets",
                        search_block(grid_params(**{"loss.tau": [2.0, 8.0]})))
    storage = tmp_path / "runs"
    env = cli_env({"TFKD_TEST_SECRET": SECRET, "AWS_SECRET_ACCESS_KEY": AWS_SECRET})
    proc = start_cli(["--space", str(space), "--storage", str(storage)], env, tmp_path / "log.txt")
    try:
        # while trials run: every listening socket of the driver, Ray and the trial workers
        wait_for(lambda: any(r for d in (storage / "secrets").glob("trial_*")
                             for r in result_lines(d)), 300, interval=0.2, what="a trial result")
        pids = {proc.pid} | descendants(proc.pid) | ray_processes(env["TFKD_RAY_TMPDIR"])
        listening = _listening(pids)
        assert len(pids) >= 4 and listening, (pids, listening)
        exposed = [x for x in listening if x[2] not in LOOPBACK]
        assert not exposed, f"listening beyond loopback: {exposed}"
        assert proc.wait(timeout=600) == 0, (tmp_path / "log.txt").read_text()[-3000:]
    finally:
        cleanup(env, proc.pid)

    parent, kids = search_runs(f"sqlite:///{storage / 'mlflow.db'}", "secrets")
    assert len(kids) == 2
    values = []
    for run in [parent, *kids]:
        values += [*run.data.params.values(), *run.data.tags.values(), *run.data.params,
                   *run.data.tags]
    assert len(values) > 20
    for secret in (SECRET, AWS_SECRET):
        assert not [v for v in values if secret in str(v)]
    exported = sorted((storage / "secrets" / "best").glob("*.yaml"))
    assert exported
    for p in exported:
        assert SECRET not in p.read_text() and AWS_SECRET not in p.read_text()
    # and nowhere in the storage folder at all (run folder, trial folders, MLflow db, artifacts)
    for p in storage.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert SECRET.encode() not in data and AWS_SECRET.encode() not in data, p


@pytest.mark.ray
@pytest.mark.slow
def test_driver_killed_in_the_finalists_stage_resumes_without_training_a_seed_twice(
        tmp_path: Path) -> None:
    """SIGKILL of the driver while the finalists stage runs (one run at a time: two finalists and the
    baselines on 3 fresh seeds), then --resume: the finished runs are kept as they were, the running
    one continues from its checkpoint, and the final ranking and numbers are those of an
    uninterrupted search (the CPU trains deterministically)."""
    base = base_cfg(EPOCHS, milestones=[2],
                    data={"dataset": "synthetic", "synthetic_size": 3000, "val_fraction": 0.2})
    block = search_block(grid_params(**{"loss.tau": TAUS, "loss.alpha": ALPHAS}), max_concurrent=1,
                         finalists={"top": 2, "seeds": 3})
    env = cli_env()
    runs = {}
    for name in ("whole", "killed"):
        space = write_space(tmp_path / f"{name}.yaml", name, block, base=base)
        args = ["--space", str(space), "--storage", str(tmp_path / "runs")]
        stage = tmp_path / "runs" / name / "finalists"
        if name == "killed":
            def finished() -> list[Path]:
                return [d for d in stage.glob("trial_*")
                        if any(r.get("epoch") == EPOCHS for r in result_lines(d))]

            def mid_run() -> bool:  # 5 runs finished, the 6th past its first epoch
                running = [max((r.get("epoch", 0) for r in result_lines(d)), default=0)
                           for d in stage.glob("trial_*") if d not in finished()]
                return len(finished()) >= 5 and any(1 <= e < EPOCHS for e in running)

            proc = start_cli(args, env, tmp_path / "killed.log")
            try:
                wait_for(mid_run, 600, interval=0.05, what="the finalists stage half done")
            finally:
                sigkill_driver(proc, env)
            before = {d.name: result_lines(d) for d in finished()}
            assert len(before) >= 5
            assert not (tmp_path / "runs" / name / "finalists.parquet").exists()
            args.append("--resume")
        res = run_cli(args, env, timeout=900)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        runs[name] = tmp_path / "runs" / name
    for d, lines in before.items():  # finished runs kept, not trained again
        assert result_lines(runs["killed"] / "finalists" / d) == lines
    for d in (runs["killed"] / "finalists").glob("trial_*"):
        epochs = [r["epoch"] for r in result_lines(d)]
        assert epochs.count(1) == 1 and max(epochs) == EPOCHS, (d.name, epochs)
    assert len(list((runs["killed"] / "finalists").glob("trial_*"))) == 12
    keys = ["name", "seed"]
    whole, killed = (pd.read_parquet(runs[n] / "finalists.parquet").sort_values(keys)
                     .reset_index(drop=True) for n in ("whole", "killed"))
    cols = [c for c in whole.columns if c not in ("trial_id", "wall_seconds")]
    pd.testing.assert_frame_equal(killed[cols], whole[cols])
    def same(n: str, text: str) -> str:  # the run's own name and folder aside
        return text.replace(str(runs[n]), "RUN").replace(f"'{n}'", "'X'").replace(f"{n}-", "X-")

    for f in ("rank1.yaml", "rank2.yaml", "answer.txt"):
        assert same("whole", (runs["whole"] / "best" / f).read_text()) == same(
            "killed", (runs["killed"] / "best" / f).read_text()), f
    _, kids = search_runs(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", "killed")
    fin = [k for k in kids if k.data.tags.get("tfkd.stage") == "finalists"]
    assert len(fin) == 12 and {k.info.status for k in fin} == {"FINISHED"}
