"""benchmarks/replay.py against the committed digits curves (no training, a few seconds)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CURVES = ROOT / "benchmarks" / "results" / "curves-digits-tiny_cnn.parquet"
SPEC = ROOT / "benchmarks" / "curves_digits_tiny_cnn.yaml"
sys.path.insert(0, str(ROOT / "benchmarks"))

pytestmark = pytest.mark.skipif(not CURVES.exists(), reason="digits curves not recorded")


@pytest.fixture(scope="module")
def replay():
    import replay as mod

    return mod


@pytest.fixture(scope="module")
def curves(replay):
    return replay.Curves(CURVES)


@pytest.fixture(scope="module")
def plan(replay, curves):
    return replay.load_plan(curves, str(SPEC), {}, concurrency=8)


def test_curves_file_is_complete_and_small(curves):
    assert CURVES.stat().st_size < 1_000_000
    assert curves.seeds >= 2 and curves.budget == 12 and len(curves.ids) >= 30
    assert {"ce", "lsr:eps=0.1"} <= set(curves.ids)


def test_replay_cli_writes_json_and_table(replay, tmp_path, capsys):
    out = tmp_path / "r.json"
    replay.main([str(CURVES), "--space", str(SPEC), "--replays", "12", "--seed", "1",
                 "--variant", "sync w2:synchronous=true;window=2", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "full grid" in printed and "old default" in printed and "sync w2" in printed
    res = json.loads(out.read_text())
    assert res["replays"] == 12 and res["best_config"] in res["truth"]
    names = [r["name"] for r in res["rows"]]
    assert names[0] == "full grid" and names[1].startswith("random @") and "sync w2" in names
    for r in res["rows"]:
        for key in ("regret_mean", "regret_worst", "regret_p90", "test_regret_mean", "trial_epochs_frac",
                    "repeat_share", "modal_pick", "spearman", "rungs", "scheduler", "picks"):
            assert key in r, key
        assert 0 <= r["regret_mean"] <= r["regret_worst"]
        assert 0 < r["trial_epochs_frac"] <= 1.0 + 1e-9
        assert 0 < r["slot_use"] <= 1.0 + 1e-9 and r["wall_frac"] > 0
    full = res["rows"][0]
    assert full["trial_epochs_frac"] == pytest.approx(1.0) and full["spearman"] == {}
    assert full["wall_frac"] == pytest.approx(1.0)
    sync = res["rows"][names.index("sync w2")]
    assert set(sync["spearman"]) == {str(x) for x in sync["rungs"]}


def test_sync_repeats_its_pick_for_every_arrival_order(replay, plan, curves):
    sch = {**plan.scheduler, "kind": "asha", "synchronous": True, "window": 2,
           "rungs": [3, 6], "reduction_factor": 3}
    for conc in (3, 8):
        plan.concurrency = conc
        row = replay.evaluate(plan, curves, "sync", sch, 25, seed=7, fixed_noise=True)
        assert row["repeat_share"] == 1.0, row["picks"]
    plan.concurrency = 8


def test_a_bad_scheduler_loses_to_the_full_grid(replay, plan, curves):
    full = replay.evaluate(plan, curves, "full", {**plan.scheduler, "kind": "none"}, 80, seed=3)
    bad = replay.evaluate(plan, curves, "bad", {**plan.scheduler, "kind": "asha", "synchronous": False,
                                                "window": 1, "grace_period": 1, "reduction_factor": 8,
                                                "rungs": None}, 80, seed=3)
    assert bad["trial_epochs_frac"] < 0.3
    assert bad["regret_mean"] > full["regret_mean"] + 0.1


def test_waiting_at_synchronous_rungs_shows_as_idle_slots(replay, plan, curves):
    """One trial at a time never waits (a trial paused at a rung hands its slot to the next); with 8
    at a time a synchronous rung idles the slots of the trials that reached it first."""
    sync = {**plan.scheduler, "kind": "asha", "synchronous": True, "window": 2, "rungs": [3, 6],
            "reduction_factor": 3}
    try:
        plan.concurrency = 1
        one = replay.evaluate(plan, curves, "sync", sync, 10, seed=2)
        assert one["slot_use"] == pytest.approx(1.0)
        plan.concurrency = 8
        eight = replay.evaluate(plan, curves, "sync", sync, 10, seed=2)
        async_ = replay.evaluate(plan, curves, "async", {**sync, "synchronous": False}, 10, seed=2)
        assert eight["slot_use"] < async_["slot_use"] < 1.0
        assert eight["wall"] < one["wall"] / 3  # but 8 slots still answer far sooner than one
    finally:
        plan.concurrency = 8
