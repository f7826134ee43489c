"""The search report (RUN_DIR/report/index.html): run folders built by hand through
`runfolder.RunFolder` for the edge cases, one real search for the end-to-end path (marked ray)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from matplotlib.image import imread
from PIL import Image

from tfkd_search.cli import main as cli_main
from tfkd_search.errors import ConfigError
from tfkd_search.export import export_best
from tfkd_search.report import load_run, param_importances, write_report
from tfkd_search.runfolder import Ranking, RunFolder, TrialRecord, TrialStatus, history_frame
from _proc import free_port
from _spaces import base_cfg, grid_params, search_block, write_space

BASE = base_cfg(4)
ALL_FIGURES = {"learning_curves.png", "parallel_coordinates.png", "param_scatter.png", "importance.png",
               "compute.png"}


def curve(trial_id: str, accs: list[float], diverged_at: int | None = None,
          losses: list[float] | None = None) -> list[dict]:
    """Epoch reports as run_trial makes them."""
    rows = []
    for e, acc in enumerate(accs, start=1):
        div = diverged_at is not None and e >= diverged_at
        # as run_trial reports it: a diverged epoch gets the worst score, 0.0
        rows.append({"trial_id": trial_id, "epoch": e, "val_acc": 0.0 if div else acc,
                     "val_loss": float("nan") if div else (losses[e - 1] if losses else 1.0 / e),
                     "train_loss": 1.2 / e, "train_ce": 1.0 / e, "train_kl": 0.1,
                     "lr": 0.1, "images_per_s": 1000.0, "epoch_seconds": 0.5,
                     "diverged": 1.0 if div else 0.0})
    return rows


def trial(tid: str, status: str, accs: list[float], wall: float = 10.0, error: str | None = None,
          diverged_at: int | None = None, losses: list[float] | None = None, **params) -> TrialRecord:
    """A trial record as the search driver writes it (its score is set by make_run's ranking)."""
    return TrialRecord(trial_id=tid, status=TrialStatus(status), params=params,
                       history=history_frame(curve(tid, accs, diverged_at, losses)),
                       wall_seconds=wall, error=error)


def make_run(root: Path, trials: list[TrialRecord], *, params: dict, name: str = "rep",
             resources: dict | None = None, device: str = "cpu", searcher: str = "grid",
             num_samples: int = 1, write_trials: bool = True, scheduler: dict | None = None,
             mlflow_uri: str | None = None, parent_run_id: str | None = None) -> Path:
    """A run folder as a finished search leaves it (without Ray's own files)."""
    run = root / name
    run.mkdir(parents=True)
    folder = RunFolder(run)
    sched = {"kind": "asha", "grace_period": 1, "reduction_factor": 2, **(scheduler or {})}
    folder.write_space({"name": name, "base": BASE,
                        "search": {"params": params, "searcher": {"kind": searcher, "seed": 0},
                                   "num_samples": num_samples, "scheduler": sched,
                                   "resources": resources or {"cpu": 1, "gpu": 0}},
                        "export": {"top_k": 2, "seeds": [0], "epochs": 4}})
    state = {"name": name, "base": {**BASE, "device": device}, "key": f"{name}-x",
             "space_file": str(run / "space.yaml")}
    if mlflow_uri:
        state.update(mlflow_uri=mlflow_uri, parent_run_id=parent_run_id)
    folder.write_state(state)
    if write_trials:
        ranking = Ranking.of_space(sched)
        for r in trials:
            r.score = ranking.score(r.history)
        folder.write_tables(trials, list(params))
    return run


@pytest.fixture
def grid_run(tmp_path: Path) -> Path:
    """A 3 x 2 grid: two trials completed, three stopped by ASHA after 1 or 2 epochs, one diverged."""
    specs = [("t0", "completed", [0.50, 0.70, 0.80, 0.91], 1.0, 0.3),
             ("t1", "completed", [0.45, 0.66, 0.78, 0.86], 1.0, 0.9),
             ("t2", "stopped_early", [0.40, 0.60], 4.0, 0.3),
             ("t3", "stopped_early", [0.38], 4.0, 0.9),
             ("t4", "stopped_early", [0.30], 16.0, 0.3),
             ("t5", "diverged", [0.20, 0.10], 16.0, 0.9)]
    trials = [trial(tid, status, accs, wall=5.0 * len(accs), diverged_at=2 if status == "diverged" else None,
                    **{"loss.tau": tau, "loss.alpha": alpha})
              for tid, status, accs, tau, alpha in specs]
    run = make_run(tmp_path / "runs", trials,
                   params=grid_params(**{"loss.tau": [1.0, 4.0, 16.0], "loss.alpha": [0.3, 0.9]}))
    export_best(run)
    return run


def images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)]


def assert_pngs(index: Path, expected: set[str]) -> str:
    page = index.read_text()
    assert page.count("<img") == len(expected), page.count("<img")
    for blob in images(page):
        with Image.open(io.BytesIO(blob)) as im:
            assert im.format == "PNG" and im.size[0] >= 600 and im.size[1] >= 250, im.size
    on_disk = {p.name for p in index.parent.glob("*.png")}
    assert on_disk == expected, on_disk
    for name in expected:
        arr = imread(index.parent / name)
        assert arr.ndim == 3 and arr.shape[0] > 200 and arr.shape[1] > 500
        assert arr.std() > 0.01  # not a blank canvas
    return page


# ------------------------------------------------------------------------------------------------


def test_report_of_a_finished_run_has_every_figure_and_the_top_trials(grid_run: Path) -> None:
    index = write_report(grid_run, log_mlflow=False)
    assert index == grid_run / "report" / "index.html"
    page = assert_pngs(index, ALL_FIGURES)
    assert "<b>t0</b>: score <b>0.9100</b>" in page  # the top trial and its score
    assert "score</span></th>" in page and "score: last-epoch val_acc, higher is better" in page
    assert '<a href="../best/rank1.yaml">' in page and '<a href="../best/rank2.yaml">' in page
    assert (index.parent / "../best/rank1.yaml").resolve().exists()
    assert "# trial t0 " in (grid_run / "best" / "rank1.yaml").read_text()
    assert "exported from an earlier ranking" not in page
    # compute: 4+4+2+1+1+2 trial-epochs against 6 trials x 4 epochs, CPU-hours on a CPU search
    assert "trial-epochs</td><td>14</td><td>24</td>" in page
    assert "CPU-hours" in page and "GPU-hours" not in page
    assert "ASHA" in page and "fANOVA" in page
    assert "full grid, no early stopping" in page and "Early stopping saved 42% of the trial-epochs" in page
    for tid in ("t0", "t1", "t2", "t3", "t4", "t5"):
        assert f"<td class=l>{tid}</td>" in page


def test_learning_curves_and_scatter_use_the_trials_as_recorded(grid_run: Path) -> None:
    data = load_run(grid_run)
    assert data.budget == 4 and data.source == "trials.parquet"
    assert list(data.trials["status"]) == ["completed", "completed", "stopped_early", "stopped_early",
                                           "stopped_early", "diverged"]
    imp = param_importances(data)
    assert imp.values is not None and set(imp.values) == {"loss.tau", "loss.alpha"} and not imp.fixed
    assert sum(imp.values.values()) == pytest.approx(1.0)
    # one fidelity: 2 parameters want 4 trials; only t0, t1, t2 reached epoch 2 without diverging,
    # all 6 reached epoch 1 (t5 diverged at epoch 2)
    assert (imp.epoch, imp.trials) == (1, 6)
    assert "val_acc at epoch 1 of the 6 trials that reached epoch 1" in imp.note


def test_report_with_one_trial(tmp_path: Path) -> None:
    run = make_run(tmp_path, [trial("only", "completed", [0.5, 0.7, 0.8, 0.85], **{"loss.tau": 4.0})],
                   params={"loss.tau": {"kind": "uniform", "low": 1.0, "high": 20.0}},
                   searcher="random")
    index = write_report(run, log_mlflow=False)
    page = assert_pngs(index, ALL_FIGURES - {"importance.png"})
    assert "needs at least 2 trials that reached the same epoch" in page
    assert "Only one trial finished" in page
    assert "<b>only</b>" in page and "not exported" in page  # no export was run here


def test_report_when_every_trial_errored(tmp_path: Path) -> None:
    err = "RuntimeError: CUDA out of memory"
    rows = [trial(f"e{i}", "errored", [], wall=1.0, error=err, **{"loss.tau": t, "loss.alpha": 0.5})
            for i, t in enumerate([1.0, 4.0, 16.0])]
    run = make_run(tmp_path, rows,
                   params=grid_params(**{"loss.tau": [1.0, 4.0, 16.0], "loss.alpha": [0.5]}))
    (run / "report").mkdir()
    (run / "report" / "learning_curves.png").write_bytes(b"stale")  # from an earlier report
    index = write_report(run, log_mlflow=False)
    page = assert_pngs(index, set())  # no figure has data; the stale one is gone
    assert "Every trial failed (3 errored)" in page
    assert "trial-epochs</td><td>0</td><td>12</td>" in page and "saved" not in page
    assert "no learning curves" in page and "nothing was exported" in page
    assert page.count(err) == 3
    assert "needs at least 2 trials that reached the same epoch" in page


def test_report_of_a_run_in_progress_reads_rays_result_files(tmp_path: Path) -> None:
    run = make_run(tmp_path, [], write_trials=False, searcher="random", num_samples=8,
                   params={"loss.tau": {"kind": "loguniform", "low": 1.0, "high": 20.0},
                           "loss.alpha": {"kind": "uniform", "low": 0.1, "high": 0.9}})

    def result_lines(tid: str, accs: list[float], done: bool, tau: float, alpha: float) -> str:
        lines = []
        for e, acc in enumerate(accs, start=1):
            lines.append(json.dumps({
                "epoch": e, "val_acc": acc, "val_loss": 1.0, "train_loss": 1.0, "train_ce": 1.0,
                "train_kl": 0.1, "lr": 0.1, "images_per_s": 900.0, "epoch_seconds": 0.4,
                "diverged": 0.0, "done": done and e == len(accs), "trial_id": tid,
                "training_iteration": e, "time_total_s": 3.0 * e,
                "config": {"loss.tau": tau, "loss.alpha": alpha}}))
        return "\n".join(lines) + "\n"

    for tid, accs, done, tau, alpha in [("a_00000", [0.5, 0.7, 0.8, 0.9], True, 2.0, 0.2),
                                        ("a_00001", [0.4, 0.55], True, 10.0, 0.8),
                                        ("a_00002", [0.45, 0.6, 0.7], False, 3.0, 0.5),
                                        ("a_00003", [0.35], True, 18.0, 0.6)]:
        d = run / f"trial_{tid}"
        d.mkdir()
        (d / "result.json").write_text(result_lines(tid, accs, done, tau, alpha))
    (run / "trial_a_00002" / "result.json").open("a").write('{"epoch": 4, "val_a')  # being written
    pending = run / "trial_a_00004"
    pending.mkdir()
    (pending / "params.json").write_text(json.dumps({"loss.tau": 5.0, "loss.alpha": 0.3}))
    broken = run / "trial_a_00005"
    broken.mkdir()
    (broken / "params.json").write_text(json.dumps({"loss.tau": 7.0, "loss.alpha": 0.4}))
    (broken / "error.txt").write_text("Traceback ...\nValueError: bad batch\n")
    # a trial that failed once, was retried from its checkpoint and finished: not errored
    (run / "trial_a_00000" / "error.txt").write_text("Failure # 1\nRayActorError: worker died\n")
    os.utime(run / "trial_a_00000" / "error.txt", (1, 1))

    data = load_run(run)
    assert data.source == "result.json"
    status = dict(zip(data.trials["trial_id"], data.trials["status"]))
    assert status == {"a_00000": "completed", "a_00001": "stopped_early", "a_00002": "running",
                      "a_00003": "stopped_early", "a_00004": "pending", "a_00005": "errored"}
    assert sorted(data.history.groupby("trial_id").size().items()) == [
        ("a_00000", 4), ("a_00001", 2), ("a_00002", 3), ("a_00003", 1)]
    index = write_report(run, log_mlflow=False)
    page = assert_pngs(index, ALL_FIGURES)
    assert "trials.parquet is missing" in page and "ValueError: bad batch" in page
    assert "worker died" not in page
    assert "<b>a_00000</b>" in page
    assert "trials</td><td>6</td><td>8</td>" in page  # 6 trials so far of the 8 planned
    assert "this search so far" in page and "saved" not in page
    assert "../best/rank1.yaml" not in page  # nothing exported while running


def test_search_that_has_not_reported_yet(tmp_path: Path) -> None:
    run = make_run(tmp_path, [], write_trials=False, params=grid_params(**{"loss.tau": [1.0, 2.0]}))
    page = write_report(run, log_mlflow=False).read_text()
    assert "no trial has reported yet" in page
    assert page.count("<img") == 0


def test_importance_skips_single_valued_parameters_and_mixes_kinds(tmp_path: Path) -> None:
    params = {"loss.tau": {"kind": "loguniform", "low": 1.0, "high": 20.0},
              "optim.batch_size": {"kind": "int", "low": 32, "high": 128},
              "loss.semantics": {"kind": "choice", "values": ["paper", "official"]},
              "loss.a": {"kind": "choice", "values": [0.9, 0.99]}}
    rows = []
    for i in range(8):
        acc = 0.6 + 0.04 * i
        rows.append(trial(f"r{i}", "completed" if i % 2 else "stopped_early", [acc / 2, acc],
                          **{"loss.tau": 1.0 + 2.3 * i, "optim.batch_size": 32 + 12 * i,
                             "loss.semantics": ["paper", "official"][i % 2], "loss.a": 0.9}))
    run = make_run(tmp_path, rows, params=params, searcher="optuna", num_samples=8)
    imp = param_importances(load_run(run))
    assert imp.fixed == ["loss.a"]
    assert imp.values is not None and set(imp.values) == {"loss.tau", "optim.batch_size", "loss.semantics"}
    assert (imp.epoch, imp.trials) == (2, 8)
    page = assert_pngs(write_report(run, log_mlflow=False), ALL_FIGURES)
    assert "all planned trials, no early stopping" in page  # an optuna search is no grid
    assert "Left out, one value only among the trials compared: loss.a" in page


def test_importance_when_all_trials_score_the_same(tmp_path: Path) -> None:
    rows = [trial(f"s{i}", "completed", [0.5, 0.8], **{"loss.tau": t}) for i, t in enumerate([1.0, 4.0])]
    run = make_run(tmp_path, rows, params=grid_params(**{"loss.tau": [1.0, 4.0]}))
    imp = param_importances(load_run(run))
    assert imp.values is None and "scored the same val_acc" in imp.note


def test_gpu_hours_use_the_gpu_share_and_fall_back_to_cpu_hours(tmp_path: Path) -> None:
    rows = [trial("g0", "completed", [0.5, 0.6, 0.7, 0.8], wall=3600.0, **{"loss.tau": 1.0}),
            trial("g1", "stopped_early", [0.4], wall=900.0, **{"loss.tau": 4.0})]
    params = grid_params(**{"loss.tau": [1.0, 4.0]})
    gpu = make_run(tmp_path, rows, params=params, name="gpu",
                   resources={"cpu": 4, "gpu": 0.25}, device="auto")
    page = write_report(gpu, log_mlflow=False).read_text()
    # 4500 s x 0.25 GPU = 0.3125 GPU-hours; full grid: 2 x 4 epochs at 900 s x 0.25 = 0.5 GPU-hours
    assert "GPU-hours (0.25 GPU per trial)</td><td>0.312 h</td><td>0.5 h</td>" in page
    cpu = make_run(tmp_path, rows, params=params, name="cpu",
                   resources={"cpu": 4, "gpu": 0.25}, device="cpu")  # searched with --gpus 0
    page = write_report(cpu, log_mlflow=False).read_text()
    assert "CPU-hours (4 CPU per trial)</td><td>5 h</td><td>8 h</td>" in page


def test_ranking_by_val_loss_picks_the_lowest_loss_trial_as_best(tmp_path: Path) -> None:
    # b has the lowest final val_loss; a the highest accuracy: under val_loss/min, b is the best
    rows = [trial("x_00000", "completed", [0.5, 0.7, 0.9, 0.95], losses=[1.0, 0.8, 0.7, 0.6],
                  **{"loss.tau": 1.0}),
            trial("x_00001", "completed", [0.5, 0.6, 0.7, 0.8], losses=[1.0, 0.6, 0.4, 0.3],
                  **{"loss.tau": 4.0}),
            trial("x_00002", "completed", [0.4, 0.5, 0.6, 0.7], losses=[1.2, 1.0, 0.9, 0.8],
                  **{"loss.tau": 16.0})]
    run = make_run(tmp_path, rows, params=grid_params(**{"loss.tau": [1.0, 4.0, 16.0]}),
                   scheduler={"metric": "val_loss", "mode": "min"})
    data = load_run(run)
    assert (data.ranking.metric, data.ranking.mode) == ("val_loss", "min")
    assert data.best()["trial_id"] == "x_00001"
    assert list(data.ranked()["trial_id"]) == ["x_00001", "x_00000", "x_00002"]
    export_best(run)  # the export ranks with the same rule
    assert "# trial x_00001 " in (run / "best" / "rank1.yaml").read_text()
    page = write_report(run, log_mlflow=False).read_text()
    assert "<b>x_00001</b>: score <b>0.3000</b>" in page
    top = page.split("<h2>Best configurations</h2>")[1].split("</table>")[0]
    assert top.index("<td class=l>x_00001</td>") < top.index("<td class=l>x_00000</td>")
    assert "<td>1</td><td class=l>x_00001</td>" in top
    assert "last-epoch val_loss, lower is better" in page
    assert "validation loss per epoch" in page
    assert "exported from an earlier ranking" not in page


def fidelity_run(root: Path, name: str, epochs: list[int], window: int = 1) -> Path:
    """Trials of one uniform parameter that trained `epochs[i]` epochs; trial i's accuracy at epoch e
    is 0.1 * e + 0.01 * i (so the value at one epoch differs from the value at another)."""
    rows = []
    for i, n in enumerate(epochs):
        accs = [round(0.1 * e + 0.01 * i, 4) for e in range(1, n + 1)]
        rows.append(trial(f"f_{i:05d}", "completed" if n == 4 else "stopped_early", accs,
                          **{"loss.tau": 1.0 + 2.0 * i}))
    return make_run(root, rows, name=name, searcher="random", num_samples=len(epochs),
                    params={"loss.tau": {"kind": "uniform", "low": 1.0, "high": 20.0}},
                    scheduler={"window": window})


def test_importances_are_computed_at_one_fidelity(tmp_path: Path) -> None:
    # 1 parameter wants max(4, 1 + 2) = 4 trials; 4 reached epoch 4: importances at epoch 4 only
    run = fidelity_run(tmp_path, "four", [4, 4, 4, 4, 2, 2, 1, 1])
    imp = param_importances(load_run(run))
    assert (imp.epoch, imp.trials) == (4, 4)
    values = {t.user_attrs["trial_id"]: t.value for t in imp.study.trials}
    assert values == pytest.approx({f"f_{i:05d}": 0.4 + 0.01 * i for i in range(4)})
    assert "val_acc at epoch 4 of the 4 trials that reached epoch 4" in imp.note
    assert "highest that at least 4 trials reached" in imp.note
    page = write_report(run, log_mlflow=False).read_text()
    assert "importances at one fidelity: val_acc at epoch 4, 4 trials" in page  # the caption

    # only 3 reached epoch 4 (and 3); 6 reached epoch 2: epoch 2, with the ranking's window of 2
    run = fidelity_run(tmp_path, "three", [4, 4, 4, 2, 2, 2, 1, 1], window=2)
    imp = param_importances(load_run(run))
    assert (imp.epoch, imp.trials) == (2, 6)
    values = {t.user_attrs["trial_id"]: t.value for t in imp.study.trials}
    assert values == pytest.approx({f"f_{i:05d}": (0.1 + 0.2) / 2 + 0.01 * i for i in range(6)})
    assert "mean val_acc over epochs 1-2 of the 6 trials that reached epoch 2" in imp.note


def test_a_space_that_no_longer_validates_is_read_raw(tmp_path: Path) -> None:
    rows = [trial("v_00000", "completed", [0.5, 0.8, 0.85, 0.9], **{"loss.tau": 1.0}),
            trial("v_00001", "stopped_early", [0.4], **{"loss.tau": 4.0})]
    run = make_run(tmp_path, rows, params=grid_params(**{"loss.tau": [1.0, 4.0, 16.0]}))
    raw = yaml.safe_load((run / "space.yaml").read_text())
    raw["search"]["retired_option"] = True  # a key of an older version
    (run / "space.yaml").write_text(yaml.safe_dump(raw))
    data = load_run(run)
    assert data.space is None and data.params["loss.tau"].kind == "grid"
    page = write_report(run, log_mlflow=False).read_text()
    assert "space.yaml no longer validates" in page and "retired_option" in page
    assert "<b>v_00000</b>" in page and "loss.tau (grid)" in page
    assert "trials</td><td>2</td><td>2</td>" in page  # the plan is unknown: the trials seen


def test_a_folder_written_before_scores_existed(tmp_path: Path) -> None:
    run = make_run(tmp_path, [], params=grid_params(**{"loss.tau": [1.0, 4.0]}), write_trials=False)
    pd.DataFrame([{"trial_id": "o_00000", "status": "completed", "epochs": 4, "best_val_acc": 0.9,
                   "last_val_acc": 0.7, "wall_seconds": 4.0, "error": None, "loss.tau": 1.0},
                  {"trial_id": "o_00001", "status": "completed", "epochs": 4, "best_val_acc": 0.8,
                   "last_val_acc": 0.8, "wall_seconds": 4.0, "error": None, "loss.tau": 4.0}]
                 ).to_parquet(run / "trials.parquet", index=False)
    page = write_report(run, log_mlflow=False).read_text()
    assert "history.parquet is missing" in page
    assert "<b>o_00001</b>: score <b>0.8000</b>" in page  # the score falls back to last_val_acc


def test_the_report_imports_neither_the_search_nor_the_export() -> None:
    import ast

    import tfkd_search.report as report

    for f in Path(report.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = "." * node.level + (node.module or "")
                names = [mod, *(f"{mod}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for n in names:
                assert not re.match(r"^(tfkd_search|\.\.)\.?(search|export)\b", n), (f.name, n)


@pytest.mark.parametrize("case", ["missing", "file", "empty", "storage"])
def test_not_a_run_folder_is_a_config_error(tmp_path: Path, case: str, capsys) -> None:
    target = tmp_path / "x"
    if case == "file":
        target.write_text("hi")
    elif case == "empty":
        target.mkdir()
    elif case == "storage":
        make_run(target, [], params=grid_params(**{"loss.tau": [1.0]}), name="inner")
    with pytest.raises(ConfigError) as err:
        write_report(target, log_mlflow=False)
    msg = str(err.value)
    assert str(target) in msg
    assert {"missing": "does not exist", "file": "is a file", "empty": "not a tfkd-search run folder",
            "storage": str(target / "inner")}[case] in msg
    assert cli_main(["report", str(target)]) == 2
    assert "tfkd-search: error: report:" in capsys.readouterr().err


def test_unreachable_mlflow_only_warns(grid_run: Path, tmp_path: Path, capsys) -> None:
    state = json.loads((grid_run / "search.json").read_text())
    state.update(mlflow_uri=f"http://127.0.0.1:{free_port()}", parent_run_id="0" * 32)
    (grid_run / "search.json").write_text(json.dumps(state))
    assert cli_main(["report", str(grid_run)]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(grid_run / "report" / "index.html")
    assert "warning: could not log the report to MLflow" in out.err
    # a moved sqlite store: warn, and do not create an empty database there
    state.update(mlflow_uri=f"sqlite:///{tmp_path / 'gone' / 'mlflow.db'}")
    (grid_run / "search.json").write_text(json.dumps(state))
    assert cli_main(["report", str(grid_run)]) == 0
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "gone").exists()


def test_report_is_logged_to_the_mlflow_parent_run(tmp_path: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    from tfkd_search.tracking import Tracker

    monkeypatch.chdir(tmp_path)  # the default artifact root ./mlruns lands here
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "rep")
    parent = tracker.start_parent("rep-x", "search-rep", tags={"tfkd.role": "search"})
    rows = [trial("m0", "completed", [0.5, 0.9], **{"loss.tau": 1.0}),
            trial("m1", "completed", [0.5, 0.8], **{"loss.tau": 4.0})]
    run = make_run(tmp_path / "runs", rows, params=grid_params(**{"loss.tau": [1.0, 4.0]}),
                   mlflow_uri=uri, parent_run_id=parent)
    write_report(run)
    logged = {Path(a.path).name for a in MlflowClient(uri).list_artifacts(parent, "report")}
    assert logged == {"index.html", *ALL_FIGURES}


# ------------------------------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_a_real_search_writes_and_logs_its_report(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from _proc import cli_env, run_cli

    space = write_space(tmp_path / "tiny.yaml", "tinyrep",
                        search_block(grid_params(**{"loss.tau": [1.0, 8.0]})), base=base_cfg(2),
                        export={"top_k": 1, "seeds": [0], "epochs": 2})
    res = run_cli(["--space", str(space), "--storage", str(tmp_path / "runs")], cli_env(),
                  timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run = tmp_path / "runs" / "tinyrep"
    index = run / "report" / "index.html"
    assert f"report: {index}" in res.stdout and "warning" not in res.stdout
    page = assert_pngs(index, ALL_FIGURES)
    folder = RunFolder(run)
    top = folder.ranking().best(folder.read_trials())  # the ranking rule's best, as the export's
    assert f"<b>{top.trial_id}</b>" in page and '<a href="../best/rank1.yaml">' in page
    state = json.loads((run / "search.json").read_text())
    c = MlflowClient(state["mlflow_uri"])
    logged = {Path(a.path).name for a in c.list_artifacts(state["parent_run_id"], "report")}
    assert logged == {"index.html", *ALL_FIGURES}
    # on demand, again: same figures, logged again without duplicates
    res = run_cli(["report", str(run)], cli_env(), timeout=120, cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == str(index), res.stderr
    assert {Path(a.path).name for a in c.list_artifacts(state["parent_run_id"], "report")} == logged
