"""The search, for real: local Ray on 127.0.0.1, MLflow SQLite and a real `mlflow server`."""

from __future__ import annotations

import itertools
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from _proc import (cleanup, cli_env, free_port, port_open, result_lines, run_cli, search_runs,
                   start_cli, wait_for)
from _spaces import base_cfg, grid_params, search_block, write_space

# one xdist worker runs this module (`-n 2 --dist loadgroup`): the `finished` search is made once
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.xdist_group("test_search")]

TAUS, ALPHAS = [1.0, 4.0, 16.0], [0.3, 0.9]


def grid_search_block(**extra) -> dict:
    """The 3 x 2 grid of this module, halved by synchronous ASHA at epochs 1 and 2 of 4."""
    return search_block(grid_params(**{"loss.tau": TAUS, "loss.alpha": ALPHAS}),
                        **{"scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
                           **extra})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    space = write_space(tmp / "grid.yaml", "gridtest", grid_search_block(), base=base_cfg(4),
                        export={"top_k": 2, "seeds": [0, 1], "epochs": 4})
    env = cli_env()
    res = run_cli(["--space", str(space), "--storage", str(tmp / "runs")], env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return tmp, res


def test_search_runs_every_grid_point_and_asha_stops_some(finished):
    tmp, res = finished
    trials = pd.read_parquet(tmp / "runs" / "gridtest" / "trials.parquet")
    assert len(trials) == 6
    visited = sorted(zip(trials["loss.tau"], trials["loss.alpha"]))
    assert visited == sorted(itertools.product(TAUS, ALPHAS))
    assert set(trials["status"]) <= {"completed", "stopped_early"}
    assert (trials["status"] == "stopped_early").sum() >= 1, trials
    assert (trials["status"] == "completed").sum() >= 1, trials
    stopped = trials[trials["status"] == "stopped_early"]
    assert (stopped["epochs"] < 4).all()
    assert trials["best_val_acc"].between(0, 1).all()
    # synchronous halving (rungs at 1 and 2 of 4 epochs, keep 1/2): 6 -> 3 -> 1, whatever the order
    assert sorted(trials["epochs"]) == [1, 1, 1, 2, 2, 4]
    assert trials["score"].equals(trials["last_val_acc"])  # window 1: the last epoch's accuracy
    hist = pd.read_parquet(tmp / "runs" / "gridtest" / "history.parquet")
    per_trial = hist.groupby("trial_id")["epoch"].apply(list)
    for tid, epochs in per_trial.items():
        n = int(trials.loc[trials.trial_id == tid, "epochs"].iloc[0])
        assert epochs == list(range(1, n + 1))
    assert "search finished" in res.stdout and "epoch 1/4" in res.stdout
    # where to look in the MLflow UI, at the start and at the end (MLflow 3 opens on GenAI views)
    assert res.stdout.count("runs of this search: http://127.0.0.1:5000/#/experiments/") == 2
    assert res.stdout.count("parent run: http://127.0.0.1:5000/#/experiments/") == 2


def test_torn_tables_of_a_finished_search_are_rebuilt_from_the_trials_results(finished, tmp_path):
    """trials.parquet torn, history.parquet gone: `export` (and a --resume of the finished search)
    writes both again from Ray's per-trial result.json files, the same tables the search wrote,
    and keeps the torn file."""
    import shutil

    tmp, _ = finished
    run = tmp_path / "gridtest"
    shutil.copytree(tmp / "runs" / "gridtest", run)
    before = {n: pd.read_parquet(run / n) for n in ("trials.parquet", "history.parquet")}
    rank1 = (run / "best" / "rank1.yaml").read_text()
    torn = (run / "trials.parquet").read_bytes()[:200]
    (run / "trials.parquet").write_bytes(torn)
    (run / "history.parquet").unlink()
    res = run_cli(["export", str(run)], cli_env(), timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "rebuilt trials.parquet and history.parquet from the 6 trials' result.json" in res.stderr
    assert (run / "trials.parquet.unreadable").read_bytes() == torn
    key = {"trials.parquet": ["trial_id"], "history.parquet": ["trial_id", "epoch"]}
    for name, old in before.items():
        new = pd.read_parquet(run / name)
        cols = [c for c in old.columns if c != "wall_seconds"]
        pd.testing.assert_frame_equal(new[cols].sort_values(key[name]).reset_index(drop=True),
                                      old[cols].sort_values(key[name]).reset_index(drop=True))
    # the same config (its header names the run folder, here the copy's)
    assert (run / "best" / "rank1.yaml").read_text() == rank1.replace(
        str(tmp / "runs" / "gridtest"), str(run))
    (run / "trials.parquet").write_bytes(torn)
    res = run_cli(["--space", str(tmp / "grid.yaml"), "--storage", str(tmp_path), "--resume"],
                  cli_env(), timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "rebuilt trials.parquet" in res.stdout and "already finished" in res.stdout
    assert len(pd.read_parquet(run / "trials.parquet")) == 6


def test_resume_of_a_search_stopped_before_tune_started_starts_its_trials(finished, tmp_path):
    """A driver stopped after it made the run folder, before Tune wrote its state (Ctrl-C during the
    MLflow set-up, a crash): --resume starts the trials instead of failing on a missing tuner.pkl."""
    import shutil

    tmp, _ = finished
    run = tmp_path / "gridtest"
    shutil.copytree(tmp / "runs" / "gridtest", run, ignore=shutil.ignore_patterns(
        "tuner.pkl", "experiment_state-*", "basic-variant-state-*", "trial_*", "*.parquet", "best",
        "report", "scheduler", ".validate_storage_marker"))
    state = json.loads((run / "search.json").read_text())
    # its own MLflow store: the state names the module's, which other tests here count runs in
    (run / "search.json").write_text(json.dumps({**state, "finished": False,
                                                 "mlflow_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}))
    assert sorted(p.name for p in run.iterdir()) == ["search.json", "space.yaml"]
    res = run_cli(["--space", str(tmp / "grid.yaml"), "--storage", str(tmp_path), "--resume"],
                  cli_env(), timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "was stopped before any trial started" in res.stdout
    assert sorted(pd.read_parquet(run / "trials.parquet")["epochs"]) == [1, 1, 1, 2, 2, 4]


def test_search_is_tracked_in_mlflow_as_parent_and_search_runs(finished):
    tmp, _ = finished
    uri = f"sqlite:///{tmp / 'runs' / 'mlflow.db'}"
    parent, kids = search_runs(uri, "gridtest")
    assert parent.info.status == "FINISHED"
    assert parent.data.params["space"] == "gridtest"
    assert "best_val_acc" in parent.data.metrics
    assert json.loads(parent.data.tags["tfkd.versions"])["torch"]
    c = MlflowClient(uri)
    assert "space.yaml" in {a.path for a in c.list_artifacts(parent.info.run_id)}  # as searched
    # artifacts live beside the store in --storage, not in ./mlruns of the current directory
    assert parent.info.artifact_uri.startswith((tmp / "runs" / "mlartifacts").as_uri())
    trials = pd.read_parquet(tmp / "runs" / "gridtest" / "trials.parquet")
    assert len(kids) == len(trials) == 6
    by_trial = {k.data.tags["tfkd.trial_id"]: k for k in kids}
    for _, row in trials.iterrows():
        kid = by_trial[row.trial_id]
        assert kid.info.status == "FINISHED"
        assert kid.data.tags["tfkd.status"] == row.status
        assert float(kid.data.params["loss.tau"]) == row["loss.tau"]
        hist = c.get_metric_history(kid.info.run_id, "val_acc")
        assert sorted(m.step for m in hist) == list(range(1, row.epochs + 1))
        assert max(m.value for m in hist) == pytest.approx(row.best_val_acc)
        for key in ("val_loss", "train_loss", "train_ce", "train_kl", "lr", "images_per_s"):
            assert key in kid.data.metrics


def test_export_round_trips_into_train(finished):
    tmp, _ = finished
    best = tmp / "runs" / "gridtest" / "best"
    files = sorted(best.glob("rank*.yaml"))
    assert [f.name for f in files] == ["rank1.yaml", "rank2.yaml"]
    cfg = yaml.safe_load(files[0].read_text())
    trials = pd.read_parquet(tmp / "runs" / "gridtest" / "trials.parquet")
    # the ranking rule: finished trials by epochs, then score (last-epoch val_acc here), then index
    top = trials.sort_values(["epochs", "score", "trial_index"], ascending=[False, False, True]).iloc[0]
    assert top["status"] == "completed"
    assert cfg["evaluate_test"] is True and cfg["seeds"] == [0, 1]
    assert cfg["schedule"]["epochs"] == 4 and cfg["schedule"]["budget"] is None
    assert cfg["loss"]["tau"] == top["loss.tau"] and cfg["loss"]["alpha"] == top["loss.alpha"]
    # re-export with another k through the CLI
    res = run_cli(["export", str(tmp / "runs" / "gridtest"), "--top", "1"], cli_env(), timeout=120)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in best.glob("rank*.yaml")) == ["rank1.yaml"]
    res = run_cli(["train", "--config", str(files[0]), "--seeds", "2", "--storage",
                   str(tmp / "runs")], cli_env(), timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "test_acc" in res.stdout and "±" in res.stdout
    for seed in (0, 1):
        summary = json.loads((tmp / "runs" / "train" / "gridtest-rank1" / f"seed{seed}" /
                              "summary.json").read_text())
        assert summary["status"] == "completed" and 0.5 < summary["test_acc"] <= 1.0
    c = MlflowClient(f"sqlite:///{tmp / 'runs' / 'mlflow.db'}")
    exp = c.get_experiment_by_name("gridtest")
    finals = c.search_runs([exp.experiment_id], filter_string="tags.`tfkd.role` = 'final'")
    assert len(finals) == 1 and "test_acc_mean" in finals[0].data.metrics


def test_resuming_a_finished_search_shows_its_results(finished):
    tmp, _ = finished
    space = tmp / "grid.yaml"
    res = run_cli(["--space", str(space), "--storage", str(tmp / "runs"), "--resume"], cli_env(),
                  timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "already finished" in res.stdout and "nothing to resume" in res.stdout
    assert "top 5 of 6 trials" in res.stdout and "search finished in" not in res.stdout
    assert "started a local Ray" not in res.stdout  # nothing was started


def _winner(run_dir: Path) -> tuple[str, dict]:
    """The exported rank-1 config (without the header, which names the run's own trial ids) and the
    trial order of the table."""
    text = (run_dir / "best" / "rank1.yaml").read_text()
    body = yaml.safe_load(text)
    body.pop("name")
    t = pd.read_parquet(run_dir / "trials.parquet").sort_values("trial_index")
    return json.dumps(body, sort_keys=True), t[["trial_index", "status", "epochs", "score"]].to_dict("list")


def test_same_command_same_winner_whatever_the_arrival_order(tmp_path):
    """The quickstart twice: once two trials at a time, once one at a time (`search.max_concurrent: 1`,
    so results arrive in another order); the trials train deterministically on one CPU thread each.
    Synchronous rungs and the ranking's tie-break make the export identical. The cap holds although
    trials wait at the rungs (they do not count: the search would otherwise stall or ignore the cap)."""
    quickstart = Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml"
    winners = []
    for folder, extra, at_a_time in (("two", [], "2 at a time"),
                                     ("one", ["--set", "search.max_concurrent=1"], "1 at a time")):
        res = run_cli(["--space", str(quickstart), "--storage", str(tmp_path / folder),
                       "--set", "threads=1", *extra], cli_env(), timeout=900)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert at_a_time in res.stdout
        winners.append(_winner(tmp_path / folder / "quickstart"))
    assert most_running(res.stdout, rungs={2, 6}, budget=12) == 1, res.stdout
    assert winners[0] == winners[1]


def most_running(log: str, rungs: set[int], budget: int) -> int:
    """The most trials seen running at once in a search's progress log: after each epoch line, the
    trials whose last reported epoch is neither a rung (where they wait or stop) nor the budget."""
    last: dict[str, int] = {}
    most = 0
    for trial, epoch in re.findall(r"trial (\S+) epoch (\d+)/\d+ ", log):
        last[trial] = int(epoch)
        most = max(most, sum(e not in rungs and e != budget for e in last.values()))
    return most


def _optuna_space(tmp: Path, name: str, seed: int) -> Path:
    return write_space(tmp / f"{name}.yaml", name, search_block(
        {"loss.tau": {"kind": "loguniform", "low": 1.0, "high": 20.0},
         "loss.alpha": {"kind": "uniform", "low": 0.1, "high": 0.9},
         "optim.batch_size": {"kind": "int", "low": 32, "high": 64}},
        searcher={"kind": "optuna", "seed": seed}, num_samples=4), base=base_cfg(2))


def _params(run_dir: Path) -> list[tuple]:
    t = pd.read_parquet(run_dir / "trials.parquet")
    return sorted(zip(t["loss.tau"].round(10), t["loss.alpha"].round(10), t["optim.batch_size"]))


def test_optuna_search_is_reproducible_with_a_seed(tmp_path):
    runs = []
    for name in ("opt_a", "opt_b"):
        res = run_cli(["--space", str(_optuna_space(tmp_path, name, 7)), "--storage",
                       str(tmp_path / "runs")], cli_env(), timeout=300)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        runs.append(_params(tmp_path / "runs" / name))
    assert len(runs[0]) == 4
    assert runs[0] == runs[1]
    for tau, alpha, bs in runs[0]:
        assert 1.0 <= tau <= 20.0 and 0.1 <= alpha <= 0.9 and 32 <= bs <= 64
    # the seed is what fixes them: the same searcher, as the driver builds it, with another seed
    # suggests other values (Optuna in-process; no trials needed)
    assert _suggested(tmp_path, 7) == _suggested(tmp_path, 7) != _suggested(tmp_path, 8)


def _suggested(tmp: Path, seed: int) -> list[tuple]:
    from tfkd_search.search.driver import ranking_of
    from tfkd_search.search.searchers import make_searcher
    from tfkd_search.search.trial import SCORE, to_tune
    from tfkd_search.spaces import load_space

    space = load_space(_optuna_space(tmp, f"s{seed}", seed))
    ranking = ranking_of(space)
    searcher = make_searcher(space, ranking, None)
    searcher.set_search_properties(SCORE, ranking.mode, {k: to_tune(d) for k, d in space.params.items()})
    out = []
    for i in range(4):
        c = searcher.suggest(f"t{i}")
        out.append((round(c["loss.tau"], 10), round(c["loss.alpha"], 10), c["optim.batch_size"]))
    return out


def test_killed_trial_process_restarts_from_its_checkpoint(tmp_path):
    base = base_cfg(8, milestones=[6],
                    data={"dataset": "synthetic", "synthetic_size": 6000, "val_fraction": 0.1})
    space = write_space(tmp_path / "one.yaml", "crash", search_block(
        grid_params(**{"loss.tau": [4.0]}), max_failures=2), base=base)
    run_dir = tmp_path / "runs" / "crash"
    env = cli_env()
    proc = start_cli(["--space", str(space), "--storage", str(tmp_path / "runs")], env,
                     tmp_path / "log.txt")
    try:
        def at_epoch_3() -> bool:
            lines = [r for d in run_dir.glob("trial_*") for r in result_lines(d)]
            return any(r["epoch"] >= 3 and r["epoch"] < 7 for r in lines)

        wait_for(at_epoch_3, 300, interval=0.05, what="epoch 3 of the trial")
        pid = [r for d in run_dir.glob("trial_*") for r in result_lines(d)][-1]["pid"]
        import os

        os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=300) == 0, (tmp_path / "log.txt").read_text()[-3000:]
    finally:
        cleanup(env, proc.pid)
    lines = [r for d in run_dir.glob("trial_*") for r in result_lines(d)]
    epochs = [r["epoch"] for r in lines]
    assert epochs[-1] == 8 and epochs.count(1) == 1, epochs
    restarts = [r for r in lines[1:] if r["iterations_since_restore"] == 1]
    assert restarts, "the trial was not restarted"
    assert restarts[0]["epoch"] > 1  # it continued from its checkpoint
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert list(trials["status"]) == ["completed"]


def test_search_logs_to_a_real_mlflow_server(tmp_path):
    port = free_port()
    db = tmp_path / "server.db"
    env = cli_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port",
         str(port), "--workers", "1", "--backend-store-uri", f"sqlite:///{db}",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: port_open(port), 120, interval=0.5, what="mlflow server")
        space = write_space(tmp_path / "srv.yaml", "served",
                            search_block(grid_params(**{"loss.tau": [2.0, 8.0]})), base=base_cfg(2))
        res = run_cli(["--space", str(space), "--storage", str(tmp_path / "runs"),
                       "--mlflow-uri", uri], env, timeout=300)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        parent, kids = search_runs(uri, "served")
        assert len(kids) == 2 and {k.info.status for k in kids} == {"FINISHED"}
        assert sorted(float(k.data.params["loss.tau"]) for k in kids) == [2.0, 8.0]
        hist = MlflowClient(uri).get_metric_history(kids[0].info.run_id, "val_acc")
        assert [m.step for m in sorted(hist, key=lambda m: m.step)] == [1, 2]
        assert not (tmp_path / "runs" / "mlflow.db").exists()  # nothing went to the default store
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        cleanup(env, server.pid)


def test_packed_search_trains_in_one_host_and_gives_the_same_numbers(finished, tmp_path):
    """The module's grid again with every trial packed into one host process (the CPU stand-in of
    one GPU's trials on CUDA streams): synchronous halving pauses and resumes trials through the
    host, and every recorded number is the unpacked search's."""
    tmp, _ = finished
    space = write_space(tmp_path / "grid.yaml", "gridtest",
                        grid_search_block(resources={"cpu": 1, "pack": True}), base=base_cfg(4),
                        export={"top_k": 2, "seeds": [0, 1], "epochs": 4})
    res = run_cli(["--space", str(space), "--storage", str(tmp_path / "runs")], cli_env(), timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "packing: 1 host process served" in res.stdout, res.stdout[-3000:]
    keys = ["loss.tau", "loss.alpha"]
    cols = [*keys, "status", "epochs", "score", "best_val_acc"]
    packed, plain = (pd.read_parquet(d / "gridtest" / "trials.parquet").sort_values(keys)[cols]
                     .reset_index(drop=True) for d in (tmp_path / "runs", tmp / "runs"))
    pd.testing.assert_frame_equal(packed, plain)
    hist = [pd.read_parquet(d / "gridtest" / "history.parquet") for d in (tmp_path / "runs", tmp / "runs")]
    curves = [h.merge(t[["trial_id", *keys]], on="trial_id").sort_values([*keys, "epoch"])
              [[*keys, "epoch", "val_acc", "train_loss"]].reset_index(drop=True)
              for h, t in zip(hist, (pd.read_parquet(d / "gridtest" / "trials.parquet")
                                     for d in (tmp_path / "runs", tmp / "runs")))]
    pd.testing.assert_frame_equal(curves[0], curves[1])
    assert (yaml.safe_load((tmp_path / "runs/gridtest/best/rank1.yaml").read_text())
            == yaml.safe_load((tmp / "runs/gridtest/best/rank1.yaml").read_text()))
