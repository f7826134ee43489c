"""finalists.py: which configs become finalists, their seeds, their ranking over seeds, the answer table
(no Ray: the search, the export and benchmarks/replay.py share these functions)."""

from __future__ import annotations

import math

import pytest

from tfkd_search.finalists import (baseline_overrides, choose, format_standings, fresh_seeds, label, rank,
                                   seeds_avoiding, standings)


def test_choose_takes_the_first_distinct_configs_in_ranking_order():
    ranked = [{"loss.tau": 4.0, "loss.alpha": 0.3}, {"loss.tau": 4.0, "loss.alpha": 0.3},  # a repeat
              {"loss.tau": 1.0, "loss.alpha": 0.9}, {"loss.tau": 16.0, "loss.alpha": 0.3}]
    assert choose(ranked, 2) == [ranked[0], ranked[2]]
    assert choose(ranked, 10) == [ranked[0], ranked[2], ranked[3]]
    assert choose(ranked, 0) == []


def test_fresh_seeds_never_include_the_search_seed_and_avoid_taken_ones():
    assert fresh_seeds(0, 3) == [1, 2, 3]
    assert fresh_seeds(7, 2) == [8, 9]
    assert fresh_seeds(0, 0) == []
    assert seeds_avoiding([1, 2, 3], {2}) == [1, 3, 4]  # e.g. the teacher's seed
    assert seeds_avoiding([1, 2, 3], {0, 5}) == [1, 2, 3]
    assert seeds_avoiding([3], [3]) == [4]


def test_label_is_stable_and_distinguishes_configs():
    assert label({"loss.tau": 4.0, "loss.alpha": 0.3}) == label({"loss.alpha": 0.3, "loss.tau": 4.0})
    assert label({"loss.tau": 4.0}) == "loss.tau=4"
    assert label({"loss.tau": 0.123456789}) != label({"loss.tau": 0.1234568})


def test_baselines_are_the_same_recipe_with_another_method():
    assert baseline_overrides("ce") == {"method": "ce"}
    assert baseline_overrides("lsr") == {"method": "lsr", "loss.eps": 0.1}
    assert baseline_overrides("lsr", 0.2) == {"method": "lsr", "loss.eps": 0.2}
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_overrides("kd")


def test_rank_by_mean_over_seeds_failed_seeds_last_ties_to_the_search_order():
    scores = {"finalist1": [0.90, 0.92, 0.91],      # mean 0.910
              "finalist2": [0.95, 0.90, 0.91],      # mean 0.920: better on average
              "finalist3": [0.99, math.nan, 0.99],  # a diverged seed: after every whole config
              "finalist4": [0.92, 0.91, 0.93]}      # mean 0.920: ties with finalist2
    order = ["finalist1", "finalist2", "finalist3", "finalist4"]
    assert rank(scores, order) == ["finalist2", "finalist4", "finalist1", "finalist3"]
    assert rank(scores, ["finalist4", "finalist2", "finalist1", "finalist3"])[:2] == ["finalist4",
                                                                                    "finalist2"]
    # a loss-like metric: lower is better
    assert rank({"a": [1.0, 1.2], "b": [0.9, 1.0]}, ["a", "b"], mode="min") == ["b", "a"]
    assert rank({"a": [math.nan], "b": [0.5]}, ["a", "b"]) == ["b", "a"]


def test_standings_pair_each_finalist_with_each_baseline_on_the_same_seeds():
    seeds = [1, 2, 3, 4]
    ce = dict(zip(seeds, [0.900, 0.910, 0.905, 0.895]))
    lsr = dict(zip(seeds, [0.910, 0.915, 0.912, 0.905]))
    good = {s: ce[s] + 0.02 for s in seeds}          # +2 points on every seed: surely better
    same = {s: lsr[s] + d for s, d in zip(seeds, [0.004, -0.003, 0.002, -0.004])}
    rows = standings({"finalist1": same, "finalist2": good, "ce": ce, "lsr": lsr},
                     ["finalist1", "finalist2"])
    assert [r.name for r in rows] == ["finalist2", "finalist1", "ce", "lsr"]
    top = rows[0]
    assert top.against == "lsr"  # the stronger baseline decides
    assert top.versus["ce"].diff == pytest.approx(0.02) and top.versus["ce"].verdict == "better"
    assert top.versus["ce"].paired and top.versus["ce"].n == 4
    assert top.headline().verdict == "better"
    assert rows[1].headline().verdict == "no detectable difference"
    assert rows[2].role == "baseline" and rows[2].versus == {} and rows[2].headline() is None
    assert rows[2].summary.n == 4 and rows[2].summary.mean == pytest.approx(0.9025)
    text = format_standings(rows, "val_acc", {"finalist2": "rank1 (tau=4)"})
    lines = text.splitlines()
    assert lines[0].split() [:2] == ["config", "val_acc"]
    assert lines[2].startswith("rank1 (tau=4)") and lines[2].rstrip().endswith("better than LSR")
    assert "+2.00 [+2.00, +2.00] better" in lines[2]  # CE + 2 points on every seed: a zero-width CI
    assert lines[3].rstrip().endswith("no detectable difference to LSR")
    assert "(baseline)" in lines[4] and "(baseline)" in lines[5]


def test_standings_with_two_seeds_give_no_interval_and_say_so():
    rows = standings({"finalist1": {1: 0.95, 2: 0.96}, "ce": {1: 0.90, 2: 0.91}, "lsr": {1: 0.9, 2: 0.9}},
                     ["finalist1"])
    c = rows[0].versus["ce"]
    assert c.low is None and c.high is None and c.verdict == "no detectable difference"
    text = format_standings(rows)
    assert "+5.00 (no interval)" in text
    assert "only 2 paired seeds; an interval needs 3" in text


def test_standings_without_baselines_rank_and_say_there_is_nothing_to_compare_with():
    """An export made before baselines existed: `final` still ranks the configs, and says so."""
    rows = standings({"rank1": {0: 0.90, 1: 0.92, 2: 0.91}, "rank2": {0: 0.93, 1: 0.94, 2: 0.95}},
                     ["rank1", "rank2"])
    assert [r.name for r in rows] == ["rank2", "rank1"] and rows[0].headline() is None
    text = format_standings(rows)
    assert text.splitlines()[2].rstrip().endswith("(no baseline to compare with)")
    assert "(baseline)" not in text


def test_standings_with_per_image_results_put_the_split_noise_in_every_interval():
    from tfkd_search.finalists import standings
    from tfkd_search.stats import pack_correct

    seeds = [1, 2, 3]
    # finalist1 gets images 0-9 right that CE gets wrong: a 10-image effect on a 50-image split
    fin = {s: pack_correct([1] * 10 + [1] * 30 + [s % 2] * 10) for s in seeds}
    ce = {s: pack_correct([0] * 10 + [1] * 30 + [s % 2] * 10) for s in seeds}
    scores = {"finalist1": {1: 0.81, 2: 0.79, 3: 0.82}, "ce": {1: 0.61, 2: 0.60, 3: 0.63}}
    plain = standings(scores, ["finalist1"])
    wide = standings(scores, ["finalist1"], examples={"finalist1": fin, "ce": ce})
    p, w = plain[0].versus["ce"], wide[0].versus["ce"]
    assert w.examples == 50 and p.examples == 0
    assert w.low < p.low and w.high > p.high and w.diff == p.diff
    assert "widened by the sampling noise of the 50 evaluation images" in format_standings(wide)
    # a baseline without per-image results (a folder of an older version): the seeds' interval
    assert standings(scores, ["finalist1"], examples={"finalist1": fin})[0].versus["ce"] == p


def test_per_seed_keeps_the_per_image_results_of_scored_runs_only():
    from tfkd_search.finalists import per_seed

    scores, examples = per_seed([("finalist1", 1, 0.9, "3:5"), ("finalist1", 2, math.nan, "3:7"),
                                 ("ce", 1, 0.8, None), ("ce", 2, 0.7, "")])
    assert scores["finalist1"][1] == 0.9 and math.isnan(scores["finalist1"][2])
    assert scores["ce"] == {1: 0.8, 2: 0.7}
    assert examples == {"finalist1": {1: "3:5"}}  # a failed run's and empty results left out
