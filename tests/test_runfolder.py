"""The run-folder model: trial records and statuses, the one ranking rule, the tables' round trip,
and the export's arithmetic (milestone rescaling, final-run seeds)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tfkd_search.export import final_seeds, scaled_milestones
from tfkd_search.runfolder import (FINISHED, TRIAL_COLUMNS, Ranking, RunFolder, TrialRecord,
                                   TrialStatus, normalize_trials, trial_index, trial_status,
                                   windowed)


def _reports(accs, losses=None, diverged_at=None):
    out = []
    for i, acc in enumerate(accs, start=1):
        out.append({"epoch": i, "val_acc": acc, "val_loss": (losses or [1.0] * len(accs))[i - 1],
                    "diverged": 1.0 if diverged_at == i else 0.0, "time_total_s": float(i)})
    return out


def _table(rows):
    """rows: (trial_id, status, epochs, score)"""
    return pd.DataFrame([{"trial_id": t, "trial_index": trial_index(t), "status": s, "epochs": e,
                          "score": v} for t, s, e, v in rows])


def test_trial_index_and_status():
    assert trial_index("abcde_00042") == 42 and trial_index("weird") == -1
    assert trial_status({"epoch": 8}, None, 8) is TrialStatus.COMPLETED
    assert trial_status({"epoch": 2}, None, 8) is TrialStatus.STOPPED_EARLY
    assert trial_status({"epoch": 2, "diverged": 1.0}, None, 8) is TrialStatus.DIVERGED
    assert trial_status({"epoch": 8}, "boom", 8) is TrialStatus.ERRORED


def test_windowed_mean_ignores_non_finite_values():
    assert windowed([0.1, 0.2, 0.3, 0.6], 2) == pytest.approx(0.45)
    assert windowed([0.5, float("nan")], 3) == pytest.approx(0.5)
    assert windowed([], 3) != windowed([], 3)  # NaN


def test_ranking_puts_longer_trials_first_then_score_then_index():
    t = _table([("x_00003", "completed", 8, 0.90), ("x_00001", "stopped_early", 4, 0.99),
                ("x_00000", "completed", 8, 0.90), ("x_00002", "completed", 8, 0.95),
                ("x_00004", "diverged", 2, 0.0), ("x_00005", "errored", 0, float("nan"))])
    ranked = Ranking().rank(t)
    assert list(ranked["trial_id"]) == ["x_00002", "x_00000", "x_00003", "x_00001"]
    assert set(ranked["status"]) <= set(FINISHED)
    assert Ranking().best(t)["trial_id"] == "x_00002"


def test_ranking_under_val_loss_picks_the_lowest_loss():
    t = _table([("x_00000", "completed", 4, 0.40), ("x_00001", "completed", 4, 0.20),
                ("x_00002", "completed", 4, 0.30)])
    r = Ranking(metric="val_loss", mode="min", window=1)
    assert list(r.rank(t)["trial_id"]) == ["x_00001", "x_00002", "x_00000"]
    assert Ranking().best(t)["trial_id"] == "x_00000"  # the same table by accuracy: the highest


def test_ranking_of_a_space_and_its_score():
    r = Ranking.of_space({"metric": "val_loss", "mode": "min", "window": 2})
    assert (r.metric, r.mode, r.window) == ("val_loss", "min", 2)
    h = pd.DataFrame(_reports([0.5, 0.6, 0.7], losses=[3.0, 2.0, 1.0]))
    assert r.score(h) == pytest.approx(1.5)
    assert "lower is better" in r.describe() and "last 2 epochs" in r.describe()


def test_record_from_reports_and_tables_round_trip(tmp_path):
    ranking = Ranking(window=2)
    done = TrialRecord.from_reports("ab_00000", _reports([0.5, 0.7, 0.8]), {"loss.tau": 4.0},
                                    budget=3, ranking=ranking)
    # a restarted trial repeats epoch 2: the last report of an epoch wins
    again = _reports([0.5, 0.6]) + [{"epoch": 2, "val_acc": 0.65, "diverged": 0.0}]
    stopped = TrialRecord.from_reports("ab_00001", again, {"loss.tau": 1.0}, budget=3,
                                       ranking=ranking)
    bad = TrialRecord.from_reports("ab_00002", _reports([0.5, 0.1], diverged_at=2),
                                   {"loss.tau": 40.0}, budget=3, ranking=ranking)
    err = TrialRecord.from_reports("ab_00003", [], {"loss.tau": 2.0}, budget=3, ranking=ranking,
                                   error="RuntimeError: boom")
    assert (done.status, stopped.status, bad.status, err.status) == (
        TrialStatus.COMPLETED, TrialStatus.STOPPED_EARLY, TrialStatus.DIVERGED, TrialStatus.ERRORED)
    assert done.score == pytest.approx(0.75) and stopped.score == pytest.approx(0.575)
    assert bad.score == pytest.approx(0.5)  # the diverged epoch does not count
    folder = RunFolder(tmp_path)
    written = folder.write_tables([done, stopped, bad, err], ["loss.tau"])
    assert list(written.columns) == [*TRIAL_COLUMNS, "loss.tau"]
    back = folder.read_trials()
    assert list(back["epochs"]) == [3, 2, 2, 0]
    assert list(back["trial_index"]) == [0, 1, 2, 3]
    assert back.loc[2, "last_val_acc"] == 0.0 and back.loc[3, "error"] == "RuntimeError: boom"
    hist = folder.read_history()
    assert hist[hist.trial_id == "ab_00001"]["val_acc"].tolist() == [0.5, 0.65]


def test_normalize_an_older_table_without_scores():
    old = pd.DataFrame({"trial_id": ["q_00001", "q_00000"], "status": ["completed", "completed"],
                        "epochs": [4, 4], "best_val_acc": [0.9, 0.95], "last_val_acc": [0.8, 0.9]})
    t = normalize_trials(old)
    assert list(t["trial_index"]) == [1, 0]
    assert Ranking().best(t)["trial_id"] == "q_00000"  # by the last accuracy it held


def test_run_folder_state_and_space(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert not folder.exists() and folder.read_state() == {}
    folder.path.mkdir()
    folder.write_state({"name": "x"})
    assert folder.update_state(finished=True) == {"name": "x", "finished": True}
    assert folder.is_finished()
    folder.write_space({"search": {"scheduler": {"metric": "val_loss", "mode": "min"}}})
    assert folder.ranking() == Ranking("val_loss", "min", 1)
    folder.state_path.write_text("{torn")
    assert folder.read_state() == {}
    json.loads(json.dumps(folder.read_space_raw()))


def test_scaled_milestones_follow_the_recipe_to_another_length():
    assert scaled_milestones([60, 120, 160], 200, 200) == [60, 120, 160]
    assert scaled_milestones([60, 120, 160], 200, 100) == [30, 60, 80]
    assert scaled_milestones([5, 7], 8, 200) == [125, 175]
    assert scaled_milestones([1, 2], 3, 2) == [1]  # merged, inside (0, epochs)
    assert scaled_milestones([60], 200, 1) == []


def test_final_seeds_never_replay_the_teachers_seed():
    assert final_seeds([0, 1, 2], None) == [0, 1, 2]
    assert final_seeds([0, 1, 2], 5) == [0, 1, 2]
    assert final_seeds([0, 1, 2], 0) == [1, 2, 3]
    assert final_seeds([3], 3) == [4]


def test_to_tune_for_every_distribution_kind():
    from ray.tune.search.sample import Categorical, Float, Integer

    from tfkd_search.search import to_tune
    from tfkd_search.spaces import Choice, Grid, IntRange, LogUniform, Uniform

    grid = to_tune(Grid(kind="grid", values=[1, 2]))
    assert grid == {"grid_search": [1, 2]}
    choice = to_tune(Choice(kind="choice", values=["a", "b"]))
    assert isinstance(choice, Categorical) and choice.categories == ["a", "b"]
    uni = to_tune(Uniform(kind="uniform", low=0.1, high=0.9))
    assert isinstance(uni, Float) and (uni.lower, uni.upper) == (0.1, 0.9)
    log = to_tune(LogUniform(kind="loguniform", low=1.0, high=100.0))
    assert isinstance(log, Float) and isinstance(log.get_sampler(), Float._LogUniform)
    ints = to_tune(IntRange(kind="int", low=32, high=64))
    assert isinstance(ints, Integer) and (ints.lower, ints.upper) == (32, 65)  # ours includes 64
    with pytest.raises(TypeError):
        to_tune(object())


def test_a_trial_out_of_gpu_memory_says_what_to_change(make_cfg):
    import torch

    from tfkd_search.search.trial import TrialOutOfMemory, train_explaining_oom

    def oom(cfg, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(TrialOutOfMemory) as err:
        train_explaining_oom(oom, make_cfg({"optim.batch_size": 512}), 0.25)
    msg = str(err.value)
    assert "at batch 512 with 4 trial(s) per GPU" in msg
    assert "search.resources.gpu: 0.5 runs 2 per GPU instead of 4" in msg
    assert "base.optim.batch_size" in msg and "Tried to allocate 2.00 GiB" in msg
    assert train_explaining_oom(lambda cfg, **kw: "ok", make_cfg(), 1.0) == "ok"
