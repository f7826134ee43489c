"""The finalists stage for real (local Ray on 127.0.0.1, MLflow SQLite): the best configs of the halving
and the baselines CE and LSR trained again on fresh seeds, the export in the finalists' order with the
baselines beside, the answer table, and `tfkd-search final` (same seeds, full schedule, resumable)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from _proc import cli_env, run_cli, search_runs
from _spaces import base_cfg, grid_params, search_block, write_space
from tfkd_search.runfolder import Ranking
from tfkd_search.stats import unpack_correct

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.xdist_group("test_finalists_search")]

SEEDS = [1, 2, 3]  # fresh: the search's seed is 0


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finalists")
    block = search_block(grid_params(**{"loss.tau": [1.0, 4.0, 16.0], "loss.alpha": [0.3, 0.9]}),
                         scheduler={"kind": "asha", "grace_period": 1, "reduction_factor": 2},
                         finalists={"top": 2, "seeds": 3})
    space = write_space(tmp / "fin.yaml", "fin", block, base=base_cfg(4),
                        export={"top_k": 2, "seeds": [0, 1, 2], "epochs": 2})
    res = run_cli(["--space", str(space), "--storage", str(tmp / "runs")], cli_env(), timeout=900)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return tmp, tmp / "runs" / "fin", res


def test_finalists_are_the_search_top_configs_and_baselines_on_fresh_seeds(searched):
    _, run, res = searched
    trials = pd.read_parquet(run / "trials.parquet")
    ranked = Ranking(window=1).rank(trials)
    top2 = [(r["loss.tau"], r["loss.alpha"]) for _, r in ranked.head(2).iterrows()]
    fin = pd.read_parquet(run / "finalists.parquet")
    assert len(fin) == 12 and set(fin["status"]) == {"completed"} and set(fin["epochs"]) == {4}
    for name in ("finalist1", "finalist2", "ce", "lsr"):
        assert sorted(fin.loc[fin.name == name, "seed"]) == SEEDS, fin
    for k, cfg in enumerate(top2, start=1):
        rows = fin[fin.name == f"finalist{k}"]
        assert set(zip(rows["loss.tau"], rows["loss.alpha"])) == {cfg}
        assert set(rows["search_rank"]) == {k}
    assert fin.loc[fin.role == "baseline", "loss.tau"].isna().all()
    # every run's per-image validation results, consistent with its last epoch's accuracy
    for _, r in fin.iterrows():
        bits = unpack_correct(r["val_correct"])
        assert len(bits) == 288 and sum(bits) / 288 == pytest.approx(r["last_val_acc"])
    # the finalists stage ran through Tune beside the search, and the search's trials are untouched
    assert len(list((run / "finalists").glob("trial_*"))) == 12
    assert len(trials) == 6
    assert "finalists: 12 runs of 4 epochs" in res.stdout
    assert "finalist1 seed 1 (" in res.stdout and "lsr seed 3 (" in res.stdout


def test_export_follows_the_finalists_mean_and_writes_the_baselines(searched):
    _, run, res = searched
    fin = pd.read_parquet(run / "finalists.parquet")
    means = fin[fin.role == "finalist"].groupby("name")["score"].mean()
    order = sorted(means.index, key=lambda n: (-means[n], n))  # ties: the search's order
    best = fin[fin.name == order[0]].iloc[0]
    rank1 = (run / "best" / "rank1.yaml").read_text()
    cfg1 = yaml.safe_load(rank1)
    assert (cfg1["loss"]["tau"], cfg1["loss"]["alpha"]) == (best["loss.tau"], best["loss.alpha"])
    header = rank1.split("\nname:")[0]
    mean = means[order[0]] * 100
    assert f"{order[0]} of the finalists stage" in header and f"val_acc {mean:.2f} ± " in header
    assert "(n=3) over fresh seeds [1, 2, 3]" in header
    assert "# vs CE: " in header and "# vs LSR: " in header and "(paired, n=3, with the noise of 288 evaluation images)" in header
    ce = yaml.safe_load((run / "best" / "baseline-ce.yaml").read_text())
    lsr = yaml.safe_load((run / "best" / "baseline-lsr.yaml").read_text())
    assert ce["method"] == "ce" and lsr["method"] == "lsr" and lsr["loss"]["eps"] == 0.1
    for key in ("schedule", "optim", "data", "seeds", "evaluate_test", "model"):
        assert ce[key] == cfg1[key] == lsr[key], key  # the identical recipe: like with like
    assert cfg1["seeds"] == [0, 1, 2] and cfg1["schedule"]["epochs"] == 2
    # the answer table, at the end of the search and from `export`, and in best/answer.txt
    answer = (run / "best" / "answer.txt").read_text()
    assert answer.splitlines()[1].split()[:2] == ["config", "val_acc"]
    assert answer.splitlines()[3].startswith(order[0])
    for line in answer.splitlines()[3:5]:
        assert line.rstrip().endswith(("than CE", "than LSR", "to CE", "to LSR")), line
    assert answer.strip() in res.stdout
    # what the intervals cover: seeds and the 288-image validation split's own sampling noise, from
    # every run's per-image results
    assert answer.splitlines()[-1] == (
        "(intervals: paired t on the per-seed differences, widened by the sampling noise of the 288 "
        "evaluation images (from every run's per-image results))")
    assert f"next: tfkd-search final {run}" in res.stdout
    out = run_cli(["export", str(run)], cli_env(), timeout=120)
    assert out.returncode == 0 and answer.strip() in out.stdout, out.stdout + out.stderr


def test_finalists_are_mlflow_children_tagged_and_the_verdict_is_on_the_parent(searched):
    tmp, _, _ = searched
    parent, kids = search_runs(f"sqlite:///{tmp / 'runs' / 'mlflow.db'}", "fin")
    stages = [k.data.tags.get("tfkd.stage") for k in kids]
    assert stages.count("finalists") == 12 and len(kids) == 18
    fin_kids = [k for k in kids if k.data.tags.get("tfkd.stage") == "finalists"]
    assert {k.data.tags["tfkd.finalist"] for k in fin_kids} == {"finalist1", "finalist2", "ce", "lsr"}
    assert {k.data.tags["tfkd.seed"] for k in fin_kids} == {"1", "2", "3"}
    assert {k.info.status for k in kids} == {"FINISHED"}
    assert parent.data.tags["tfkd.verdict"].split(" (")[0] in ("better", "worse",
                                                                "no detectable difference")
    assert "final.ce.mean" in parent.data.metrics and "final.finalist1.mean" in parent.data.metrics


def test_final_trains_every_export_on_the_same_seeds_and_resumes(searched):
    tmp, run, _ = searched
    env = cli_env()
    res = run_cli(["final", str(run), "--seeds", "3"], env, timeout=900)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    table = pd.read_parquet(run / "final" / "results.parquet")
    assert sorted(set(table["config"])) == ["ce", "lsr", "rank1", "rank2"]
    for name in ("rank1", "rank2", "ce", "lsr"):
        assert sorted(table.loc[table.config == name, "seed"]) == [0, 1, 2]
        for s in (0, 1, 2):
            summary = json.loads((run / "final" / name / f"seed{s}" / "summary.json").read_text())
            assert summary["epochs"] == 2 and summary["test_acc"] is not None
    assert set(table["measure"]) == {"test_acc"}
    answer = (run / "final" / "answer.txt").read_text()
    assert "judged on test_acc" in answer and answer.strip() in res.stdout
    # the intervals hold the test split's sampling noise, from every run's per-image test results
    assert answer.splitlines()[-1].endswith("widened by the sampling noise of the 359 evaluation images "
                                            "(from every run's per-image results))")
    assert all(len(unpack_correct(c)) == 359 for c in table["correct"])
    means = table.groupby("config")["score"].mean()
    shown = answer.splitlines()[3].split()[0]
    assert shown in ("rank1", "rank2") and means[shown] == max(means["rank1"], means["rank2"])
    c = MlflowClient(f"sqlite:///{tmp / 'runs' / 'mlflow.db'}")
    exp = c.get_experiment_by_name("fin")
    finals = [r for r in c.search_runs([exp.experiment_id], max_results=1000)
              if r.data.tags.get("tfkd.role") == "final"]
    assert len(finals) == 1
    kids = [r for r in c.search_runs([exp.experiment_id], max_results=1000)
            if r.data.tags.get("mlflow.parentRunId") == finals[0].info.run_id]
    assert len(kids) == 12 and {k.data.tags["tfkd.stage"] for k in kids} == {"final"}
    # again without --resume: refused, nothing overwritten; with --resume: nothing trained again
    before = {p: p.stat().st_mtime_ns for p in (run / "final").glob("*/seed*/checkpoint.pt")}
    again = run_cli(["final", str(run), "--seeds", "3"], env, timeout=120)
    assert again.returncode == 2 and "--resume" in again.stderr, again.stderr
    again = run_cli(["final", str(run), "--seeds", "3", "--resume", "--no-mlflow"], env, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("finished before, kept") == 12
    assert {p: p.stat().st_mtime_ns for p in before} == before
    pd.testing.assert_frame_equal(pd.read_parquet(run / "final" / "results.parquet"), table)


def test_a_torn_finalists_table_is_rebuilt_from_the_stage_results(searched, tmp_path):
    import shutil

    _, run, _ = searched
    copy = tmp_path / "fin"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("final"))
    before = pd.read_parquet(copy / "finalists.parquet")
    rank1 = (copy / "best" / "rank1.yaml").read_text()
    torn = (copy / "finalists.parquet").read_bytes()[:100]
    (copy / "finalists.parquet").write_bytes(torn)
    res = run_cli(["export", str(copy)], cli_env(), timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "rebuilt finalists.parquet from the 12 finalists stage runs' result.json" in res.stderr
    assert (copy / "finalists.parquet.unreadable").read_bytes() == torn
    cols = [c for c in before.columns if c != "wall_seconds"]
    pd.testing.assert_frame_equal(pd.read_parquet(copy / "finalists.parquet")[cols], before[cols])
    assert (copy / "best" / "rank1.yaml").read_text() == rank1.replace(str(run), str(copy))
