"""tfkd_search.stats: the t quantile against textbook tables and scipy, compare() against hand-computed
paired and Welch intervals, and the verdict's direction."""

from __future__ import annotations

import math
import random

import pytest

from tfkd_search import stats
from tfkd_search.stats import VERDICTS, compare, format_comparison, format_summary, summarize, t_cdf, t_ppf


@pytest.mark.parametrize("p,df,table", [
    (0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 4, 2.776), (0.975, 5, 2.571), (0.975, 10, 2.228),
    (0.975, 30, 2.042), (0.95, 5, 2.015), (0.995, 3, 5.841), (0.9, 20, 1.325), (0.975, 120, 1.980),
])
def test_t_quantile_matches_printed_tables(p, df, table):
    assert t_ppf(p, df) == pytest.approx(table, abs=6e-4)
    assert t_ppf(1 - p, df) == pytest.approx(-table, abs=6e-4)


def test_t_quantile_and_cdf_match_scipy_including_fractional_df():
    sp = pytest.importorskip("scipy.stats")
    for df in (1, 1.5, 2, 2.7, 3, 4.2, 7, 9.9, 15, 29, 64.5, 500):
        for p in (0.6, 0.8, 0.9, 0.95, 0.975, 0.99, 0.999):
            assert t_ppf(p, df) == pytest.approx(sp.t.ppf(p, df), rel=1e-9), (p, df)
        for t in (-8.0, -2.0, -0.3, 0.0, 0.7, 1.9, 4.0, 30.0):
            assert t_cdf(t, df) == pytest.approx(sp.t.cdf(t, df), rel=1e-9, abs=1e-14), (t, df)


def test_t_rejects_bad_arguments():
    for p in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(ValueError):
            t_ppf(p, 3)
    with pytest.raises(ValueError):
        t_cdf(1.0, 0)


def test_summarize_sample_std_and_dropped_values():
    s = summarize([0.90, 0.92, float("nan"), 0.94, float("inf")])
    assert (s.n, s.dropped) == (3, 2)
    assert s.mean == pytest.approx(0.92)
    assert s.std == pytest.approx(0.02)  # ddof=1: sqrt((0.02^2 + 0 + 0.02^2) / 2)
    one = summarize([0.5])
    assert one.mean == 0.5 and math.isnan(one.std) and one.n == 1
    none = summarize([])
    assert none.n == 0 and math.isnan(none.mean)
    assert format_summary(s, scale=100) == "92.00 ± 2.00 (n=3, 2 failed)"
    assert format_summary(one) == "0.50 ± n/a (n=1)"


A = {0: 0.90, 1: 0.92, 2: 0.91, 3: 0.93, 4: 0.94}
B = {0: 0.89, 1: 0.90, 2: 0.90, 3: 0.91, 4: 0.92}


def test_paired_interval_by_hand():
    # differences 0.01 0.02 0.01 0.02 0.02: mean 0.016, sd sqrt(120e-6 / 4), se sd / sqrt(5),
    # t(0.975, 4) = 2.7764451 -> half width 0.0068008
    c = compare(A, B)
    assert c.paired and c.n == 5 and c.verdict == "better"
    assert c.diff == pytest.approx(0.016)
    half = 2.7764451 * math.sqrt(30e-6) / math.sqrt(5)
    assert c.low == pytest.approx(0.016 - half, abs=1e-7)
    assert c.high == pytest.approx(0.016 + half, abs=1e-7)
    assert format_comparison(c, scale=100) == "+1.60 [+0.92, +2.28] better (paired, n=5)"
    worse = compare(B, A)
    assert worse.verdict == "worse" and worse.diff == pytest.approx(-0.016)
    # a loss (mode min): lower is better, so B - A < 0 reads as better
    assert compare(B, A, mode="min").verdict == "better"
    assert compare(A, B, mode="min").verdict == "worse"


def test_paired_matches_scipy_ttest_rel():
    sp = pytest.importorskip("scipy.stats")
    rng = random.Random(7)
    for _ in range(20):
        n = rng.randint(3, 12)
        a = {s: rng.gauss(0.8, 0.01) for s in range(n)}
        b = {s: a[s] - rng.gauss(0.002, 0.004) for s in range(n)}
        level = rng.choice([0.9, 0.95, 0.99])
        ci = sp.ttest_rel(list(a.values()), list(b.values())).confidence_interval(level)
        c = compare(a, b, level=level)
        assert (c.low, c.high) == (pytest.approx(ci.low, rel=1e-8), pytest.approx(ci.high, rel=1e-8))
        assert c.verdict == ("better" if ci.low > 0 else "worse" if ci.high < 0 else VERDICTS[2])


def test_only_the_common_seeds_are_paired():
    a = {**A, 9: 0.50}  # seed 9 has no partner: left out of the pairing
    b = {**B, 8: 0.99, 3: float("nan")}  # seed 3 failed for b: no pair either
    c = compare(a, b)
    ref = compare({s: A[s] for s in (0, 1, 2, 4)}, {s: B[s] for s in (0, 1, 2, 4)})
    assert c.paired and c.n == 4 and (c.n_a, c.n_b) == (6, 5)
    assert (c.diff, c.low, c.high) == (ref.diff, ref.low, ref.high)


def test_fewer_than_min_seeds_gives_no_interval_and_says_so():
    c = compare({0: 0.95, 1: 0.96}, {0: 0.90, 1: 0.91})
    assert c.low is None and c.high is None and c.verdict == "no detectable difference"
    assert c.diff == pytest.approx(0.05) and c.n == 2 and c.paired
    assert "only 2 paired seeds" in c.note and "needs 3" in c.note
    assert format_comparison(c, scale=100) == "+5.00 (no interval: only 2 paired seeds; an interval needs 3)"
    assert compare({0: 0.95, 1: 0.96}, {0: 0.90, 1: 0.91}, min_seeds=2).verdict == "better"


def test_welch_when_no_seed_is_shared_by_hand_and_scipy():
    a = {0: 0.91, 1: 0.93, 2: 0.92, 3: 0.95}
    b = {10: 0.88, 11: 0.90, 12: 0.86, 13: 0.89, 14: 0.87}
    c = compare(a, b)
    assert not c.paired and (c.n_a, c.n_b) == (4, 4 + 1) and c.verdict == "better"
    # by hand: means 0.9275, 0.88; variances 0.000291667, 0.00025; se^2 = 0.0000729167 + 0.00005
    va, vb = 0.000291666667 / 4, 0.00025 / 5
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 4)
    assert df == pytest.approx(6.3024, abs=1e-3)
    half = t_ppf(0.975, df) * math.sqrt(va + vb)
    assert c.diff == pytest.approx(0.0475)
    assert (c.low, c.high) == (pytest.approx(0.0475 - half), pytest.approx(0.0475 + half))
    assert "Welch" in c.note and format_comparison(c).endswith("better (Welch, n=4 vs 5)")
    sp = pytest.importorskip("scipy.stats")
    ci = sp.ttest_ind(list(a.values()), list(b.values()), equal_var=False).confidence_interval(0.95)
    assert (c.low, c.high) == (pytest.approx(ci.low, rel=1e-8), pytest.approx(ci.high, rel=1e-8))
    short = compare({0: 0.9, 1: 0.91}, {5: 0.8, 6: 0.81, 7: 0.82})
    assert short.low is None and not short.paired and "2 vs 3" in short.note


def test_overlap_reads_no_detectable_difference_and_equal_differences_are_exact():
    noisy = compare({0: 0.90, 1: 0.95, 2: 0.91}, {0: 0.93, 1: 0.90, 2: 0.92})
    assert noisy.low < 0 < noisy.high and noisy.verdict == "no detectable difference"
    exact = compare({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.4, 1: 0.5, 2: 0.6})
    assert exact.low == pytest.approx(0.1) and exact.high == pytest.approx(0.1) and exact.verdict == "better"
    tie = compare({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.5, 1: 0.6, 2: 0.7})
    assert tie.verdict == "no detectable difference"


def test_eval_size_adds_the_evaluation_sets_noise_by_hand():
    # the A/B example on 1,000 examples: mean accuracies 0.92 and 0.904 can disagree on at most
    # 0.08 + 0.096 of the examples -> split variance 0.176 / 1000; seeds' variance of the mean 30e-6 / 5;
    # Satterthwaite df = total^2 / ((6e-6)^2 / 4) = 3680 -> capped at 1000, t(0.975, 1000) = 1.9623390
    c = compare(A, B, eval_size=1000)
    total = 0.176 / 1000 + 6e-6
    half = 1.9623390 * math.sqrt(total)
    assert c.diff == pytest.approx(0.016)
    assert (c.low, c.high) == (pytest.approx(0.016 - half, abs=1e-6), pytest.approx(0.016 + half, abs=1e-6))
    assert c.verdict == "no detectable difference" and "1000-example evaluation set" in c.note
    assert stats.split_variance(0.92, 0.904, 1000) == pytest.approx(0.176 / 1000)
    assert stats.split_variance(0.3, 0.4, 10) == pytest.approx(1.0 / 10)  # at most every example
    # a large evaluation set leaves the seeds' interval almost as it was
    big = compare(A, B, eval_size=10_000_000)
    assert big.verdict == "better" and big.high - big.low < 1.01 * (compare(A, B).high - compare(A, B).low)
    with pytest.raises(ValueError):
        compare({s: 100 * v for s, v in A.items()}, {s: 100 * v for s, v in B.items()}, eval_size=100)
    with pytest.raises(ValueError):
        compare(A, B, eval_size=0)


def test_compare_rejects_bad_mode_and_level():
    with pytest.raises(ValueError):
        compare(A, B, mode="maximize")
    with pytest.raises(ValueError):
        compare(A, B, level=95)


def test_interval_covers_the_true_difference_at_its_level():
    """Calibration of the paired interval: with a true difference of 0 the verdict is `better` in about
    2.5% of draws (two-sided 95%), and the interval covers the truth about 95% of the time."""
    rng = random.Random(3)
    draws, better, covered = 4000, 0, 0
    for _ in range(draws):
        seed_luck = [rng.gauss(0, 0.01) for _ in range(5)]
        a = {s: 0.9 + seed_luck[s] + rng.gauss(0, 0.003) for s in range(5)}
        b = {s: 0.9 + seed_luck[s] + rng.gauss(0, 0.003) for s in range(5)}
        c = compare(a, b)
        better += c.verdict == "better"
        covered += c.low <= 0 <= c.high
    assert 0.015 < better / draws < 0.035
    assert 0.935 < covered / draws < 0.965


def test_module_imports_no_scipy():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(stats))
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
             for a in n.names} | {(n.module or "").split(".")[0] for n in ast.walk(tree)
                                  if isinstance(n, ast.ImportFrom)}
    assert not names & {"scipy", "numpy", "torch"}


# ---------------------------------------------------------------------------------------------------
# Per-image results: the evaluation set's sampling noise from the runs themselves

A4 = {0: [1, 1, 0, 1], 1: [1, 0, 0, 1]}
B4 = {0: [1, 0, 0, 0], 1: [0, 0, 1, 0]}


def test_pack_correct_round_trips_any_length():
    for bits in ([], [1], [0], [1, 0, 1, 1, 0, 0, 0, 1, 1], [random.Random(3).randrange(2) for _ in range(5001)]):
        text = stats.pack_correct(bits)
        assert text.split(":")[0] == str(len(bits)) and stats.unpack_correct(text) == bits
    assert stats.pack_correct([True, False, True, True]) == "4:b"


def test_example_variance_by_hand():
    # d = a - b per seed: [0, 1, 0, 1] and [1, 0, -1, 1]; per-image means m = [.5, .5, -.5, 1],
    # var(m) = 1.1875 / 3; per-image variances over the 2 seeds v = [.5, .5, .5, 0], mean .375;
    # image effect = var(m) - mean(v) / 2 = 0.2083333; / 4 images
    var, n = stats.example_variance(A4, B4)
    assert n == 4 and var == pytest.approx((1.1875 / 3 - 0.375 / 2) / 4)
    packed = stats.example_variance({s: stats.pack_correct(v) for s, v in A4.items()},
                                    {s: stats.pack_correct(v) for s, v in B4.items()})
    assert packed == (pytest.approx(var), 4)
    # no image effect at all (b is a with the same per-seed noise) -> 0; one seed or unequal lengths -> None
    assert stats.example_variance(A4, A4) == (0.0, 4)
    assert stats.example_variance({0: A4[0]}, {0: B4[0]}) is None
    assert stats.example_variance(A4, {0: [1, 0, 0], 1: [0, 0, 1]}) is None
    assert stats.example_variance({0: "4:zz", 1: "4:b"}, {0: "4:1", 1: "4:2"}) is None  # not hex


def test_per_image_results_widen_the_interval_never_narrow_it():
    rng = random.Random(7)
    n, seeds = 400, [0, 1, 2, 3]
    # b gets a fixed set of 40 images wrong that a gets right: a real 10-point image effect, plus noise
    easy = set(rng.sample(range(n), 40))
    ea = {s: [int(i in easy or rng.random() < 0.8) for i in range(n)] for s in seeds}
    eb = {s: [int(i not in easy and rng.random() < 0.8) for i in range(n)] for s in seeds}
    acc = {s: sum(v) / n for s, v in ea.items()}
    bcc = {s: sum(v) / n for s, v in eb.items()}
    plain = compare(acc, bcc)
    wide = compare(acc, bcc, examples=(ea, eb))
    var, _ = stats.example_variance(ea, eb)
    half = t_ppf(0.975, 3) * math.sqrt(stats._mean_var([acc[s] - bcc[s] for s in seeds])[1] / 4 + var)
    assert wide.diff == plain.diff and wide.examples == n
    assert (wide.low, wide.high) == (pytest.approx(wide.diff - half), pytest.approx(wide.diff + half))
    assert wide.low < plain.low and wide.high > plain.high  # the seeds' df kept: only ever wider
    assert "400 evaluation examples (per-image results)" in wide.note
    assert format_comparison(wide).endswith("(paired, n=4, with the noise of 400 evaluation images)")
    # without an image effect the interval stays the seeds' own
    same = compare(acc, acc | {s: acc[s] - 0.01 for s in seeds}, examples=(ea, ea))
    assert same.examples == n and same.low == compare(acc, acc | {s: acc[s] - 0.01 for s in seeds}).low
