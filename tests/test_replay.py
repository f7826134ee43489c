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


# -- the finalists stage, on synthetic curves whose right answer is known ----------------------------
def _synthetic(path: Path, *, better: float, sd: float = 0.01, plain: int = 10, seeds: int = 6,
               budget: int = 6, seed: int = 0) -> Path:
    """Curves of CE, LSR (eps 0.1) and `plain` Tf-KD configs with the same true accuracy (0.80), except
    paper:tau=0, `better` above it. Each (config, seed) run is the truth plus a seed effect (sd `sd`)
    reached along a rising curve; its stand-in test accuracy is the config's truth (tiny noise), so the
    best config on the test is known."""
    import numpy as np
    import pandas as pd

    from curves import write

    rng = np.random.default_rng(seed)
    configs = [("ce", "ce", 0.1, 0.0), ("lsr:eps=0.1", "lsr", 0.1, 0.0)]
    configs += [(f"paper:tau={t}", "tfkd_reg", 0.1, better if t == 0 else 0.0) for t in range(plain)]
    rows = []
    for cid, method, eps, lift in configs:
        for s in range(seeds):
            final = 0.80 + lift + rng.normal(0, sd)
            test = 0.80 + lift + rng.normal(0, 0.0005)
            for e in range(1, budget + 1):
                rows.append({"config_id": cid, "method": method, "loss.eps": eps, "loss.tau": 1.0,
                             "seed": s, "epoch": e, "val_acc": final - 0.1 * (budget - e) / budget
                             + rng.normal(0, 0.002), "diverged": 0.0, "test_acc": test,
                             "status": "completed"})
    write(pd.DataFrame(rows), {"budget": budget, "keys": ["method", "loss.tau", "loss.eps"], "base": {}},
          path)
    return path


def _run(replay, path: Path, finalists: list[str], replays: int = 150, **kw):
    return replay.run(str(path), None, replays=replays, seed=0, overrides={}, variants=[], concurrency=4,
                      finalists=finalists, **kw)


def test_finalists_find_the_better_config_more_often_than_the_one_seed_grid(replay, tmp_path):
    path = _synthetic(tmp_path / "c.parquet", better=0.012)
    res = _run(replay, path, ["top3 n3:top=3;seeds=3"])
    names = [r["name"] for r in res["rows"]]
    assert names[:3] == ["full grid, 1 seed", "full grid, all 6 seeds", "default search (sync w2 g2 rf3)"]
    assert names[3] == "finalists top3 n3" and names[4].startswith("random @")
    assert res["test_best_config"] == "paper:tau=0"
    grid, oracle, _, fin, _ = res["rows"]
    assert oracle["modal_pick"] == "paper:tau=0" and oracle["test_regret_mean"] == 0
    assert fin["test_best_share"] >= grid["test_best_share"] + 0.2, (fin["picks"], grid["picks"])
    assert fin["test_regret_mean"] < grid["test_regret_mean"]
    assert fin["finalists"]["baselines"] == {"ce": "ce", "lsr": "lsr:eps=0.1"}


def test_trial_epochs_count_the_finalists_and_the_baselines(replay, tmp_path):
    path = _synthetic(tmp_path / "c.parquet", better=0.0)
    res = _run(replay, path, ["grid+:top=2;seeds=3;kind=none"], replays=20)
    fin = res["rows"][3]
    # 12 configs x 6 epochs searched, then (2 finalists + CE + LSR) x 3 seeds x 6 epochs
    assert fin["trial_epochs_frac"] == pytest.approx((12 + 4 * 3) / 12)
    assert res["rows"][1]["trial_epochs_frac"] == pytest.approx(6.0)


def test_finalists_once_ranks_by_the_fresh_seeds_and_compares_paired(replay, tmp_path):
    curves = replay.Curves(_synthetic(tmp_path / "c.parquet", better=0.0, sd=0.02, seed=4))
    ranked = [f"paper:tau={t}" for t in range(10)]
    fresh = [1, 3, 5]
    fin = replay.finalists_once(curves, ranked, fresh, 4, 2, "max", replay.baseline_ids(curves))
    mean = {c: sum(curves.windowed(c, s, 2)[-1] for s in fresh) / 3 for c in ranked[:4]}
    assert fin.order == sorted(ranked[:4], key=lambda c: -mean[c]) and fin.pick == fin.order[0]
    assert fin.runs == (4 + 2) * 3
    ce = fin.verdicts["ce"]
    assert ce.paired and ce.n == 3
    assert ce.diff == pytest.approx(mean[fin.pick] - sum(curves.windowed("ce", s, 2)[-1] for s in fresh) / 3)


def test_targets_are_read_off_the_rows(replay, tmp_path):
    """The issue's targets for the first finalists row, each against its bound, with what bounds it
    from below: on 12 configs at budget 6 the cheapest stage with an interval (1 finalist + CE + LSR,
    3 seeds) is (1 + 2) x 3 x 6 of the grid's 12 x 6 trial-epochs."""
    path = _synthetic(tmp_path / "c.parquet", better=0.012)
    res = _run(replay, path, ["top3 n3:top=3;seeds=3", "top1 n3:top=1;seeds=3"], replays=60)
    t, grid, oracle, fin = res["targets"], res["rows"][0], res["rows"][1], res["rows"][3]
    assert t["row"] == "finalists top3 n3" == fin["name"]
    assert t["trial_epochs"]["cheapest_stage"] == pytest.approx(0.75)
    assert t["trial_epochs"]["value"] == fin["trial_epochs_frac"] > 1.0 and not t["trial_epochs"]["met"]
    assert t["test_regret"]["bound"] == pytest.approx(grid["test_regret_mean"] / 2)
    assert t["test_regret"]["all_seed_pick"] == oracle["test_regret_mean"] == 0
    assert t["test_regret"]["met"] == (fin["test_regret_mean"] <= grid["test_regret_mean"] / 2)
    assert t["modal_pick"]["bound"] == pytest.approx(2 * grid["repeat_share"])
    assert t["modal_pick"]["met"] == (fin["repeat_share"] >= 2 * grid["repeat_share"])
    assert t["better_when_near"]["near"] == fin["calibration"]["near"]
    text = replay.table(res)
    assert "targets for 'finalists top3 n3'" in text and "alone is 75%" in text
    assert replay.targets(res["rows"][:3], 6) is None  # no finalists row, no targets


def test_no_better_config_rarely_reads_better(replay, tmp_path):
    """Every config equal: the verdict against the truly best baseline says `better` in few replays
    (the winner's curse of ranking the finalists on the seeds they are compared on is the excess over
    the interval's 2.5%). A recording holds few seed draws, so several recordings are pooled."""
    better = near = 0
    for k in range(6):
        res = _run(replay, _synthetic(tmp_path / f"c{k}.parquet", better=0.0, seed=10 + k),
                   ["top2 n3:top=2;seeds=3"], replays=50)
        cal = res["rows"][3]["calibration"]
        near += cal["near"]
        better += round(cal["better_when_near"] * cal["near"])
    assert near == 6 * 50
    assert better / near <= 0.10, (better, near)


def test_finalists_cli_and_bad_input(replay, tmp_path, capsys):
    path = _synthetic(tmp_path / "c.parquet", better=0.01)
    out = tmp_path / "r.json"
    replay.main([str(path), "--replays", "10", "--finalists", "top2 n3:top=2;seeds=3", "--eval-size", "500",
                 "--json", str(out)])
    assert "finalists top2 n3" in capsys.readouterr().out
    row = json.loads(out.read_text())["rows"][3]
    assert row["calibration"]["replays"] == 10 and row["calibration_eval_size"]["eval_size"] == 500
    with pytest.raises(SystemExit, match="fresh seeds"):
        _run(replay, path, ["too many:top=2;seeds=6"], replays=2)
    with pytest.raises(SystemExit, match="unknown key"):
        _run(replay, path, ["bad:top=2;seed=3"], replays=2)
    from curves import read_curves, write

    df, meta = read_curves(path)
    write(df[df["config_id"] != "ce"], meta, tmp_path / "no_ce.parquet")
    with pytest.raises(SystemExit, match="ce baseline"):
        _run(replay, tmp_path / "no_ce.parquet", ["top2 n3:top=2;seeds=3"], replays=2)


@pytest.mark.parametrize("name,spread", [("digits-tiny_cnn", 0.0), ("cifar10-tiny_cnn", 0.0),
                                         ("cifar10-tiny_cnn-mix", 2.0)])
def test_recorded_curves_for_the_finalists_replays(replay, name, spread):
    """The committed curves hold 6 seeds of every config, CE and LSR (eps 0.1) among them; the mix
    setting's config means (stand-in test) span at least 2 points."""
    path = ROOT / "benchmarks" / "results" / f"curves-{name}.parquet"
    curves = replay.Curves(path)
    assert curves.seeds >= 6 and min(len(v) for v in curves.values.values()) == max(
        len(v) for v in curves.values.values())
    assert replay.baseline_ids(curves) == {"ce": "ce", "lsr": "lsr:eps=0.1"}
    means = [100 * curves.final_test(c) for c in curves.ids]
    assert max(means) - min(means) >= spread
