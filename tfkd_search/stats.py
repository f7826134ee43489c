"""Statistics over seeds: mean ± std, the difference to a baseline with its interval, and a verdict word.

A search's pick is partly its luckiest seed, so every claim "config X beats CE" is made from several
seeds and carries a 95% interval. Finalists and baselines are trained on the same seeds (same
initialisation and data order), so the comparison is paired: the per-seed differences a - b remove the
seed's own luck, and a t interval on their mean is far narrower than one on two separate means. Where
the runs share no seed (e.g. scores from two different searches) Welch's interval on the two means is
used instead. With fewer than `min_seeds` paired seeds no interval is given at all: a 2-seed t interval
is wide enough to be useless and its verdict would read like evidence.

That interval is about seeds on one validation set. Where that set is small (sklearn's digits: 288
images, one image 0.35 points), its own sampling noise can be larger than the seeds', and a difference
that is real on it need not hold on new data. Given each run's per-example results on that set
(`compare(..., examples=...)`: which images it got right, `pack_correct`), the interval also holds that
noise, estimated from the per-image differences (`example_variance`); `compare(..., eval_size=N)` adds
a cruder upper bound of it where only the accuracies are known.

The verdict is read from the interval: `better` when it lies wholly on the better side of 0 (above for
mode "max", below for mode "min"), `worse` when wholly on the other side, else `no detectable difference`.

Pure Python (the Student t quantile is computed here: the regularized incomplete beta function by its
continued fraction, inverted by bisection), so the search and the export need no scipy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MIN_SEEDS", "VERDICTS", "Comparison", "Summary", "compare", "example_variance",
           "format_comparison", "format_summary", "pack_correct", "split_variance", "summarize", "t_cdf",
           "t_ppf", "unpack_correct"]

VERDICTS = ("better", "worse", "no detectable difference")
MIN_SEEDS = 3  # the fewest paired seeds that get an interval (and so a verdict other than the third)


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (ddof=1; NaN below 2 values) of the finite values; `dropped`
    counts the values left out (NaN or infinite: a diverged or failed run)."""
    mean: float
    std: float
    n: int
    dropped: int = 0


@dataclass(frozen=True)
class Comparison:
    """a - b over seeds. `diff` is the mean difference (paired: over the common seeds); `low`/`high` the
    interval at `level` (None when there are too few seeds, `note` says why); `n` the paired seeds
    (Welch: the smaller of the two sample sizes, both in `n_a`/`n_b`); `verdict` one of VERDICTS, read
    in the direction of `mode`."""
    diff: float
    low: float | None
    high: float | None
    n: int
    paired: bool
    verdict: str
    note: str
    level: float = 0.95
    n_a: int = 0
    n_b: int = 0
    examples: int = 0  # evaluation examples whose sampling noise the interval holds (0: seeds only)


def _finite(values: Iterable[float | None]) -> tuple[list[float], int]:
    kept, dropped = [], 0
    for v in values:
        if v is not None and math.isfinite(float(v)):
            kept.append(float(v))
        else:
            dropped += 1
    return kept, dropped


def _mean_var(xs: list[float]) -> tuple[float, float]:
    """Mean and sample variance (ddof=1; NaN for fewer than 2 values)."""
    n = len(xs)
    if n == 0:
        return math.nan, math.nan
    m = math.fsum(xs) / n
    var = math.fsum((x - m) ** 2 for x in xs) / (n - 1) if n > 1 else math.nan
    return m, var


def summarize(values: Iterable[float | None]) -> Summary:
    """Mean ± std (n) of the finite values; non-finite ones are counted in `dropped`, not averaged."""
    kept, dropped = _finite(values)
    mean, var = _mean_var(kept)
    return Summary(mean, math.sqrt(var) if var == var else math.nan, len(kept), dropped)


# -- Student t distribution ------------------------------------------------------------------------
def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; the standard expansion,
    e.g. Numerical Recipes 6.4), converging fast for x < (a + 1) / (a + b + 2)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                    -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_cf(a, b, x) / a
    return 1.0 - front * _beta_cf(b, a, 1.0 - x) / b  # the symmetry I_x(a,b) = 1 - I_{1-x}(b,a)


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` > 0 degrees of freedom (df may be fractional: Welch)."""
    if df <= 0 or math.isnan(df):
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_ppf(p: float, df: float) -> float:
    """The t quantile: the t with t_cdf(t, df) = p, by bisection (to about 1e-12 relative)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:  # bracket: the quantile is below hi
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# -- comparison ------------------------------------------------------------------------------------
def _verdict(low: float | None, high: float | None, mode: str) -> str:
    if low is None or high is None:
        return VERDICTS[2]
    if low > 0:
        return VERDICTS[0] if mode == "max" else VERDICTS[1]
    if high < 0:
        return VERDICTS[1] if mode == "max" else VERDICTS[0]
    return VERDICTS[2]


def _interval(mean: float, var_of_mean: float, df: float, level: float,
              split_var: float = 0.0, keep_df: bool = False) -> tuple[float, float]:
    """mean ± t * se; `split_var` (the evaluation set's sampling variance, which no number of seeds
    averages out: infinite df) joins by the Welch-Satterthwaite df, capped at 1000. `keep_df`: the
    seeds' df for the sum instead, so that the interval only ever widens (Satterthwaite's larger df
    can make a sum with a well-known part narrower than the seeds' interval alone)."""
    total = var_of_mean + split_var
    if total == 0:  # every difference equal: the interval is that one value
        return mean, mean
    if split_var > 0 and not keep_df:
        df = min(1000.0, total ** 2 / (var_of_mean ** 2 / df)) if var_of_mean > 0 else 1000.0
    half = t_ppf(0.5 + level / 2.0, df) * math.sqrt(total)
    return mean - half, mean + half


def split_variance(mean_a: float, mean_b: float, eval_size: int) -> float:
    """An upper bound on the variance that the evaluation set's finite size adds to a difference of two
    accuracies measured on the same `eval_size` examples: the two can disagree on at most a share
    min(1, err_a + err_b) of the examples (McNemar's discordant pairs), and the difference's variance
    is at most that share / eval_size. Conservative: similar models disagree on fewer."""
    if eval_size < 1:
        raise ValueError(f"eval_size must be >= 1, got {eval_size}")
    if not (0.0 <= mean_a <= 1.0 and 0.0 <= mean_b <= 1.0):
        raise ValueError(f"eval_size needs accuracies in [0, 1], got means {mean_a}, {mean_b}")
    return min(1.0, (1.0 - mean_a) + (1.0 - mean_b)) / eval_size


def pack_correct(correct: Iterable[bool | int]) -> str:
    """Per-example results (1: right) as compact text, '<n>:<hex of the bits>', for result tables."""
    bits = "".join("1" if c else "0" for c in correct)
    width = (len(bits) + 3) // 4
    return f"{len(bits)}:{int(bits, 2):0{width}x}" if bits else "0:"


def unpack_correct(text: str) -> list[int]:
    """The inverse of `pack_correct`."""
    n_text, _, hexits = str(text).partition(":")
    n = int(n_text)
    if n == 0:
        return []
    return [int(b) for b in bin(int(hexits, 16))[2:].zfill(n)[-n:]]


def example_variance(a: Mapping[int, Any], b: Mapping[int, Any]) -> tuple[float, int] | None:
    """The variance that sampling the evaluation set adds to the mean paired difference a - b, from
    per-example results ({seed: pack_correct text or 0/1 list}) on the same examples in the same order.

    With d[s][i] = a[s][i] - b[s][i] over the S common seeds, the per-image mean difference
    m[i] = mean_s d[s][i] varies over images by the images' own effect plus the seeds' noise, whose
    share is estimated by the per-image variance over seeds v[i] (random-effects decomposition):
    var(image effect) = var_i(m) - mean_i(v) / S, floored at 0, and the evaluation set of n images
    adds that / n to the variance of the mean difference. Returns (variance, n), or None with fewer
    than 2 common seeds, results of different lengths or results that are not pack_correct text."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    rows = []
    for s in seeds:
        try:
            ra, rb = (unpack_correct(x) if isinstance(x, str) else [int(v) for v in x] for x in (a[s], b[s]))
        except ValueError:  # not pack_correct text (a hand-edited table): the seeds' interval only
            return None
        if len(ra) != len(rb):
            return None
        rows.append([p - q for p, q in zip(ra, rb)])
    n, k = len(rows[0]), len(rows)
    if n < 2 or any(len(r) != n for r in rows):
        return None
    means, within = [], []
    for i in range(n):
        m, v = _mean_var([r[i] for r in rows])
        means.append(m)
        within.append(v)
    _, between = _mean_var(means)
    effect = max(0.0, between - math.fsum(within) / n / k)
    return effect / n, n


def compare(a: Mapping[int, float], b: Mapping[int, float], *, mode: str = "max", level: float = 0.95,
            min_seeds: int = MIN_SEEDS, eval_size: int | None = None,
            examples: tuple[Mapping[int, Any], Mapping[int, Any]] | None = None) -> Comparison:
    """Compare per-seed scores `a` with `b` ({seed: score}); non-finite scores are left out.

    Seeds both have: a paired t interval on the differences a - b (df = n - 1). No seed in common:
    Welch's interval on mean(a) - mean(b) (Welch-Satterthwaite df). Fewer than `min_seeds` paired
    seeds (or, unpaired, fewer on either side): no interval, verdict `no detectable difference`, and
    the note says how many seeds there were.

    The seeds' spread is all the interval holds by default: it answers "on this validation set, over
    seeds". `eval_size` (the scores are accuracies on the same `eval_size` examples) widens it by the
    evaluation set's own sampling noise (`split_variance`, an upper bound), so that `better` also
    claims the difference holds on new data of the same kind. `examples` ({seed: per-example results}
    of a and of b, on the same evaluation set) does the same from the runs' own per-image results
    (`example_variance`, paired seeds only), and is used instead of `eval_size` where both are given."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    fa = {s: float(v) for s, v in a.items() if v is not None and math.isfinite(float(v))}
    fb = {s: float(v) for s, v in b.items() if v is not None and math.isfinite(float(v))}
    common = sorted(set(fa) & set(fb))
    if common:
        diffs = [fa[s] - fb[s] for s in common]
        n = len(diffs)
        mean, var = _mean_var(diffs)
        if n < min_seeds:
            return Comparison(mean, None, None, n, True, VERDICTS[2],
                              f"only {n} paired seed{'s' * (n != 1)}; an interval needs {min_seeds}",
                              level, len(fa), len(fb))
        per_image = None
        if examples is not None:
            ea, eb = examples
            per_image = example_variance({s: ea[s] for s in common if s in ea},
                                         {s: eb[s] for s in common if s in eb})
        if per_image is not None:
            split, seen = per_image
            note = f" and the sampling noise of the {seen:,} evaluation examples (per-image results)"
        else:
            split, seen = _split(eval_size, [fa[s] for s in common], [fb[s] for s in common]), 0
            note = _split_note(eval_size)
        low, high = _interval(mean, var / n, n - 1, level, split, keep_df=per_image is not None)
        return Comparison(mean, low, high, n, True, _verdict(low, high, mode),
                          f"paired t on {n} seeds{note}", level, len(fa), len(fb), seen)
    na, nb = len(fa), len(fb)
    mean_a, var_a = _mean_var(list(fa.values()))
    mean_b, var_b = _mean_var(list(fb.values()))
    diff = mean_a - mean_b
    if min(na, nb) < max(min_seeds, 2):
        return Comparison(diff, None, None, min(na, nb), False, VERDICTS[2],
                          f"no common seeds, {na} vs {nb} seeds; an interval needs {max(min_seeds, 2)} each",
                          level, na, nb)
    ea, eb = var_a / na, var_b / nb
    se2 = ea + eb
    df = se2 ** 2 / (ea ** 2 / (na - 1) + eb ** 2 / (nb - 1)) if se2 > 0 else float(na + nb - 2)
    low, high = _interval(diff, se2, df, level, _split(eval_size, list(fa.values()), list(fb.values())))
    return Comparison(diff, low, high, min(na, nb), False, _verdict(low, high, mode),
                      f"Welch (no common seeds, {na} vs {nb} seeds, df {df:.1f}){_split_note(eval_size)}",
                      level, na, nb)


def _split(eval_size: int | None, a: list[float], b: list[float]) -> float:
    return 0.0 if eval_size is None else split_variance(math.fsum(a) / len(a), math.fsum(b) / len(b),
                                                        eval_size)


def _split_note(eval_size: int | None) -> str:
    return "" if eval_size is None else f" and a {eval_size}-example evaluation set"


def format_summary(s: Summary, scale: float = 1.0, digits: int = 2) -> str:
    """'95.25 ± 0.31 (n=5)'; `scale` turns fractions into points (100)."""
    std = "n/a" if math.isnan(s.std) else f"{s.std * scale:.{digits}f}"
    failed = f", {s.dropped} failed" if s.dropped else ""
    return f"{s.mean * scale:.{digits}f} ± {std} (n={s.n}{failed})"


def format_comparison(c: Comparison, scale: float = 1.0, digits: int = 2) -> str:
    """One line for a table: '+0.42 [+0.10, +0.74] better (paired, n=5)'; without an interval
    '+0.42 (no interval: only 2 paired seeds; an interval needs 3)'."""
    f = f"{{:+.{digits}f}}"
    how = f"paired, n={c.n}" if c.paired else f"Welch, n={c.n_a} vs {c.n_b}"
    if c.examples:
        how += f", with the noise of {c.examples:,} evaluation images"
    if c.low is None or c.high is None:
        return f"{f.format(c.diff * scale)} (no interval: {c.note})"
    return (f"{f.format(c.diff * scale)} [{f.format(c.low * scale)}, {f.format(c.high * scale)}] "
            f"{c.verdict} ({how})")
