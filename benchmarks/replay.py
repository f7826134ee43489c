"""Replay a search against recorded learning curves (benchmarks/curves.py): no training, hundreds of
searches in seconds, to measure whether a searcher + scheduler picks the right config.

    python benchmarks/replay.py benchmarks/results/curves-digits-tiny_cnn.parquet \\
        --space benchmarks/curves_digits_tiny_cnn.yaml --replays 300 --seed 0 \\
        --json benchmarks/results/replay-digits-tiny_cnn.json

--space is a search-space YAML (its searcher, scheduler, budget and grid; --set overrides it, as
`tfkd-search --set`) or a curves YAML (then the space is every recorded config, as a grid). Each replay
draws one recorded seed per config (the noise a search sees), runs `concurrency` trials at once with
random per-epoch durations (the arrival order), applies `tfkd_search.scheduling.Halving` exactly as the
search does (the rung metric is `runfolder.windowed` of the space's metric over `window` epochs), ranks
the trials with `runfolder.Ranking` and takes rank 1. Searchers: grid; random (num_samples points, snapped
to the nearest recorded config); optuna (real TPE ask/tell with the space's seed, `concurrency` trials
in flight). Rows:

* `full grid`: the space's searcher without early stopping;
* `random @ budget`: random grid points, full budget, as many as fit the first candidate's trial-epochs;
* `old default`: asynchronous ASHA, window 1, geometric rungs from the space's grace_period and
  reduction_factor (what tfkd-search shipped);
* candidates: `--variant NAME:key=value;key=value` (scheduler keys: synchronous, window, rungs,
  grace_period, reduction_factor, kind), or the built-in list when none is given; the first one sets
  the trial-epochs of `random @ budget`;
* `space as given`: the space's own scheduler block (with --set applied), when --space is a space.

Reported per row: regret (points of accuracy: the mean over seeds of the final metric of the best config
of the space minus that of the pick; mean, 90th percentile and worst over replays; also on the stand-in
test accuracy), trial-epochs as a share of the full grid's, the share of the trial slots' time spent
training (busy%: the rest is idle, waiting for a synchronous rung to complete or for the last trials of
the search) and the wall time against the full grid's (wall%; both from simulated epoch times, so an
estimate of what waiting costs, not a measurement), how often
the modal pick is picked, and the Spearman correlation between each rung's metric and the final metric
(mean over replays).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from curves import KEYS, RELEVANT, read_curves  # noqa: E402

from tfkd_search.config import get_path, read_yaml  # noqa: E402
from tfkd_search.finalists import BASELINES, baseline_overrides, choose, label, rank  # noqa: E402
from tfkd_search.runfolder import Ranking, windowed  # noqa: E402
from tfkd_search.scheduling import Decision, Halving, rung_epochs  # noqa: E402
from tfkd_search.stats import MIN_SEEDS, Comparison, compare  # noqa: E402

SCHEDULER_KEYS = ("kind", "synchronous", "window", "rungs", "grace_period", "reduction_factor")


# -- curves ------------------------------------------------------------------------------------------
class Curves:
    """Recorded curves as arrays: values[config][seed] = per-epoch metric (NaN after divergence)."""

    def __init__(self, path: str | Path, metric: str = "val_acc") -> None:
        df, meta = read_curves(path)
        self.path, self.meta, self.metric = str(path), meta, metric
        self.budget = int(meta["budget"])
        self.keys = list(meta.get("keys") or KEYS)
        self.ids: list[str] = []
        self.ident: dict[str, dict[str, Any]] = {}
        self.values: dict[str, list[np.ndarray]] = {}
        self.test: dict[str, list[float]] = {}
        self.diverged: dict[str, list[int]] = {}  # epoch it diverged at (0: never)
        # the last epoch's per-image validation results (stats.pack_correct), where recorded
        self.correct: dict[str, list[str | None]] = {}
        for cid, g in df.groupby("config_id", sort=False):
            self.ids.append(str(cid))
            first = g.iloc[0]
            self.ident[str(cid)] = {k: first[k] for k in self.keys if k in g}
            vals, tests, divs, hits = [], [], [], []
            for _, s in g.groupby("seed"):
                s = s.sort_values("epoch")
                last = s["val_correct"].iloc[-1] if "val_correct" in s else None
                hits.append(last if isinstance(last, str) and last else None)
                v = np.full(self.budget, np.nan)
                ok = s[s["diverged"] == 0]
                v[ok["epoch"].to_numpy(int) - 1] = ok[metric].to_numpy(float)
                div = s[s["diverged"] > 0]
                divs.append(int(div["epoch"].min()) if len(div) else
                            (int(s["epoch"].max()) + 1 if s["epoch"].max() < self.budget else 0))
                vals.append(v)
                tests.append(float(s["test_acc"].iloc[-1]))
            self.values[str(cid)], self.test[str(cid)], self.diverged[str(cid)] = vals, tests, divs
            self.correct[str(cid)] = hits
        self.seeds = min(len(v) for v in self.values.values())
        self._cache: dict[tuple[str, int, int], list[float]] = {}

    def windowed(self, cid: str, seed: int, window: int) -> list[float]:
        """The rung metric after each epoch (`runfolder.windowed` of the first e epochs; NaN from the
        epoch the seed diverged at), cached."""
        key = (cid, seed, window)
        if key not in self._cache:
            div = self.diverged[cid][seed]
            v = self.values[cid][seed]
            self._cache[key] = [math.nan if div and e >= div else windowed(v[:e], window)
                                for e in range(1, self.budget + 1)]
        return self._cache[key]

    def final(self, cid: str) -> float:
        """The truth: mean over seeds of the last epoch's metric (a diverged seed counts 0)."""
        return float(np.mean([0.0 if d else v[-1] for v, d in zip(self.values[cid], self.diverged[cid])]))

    def final_test(self, cid: str) -> float:
        return float(np.nanmean([t if not d else 0.0 for t, d in zip(self.test[cid], self.diverged[cid])]))

    def match(self, cfg: dict[str, Any], searched: dict[str, Any]) -> str:
        """The recorded config of a trial's run config: equal on the method's fixed keys, nearest on the
        searched ones (log scale for tau, multiplier and loguniform params)."""
        method = cfg["method"]
        rel = [k for k in ("method", *RELEVANT.get(method, ())) if k in self.keys]
        extra = [k for k in self.keys if k not in KEYS]
        best, best_d = None, math.inf
        for cid in self.ids:
            ident = self.ident[cid]
            d = 0.0
            for k in [*rel, *extra]:
                want, have = get_path(cfg, k), ident.get(k)
                if k in searched and isinstance(want, (int, float)) and not isinstance(want, bool):
                    lo, hi, _ = searched[k]
                    if searched[k][2]:
                        d += (math.log(float(want)) - math.log(float(have))) ** 2 / max(
                            (math.log(hi) - math.log(lo)) ** 2, 1e-12)
                    else:
                        d += (float(want) - float(have)) ** 2 / max((hi - lo) ** 2, 1e-12)
                elif not _same(want, have):
                    d = math.inf
                    break
            if d < best_d:
                best, best_d = cid, d
        if best is None:
            raise SystemExit(f"{self.path}: no recorded config matches {method} with "
                             f"{ {k: get_path(cfg, k) for k in rel} }; record curves for this space")
        return best


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float, np.floating, np.integer)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return str(a) == str(b)


# -- the space ---------------------------------------------------------------------------------------
@dataclass
class Plan:
    """What is replayed: the points a searcher can propose and the scheduler settings."""

    searcher: str
    seed: int
    num_samples: int
    configs: list[str]                      # grid: the trials in proposal order (config ids)
    dists: dict[str, Any] = field(default_factory=dict)   # random/optuna: path -> distribution
    base: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)
    metric: str = "val_acc"
    mode: str = "max"
    concurrency: int = 8
    from_space: bool = False


def load_plan(curves: Curves, space_path: str | None, overrides: dict[str, Any],
              concurrency: int) -> Plan:
    from tfkd_search.spaces import Grid, grid_points, load_space

    raw = read_yaml(space_path) if space_path else {"space": None}
    if isinstance(raw, dict) and "space" in raw:  # a curves YAML: every recorded config, as a grid
        sch = {"kind": "asha", "grace_period": 2, "reduction_factor": 2.0, "metric": "val_acc",
               "mode": "max", "synchronous": False, "window": 1, "rungs": None}
        for k, v in overrides.items():
            if k.startswith("search.scheduler."):
                sch[k.rsplit(".", 1)[-1]] = v
        return Plan("grid", 0, 1, list(curves.ids), scheduler=sch, concurrency=concurrency)
    space = load_space(space_path, {k: v for k, v in overrides.items()
                                    if not k.startswith("search.scheduler.")})
    s = space.spec.search
    sch = {"kind": s.scheduler.kind, "metric": s.scheduler.metric, "mode": s.scheduler.mode,
           "grace_period": s.scheduler.grace_period, "reduction_factor": s.scheduler.reduction_factor,
           "synchronous": getattr(s.scheduler, "synchronous", False),
           "window": getattr(s.scheduler, "window", 1), "rungs": getattr(s.scheduler, "rungs", None)}
    for k, v in overrides.items():
        if k.startswith("search.scheduler."):
            sch[k.rsplit(".", 1)[-1]] = v
    if space.budget != curves.budget:
        raise SystemExit(f"{space_path}: budget {space.budget} epochs but the curves hold {curves.budget}")
    base = space.base_dict()
    if lr_schedule(base) != lr_schedule(curves.meta["base"]):
        raise SystemExit(f"{space_path}: its learning-rate schedule {lr_schedule(base)} differs from "
                         f"the curves' {lr_schedule(curves.meta['base'])}; record curves for it")
    searched = {k: _bounds(d) for k, d in space.params.items()}
    from tfkd_search.config import with_overrides

    configs = []
    if s.searcher.kind == "grid":
        for point in grid_points(space) * s.num_samples:
            configs.append(curves.match(with_overrides(base, point), searched))
    plan = Plan(s.searcher.kind, s.searcher.seed, s.num_samples, configs,
                dists={k: d for k, d in space.params.items()}, base=base, scheduler=sch,
                metric=s.scheduler.metric, mode=s.scheduler.mode,
                concurrency=int(s.max_concurrent or concurrency), from_space=True)
    plan.searched = searched  # type: ignore[attr-defined]
    if s.searcher.kind != "grid":  # the grid a random/optuna search is judged against
        plan.configs = sorted({curves.match(with_overrides(base, p), searched)
                               for p in _grid_of(space.params, curves)})
    _ = Grid
    return plan


def lr_schedule(cfg: dict[str, Any]) -> tuple[Any, ...]:
    """What the curves depend on in a schedule block: trained epochs, the lr drops inside them (as the
    trainer places them, `scale` included), gamma, warm-up, and the effective lr."""
    s, o = cfg["schedule"], cfg["optim"]
    budget = s.get("budget") or s["epochs"]
    ms = [max(1, round(m * budget / s["epochs"])) if s["mode"] == "scale" else m for m in s["milestones"]]
    return (budget, tuple(m for m in ms if m < budget), s["gamma"], s["warmup_epochs"],
            round(o["lr"] * o["batch_size"] / o["lr_batch"], 9))


def _bounds(d: Any) -> Any:
    if d.kind in ("uniform", "loguniform", "int"):
        return (float(d.low), float(d.high), d.kind == "loguniform")
    vals = [float(v) for v in d.values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if vals and len(vals) == len(d.values):
        lo, hi = min(vals), max(vals)
        log = lo > 0 and hi / lo > 10
        return (lo, hi if hi > lo else lo + 1, log)
    return (0.0, 1.0, False)


def _grid_of(params: dict[str, Any], curves: Curves) -> list[dict[str, Any]]:
    """Recorded values inside each distribution's range: the candidates a sampled search can reach."""
    import itertools

    axes = {}
    for k, d in params.items():
        if d.kind in ("grid", "choice"):
            axes[k] = list(d.values)
        else:
            vals = sorted({float(curves.ident[c][k]) for c in curves.ids if k in curves.ident[c]})
            axes[k] = [v for v in vals if d.low - 1e-9 <= v <= d.high + 1e-9] or vals
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]


# -- one replay --------------------------------------------------------------------------------------
@dataclass
class Outcome:
    pick: str | None
    trial_epochs: int
    trials: int
    stopped: dict[str, int]
    slot_use: float = 1.0  # busy trial-slot time / (search wall time x concurrency)
    wall: float = 0.0      # the search's simulated wall time (in mean epoch times)
    ranked: list[str] = field(default_factory=list)  # configs of the ranked trials, best first


class _Searcher:
    """Proposes config ids: a fixed list (grid), random samples, or Optuna TPE ask/tell."""

    def __init__(self, plan: Plan, curves: Curves, rng: random.Random) -> None:
        self.plan, self.curves, self.rng = plan, curves, rng
        self.n = len(plan.configs) if plan.searcher == "grid" else plan.num_samples
        self.k = 0
        self.study = None
        self.asked: dict[int, Any] = {}
        if plan.searcher == "optuna":
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self.study = optuna.create_study(
                direction="maximize" if plan.mode == "max" else "minimize",
                sampler=optuna.samplers.TPESampler(seed=plan.seed))
            self.od = {k: _optuna_dist(d) for k, d in plan.dists.items()}

    def more(self) -> bool:
        return self.k < self.n

    def next(self) -> str:
        from tfkd_search.config import with_overrides

        i = self.k
        self.k += 1
        if self.plan.searcher == "grid":
            return self.plan.configs[i]
        if self.plan.searcher == "random":
            point = {k: _sample(d, self.rng) for k, d in self.plan.dists.items()}
        else:
            t = self.study.ask(self.od)
            self.asked[i] = t
            point = dict(t.params)
        return self.curves.match(with_overrides(self.plan.base, point), self.plan.searched)

    def tell(self, i: int, value: float) -> None:
        if self.study is not None and i in self.asked:
            worst = 0.0 if self.plan.mode == "max" else 1e9
            self.study.tell(self.asked.pop(i), value if math.isfinite(value) else worst)


def _optuna_dist(d: Any) -> Any:
    import optuna.distributions as od

    if d.kind == "uniform":
        return od.FloatDistribution(d.low, d.high)
    if d.kind == "loguniform":
        return od.FloatDistribution(d.low, d.high, log=True)
    if d.kind == "int":
        return od.IntDistribution(d.low, d.high)
    return od.CategoricalDistribution(list(d.values))


def _sample(d: Any, rng: random.Random) -> Any:
    if d.kind == "uniform":
        return rng.uniform(d.low, d.high)
    if d.kind == "loguniform":
        return math.exp(rng.uniform(math.log(d.low), math.log(d.high)))
    if d.kind == "int":
        return rng.randint(d.low, d.high)
    return rng.choice(list(d.values))


def replay_once(plan: Plan, curves: Curves, sch: dict[str, Any], noise: dict[str, int],
                rng: random.Random, *, configs: list[str] | None = None,
                check: bool = False) -> Outcome:
    """One search: `noise` maps config -> recorded seed; `rng` draws durations (and random points).
    `configs` overrides the searcher with a fixed list of trials (random @ budget)."""
    budget = curves.budget
    window = int(sch.get("window") or 1)
    use = sch.get("kind", "asha") != "none"
    if configs is not None:
        searcher = _Searcher(Plan("grid", 0, 1, configs), curves, rng)
    else:
        searcher = _Searcher(plan, curves, rng)
    halving = None
    if use:
        rungs = rung_epochs(budget, int(sch.get("grace_period") or 1),
                            float(sch.get("reduction_factor") or 3), sch.get("rungs"))
        halving = Halving(rungs, float(sch.get("reduction_factor") or 3), plan.mode,
                          synchronous=bool(sch.get("synchronous")), total_trials=searcher.n)
    conc = max(1, plan.concurrency)
    trial_cfg: dict[int, str] = {}
    trained: dict[int, int] = {}
    status: dict[int, str] = {}
    speed: dict[int, float] = {}
    running: dict[int, tuple[float, int]] = {}
    resume: list[int] = []
    now = 0.0

    def metric_at(i: int, epoch: int) -> float:
        cid = trial_cfg[i]
        return curves.windowed(cid, noise[cid], window)[epoch - 1]

    busy = 0.0

    def start(i: int) -> None:
        nonlocal busy
        took = speed[i] * rng.uniform(0.7, 1.3)
        busy += took
        running[i] = (now + took, trained[i] + 1)

    def end(i: int, st: str) -> None:
        status[i] = st
        if halving is not None:
            halving.on_end(str(i))
        searcher.tell(i, metric_at(i, trained[i]) if trained[i] else math.nan)

    while True:
        while len(running) < conc and (resume or searcher.more()):
            if resume:
                start(resume.pop(0))
                continue
            i = searcher.k
            trial_cfg[i] = searcher.next()
            trained[i], speed[i] = 0, rng.lognormvariate(0.0, 0.3)
            if halving is not None:
                halving.on_add(str(i), i)
            start(i)
        if not running:
            if halving is not None and halving.paused():
                raise RuntimeError(f"deadlock: paused {halving.paused()}")
            break
        i, (now, epoch) = min(running.items(), key=lambda kv: kv[1][0])
        del running[i]
        trained[i] = epoch
        value = metric_at(i, epoch)
        if math.isnan(value):  # diverged: the search reports the worst value and the trial ends
            if halving is not None:
                halving.on_result(str(i), i, epoch, value)
            end(i, "diverged")
        else:
            d = halving.on_result(str(i), i, epoch, value) if halving is not None else Decision.CONTINUE
            if d is Decision.CONTINUE:
                if epoch < budget:
                    start(i)
                else:
                    end(i, "completed")
            elif d is Decision.STOP:
                end(i, "stopped_early")
        if halving is not None:
            for t, d2 in halving.releasable().items():
                if d2 is Decision.CONTINUE:
                    resume.append(int(t))
                else:
                    end(int(t), "stopped_early")
    ranked = _ranked(trial_cfg, trained, status, metric_at, plan, window, check)
    return Outcome(ranked[0] if ranked else None, sum(trained.values()), len(trial_cfg),
                   {trial_cfg[i]: trained[i] for i in trial_cfg},
                   slot_use=busy / (now * conc) if now > 0 else 1.0, wall=now, ranked=ranked)


def _ranked(trial_cfg, trained, status, metric_at, plan: Plan, window: int,
            check: bool = False) -> list[str]:
    """The trials' configs in `runfolder.Ranking`'s order: finished trials only, more epochs first,
    then the score (mean of the last `window` epochs), then the lower trial index. A plain-Python copy
    of the rule (Ranking builds a DataFrame: 10x slower); `check=True` also asks Ranking for rank 1
    and asserts they agree."""
    finished = ("completed", "stopped_early")
    sign = 1.0 if plan.mode == "max" else -1.0
    rows = [(i, trained[i], metric_at(i, trained[i]) if trained[i] else math.nan, status.get(i, "errored"))
            for i in trial_cfg]
    ok = sorted((r for r in rows if r[3] in finished and not math.isnan(r[2])),
                key=lambda r: (-r[1], -sign * r[2], r[0]))
    if check:
        import pandas as pd

        frame = pd.DataFrame([{"trial_id": f"t_{i:05d}", "trial_index": i, "status": st, "epochs": e,
                               "score": sc} for i, e, sc, st in rows])
        ref = Ranking(plan.metric, plan.mode, window).best(frame)
        assert (ref is None and not ok) or int(ref["trial_index"]) == ok[0][0], (ref, ok[:1])
    return [trial_cfg[r[0]] for r in ok]


# -- the finalists stage -------------------------------------------------------------------------------
def baseline_ids(curves: Curves) -> dict[str, str]:
    """The recorded config of each of `finalists.BASELINES`: the one whose recorded keys equal the
    baseline's config changes (`baseline_overrides`: method, and LSR's eps 0.1)."""
    out = {}
    for name in BASELINES:
        want = baseline_overrides(name)
        hits = [c for c in curves.ids
                if all(k in curves.ident[c] and _same(v, curves.ident[c][k]) for k, v in want.items())]
        if not hits:
            raise SystemExit(f"{curves.path}: no recorded config is the {name} baseline {want}; record it "
                             f"(an `extra` group of the curves YAML)")
        out[name] = hits[0]
    return out


@dataclass
class Final:
    pick: str
    order: list[str]                 # the finalists' configs, best first
    verdicts: dict[str, Comparison]  # baseline name -> the pick against it, on the fresh seeds
    runs: int                        # trials of the stage: (finalists + baselines) x fresh seeds
    split: dict[str, Comparison] = field(default_factory=dict)  # the same with `eval_size`


def finalists_once(curves: Curves, ranked: list[str], fresh: list[int], top: int, window: int,
                   mode: str, baselines: dict[str, str], eval_size: int | None = None) -> Final:
    """The finalists stage on recorded curves, with the search's own code: `finalists.choose` the first
    `top` configs of the search's ranking, score each finalist and baseline on the `fresh` seeds (the
    search's score: the mean of the last `window` epochs at the budget), `finalists.rank` them by their
    fresh seeds' mean, and `stats.compare` the first with every baseline (paired on the seeds, with
    the recorded per-image validation results where the curves hold them, as the search does; again
    with `eval_size`, the validation set's size, when given)."""
    chosen = [p["config"] for p in choose([{"config": c} for c in ranked], top)]
    names = [label({"config": c}) for c in chosen]

    def scores(cid: str) -> dict[int, float]:
        return {s: curves.windowed(cid, s, window)[-1] for s in fresh}

    def hits(cid: str) -> dict[int, str] | None:
        got = {s: curves.correct[cid][s] for s in fresh}
        return got if all(got.values()) else None

    per = {n: scores(c) for n, c in zip(names, chosen)}
    order = [chosen[names.index(n)] for n in rank({n: list(v.values()) for n, v in per.items()}, names, mode)]
    first = per[names[chosen.index(order[0])]]
    mine = hits(order[0])
    verdicts = {}
    for b, cid in baselines.items():
        theirs = hits(cid)
        verdicts[b] = compare(first, scores(cid), mode=mode,
                              examples=(mine, theirs) if mine and theirs else None)
    split = ({b: compare(first, scores(cid), mode=mode, eval_size=eval_size) for b, cid in baselines.items()}
             if eval_size else {})
    return Final(order[0], order, verdicts, (len(chosen) + len(baselines)) * len(fresh), split)


def _calibration(records: list[tuple[float, float, str]], near: float = 0.2) -> dict[str, Any]:
    """Verdicts of the pick against the truly best baseline (by the all-seed test mean), by the true gap
    in points (pick - baseline): how often `better` is said where the pick is within `near` points, and
    where it is truly behind or ahead. Judged on the stand-in test mean (the target), and, as a
    diagnostic of the interval itself, on the all-seed validation mean (what the verdict measures)."""
    def by(gaps: list[tuple[float, str]]) -> dict[str, Any]:
        close = [v for gap, v in gaps if abs(gap) <= near]
        worse = [v for gap, v in gaps if gap < -near]
        ahead = [v for gap, v in gaps if gap > near]
        share = (lambda vs: sum(v == "better" for v in vs) / len(vs) if vs else None)
        return {"near": len(close), "better_when_near": share(close), "truly_worse": len(worse),
                "better_when_worse": share(worse), "truly_ahead": len(ahead),
                "better_when_ahead": share(ahead)}

    return {"near_points": near, "replays": len(records), **by([(t, v) for t, _, v in records]),
            "on_validation": by([(g, v) for _, g, v in records]),
            "verdicts": dict(Counter(v for _, _, v in records).most_common())}


# -- many replays ------------------------------------------------------------------------------------
def _ranks(x: list[float]) -> np.ndarray:
    """Ranks with ties averaged (NaN ranks last, as the worst value)."""
    a = np.nan_to_num(np.asarray(x, dtype=float), nan=-np.inf)
    _, inv, counts = np.unique(a, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts
    return (first + (counts - 1) / 2.0)[inv]


def spearman(x: list[float], y: list[float]) -> float:
    a, b = _ranks(x), _ranks(y)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _best(grid: list[str], value: dict[str, float], mode: str) -> str:
    return max(grid, key=lambda c: value[c]) if mode == "max" else min(grid, key=lambda c: value[c])


def evaluate(plan: Plan, curves: Curves, name: str, sch: dict[str, Any], replays: int, seed: int, *,
             random_budget: float | None = None, fixed_noise: bool = False,
             grid_epochs: int | None = None, finalists: tuple[int, int] | None = None,
             eval_size: int | None = None) -> dict[str, Any]:
    """`replays` searches; regret against the best config of the plan's grid (validation: the
    all-seed mean of the final metric; test: of the stand-in test accuracy, which no pick sees).

    `finalists=(top, n)`: each replay first draws the n fresh seeds, the search's one seed per config
    comes from the other recorded seeds, and the pick is the finalists stage's (`finalists_once`);
    its trials count in the trial-epochs and its simulated time in the wall time; the calibration of
    its verdicts is kept (`_calibration`), also with `eval_size` when given."""
    grid = plan.configs
    truth = {c: curves.final(c) for c in curves.ids}
    test = {c: curves.final_test(c) for c in curves.ids}
    best = _best(grid, truth, plan.mode)
    best_test = max(test[c] for c in grid)
    test_best = max(grid, key=lambda c: test[c])
    grid_epochs = grid_epochs or len(plan.configs if plan.searcher == "grid" else
                                     range(plan.num_samples)) * curves.budget
    if finalists is not None and (fixed_noise or not 0 < finalists[1] < curves.seeds):
        raise SystemExit(f"finalists with {finalists[1]} fresh seeds need more recorded seeds than that "
                         f"({curves.seeds}) and a new seed draw per replay (no --fixed-noise)")
    bases = baseline_ids(curves) if finalists is not None else {}
    rng = random.Random(seed)
    noise0 = {c: rng.randrange(curves.seeds) for c in curves.ids}
    regrets, test_regrets, epochs, use, wall, picks = [], [], [], [], [], Counter()
    calib: list[tuple[float, float, str]] = []
    calib_split: list[tuple[float, float, str]] = []
    sign = 1.0 if plan.mode == "max" else -1.0
    window = int(sch.get("window") or 1)
    rungs = (rung_epochs(curves.budget, int(sch.get("grace_period") or 1),
                         float(sch.get("reduction_factor") or 3), sch.get("rungs"))
             if sch.get("kind", "asha") != "none" else [])
    rho: dict[int, list[float]] = {r: [] for r in rungs}
    conc = max(1, plan.concurrency)
    for k in range(replays):
        r = random.Random(seed * 100_003 + k)
        pool, fresh = list(range(curves.seeds)), []
        if finalists is not None:
            fresh = sorted(r.sample(pool, finalists[1]))
            pool = [s for s in pool if s not in fresh]
        noise = noise0 if fixed_noise else {c: r.choice(pool) for c in curves.ids}
        configs = None
        if random_budget is not None:
            n = max(1, min(len(grid), int(random_budget // curves.budget)))
            configs = r.sample(sorted(set(grid)), n)
        out = replay_once(plan, curves, sch, noise, r, configs=configs, check=k < 3)
        pick, spent, took, busy = out.pick, out.trial_epochs, out.wall, out.slot_use * out.wall * conc
        if finalists is not None and out.ranked:
            fin = finalists_once(curves, out.ranked, fresh, finalists[0], window, plan.mode, bases, eval_size)
            pick = fin.pick
            stage = replay_once(plan, curves, {"kind": "none"}, noise, r, configs=[pick] * fin.runs)
            spent, took = spent + stage.trial_epochs, took + stage.wall
            busy += stage.slot_use * stage.wall * conc
            top_base = max(bases, key=lambda b: test[bases[b]])
            gaps = (100 * (test[pick] - test[bases[top_base]]), 100 * sign * (truth[pick] - truth[bases[top_base]]))
            calib.append((*gaps, fin.verdicts[top_base].verdict))
            if fin.split:
                calib_split.append((*gaps, fin.split[top_base].verdict))
        picks[pick] += 1
        regrets.append(100 * sign * (truth[best] - truth[pick]) if pick else math.inf)
        test_regrets.append(100 * (best_test - test[pick]) if pick else math.inf)
        epochs.append(spent)
        use.append(busy / (took * conc) if took > 0 else 1.0)
        wall.append(took)
        uniq = sorted(set(grid))
        for rung in rungs:
            x = [curves.windowed(c, noise[c], window)[rung - 1] for c in uniq]
            rho[rung].append(spearman(x, [truth[c] for c in uniq]))
    modal, modal_n = picks.most_common(1)[0]
    reg = np.array(regrets)
    row = {"name": name, "scheduler": {k: sch.get(k) for k in SCHEDULER_KEYS}, "rungs": rungs,
           "searcher": "random (fixed trial-epochs)" if random_budget is not None else plan.searcher,
           "replays": replays, "regret_mean": float(reg.mean()), "regret_p90": float(np.quantile(reg, 0.9)),
           "regret_worst": float(reg.max()), "test_regret_mean": float(np.mean(test_regrets)),
           "test_regret_p90": float(np.quantile(test_regrets, 0.9)),
           "trial_epochs_mean": float(np.mean(epochs)),
           "trial_epochs_frac": float(np.mean(epochs) / grid_epochs),
           "slot_use": float(np.mean(use)), "wall": float(np.mean(wall)),
           "repeat_share": modal_n / replays, "modal_pick": modal,
           "test_best_share": picks[test_best] / replays, "picks": dict(picks.most_common()),
           "spearman": {str(r): float(np.nanmean(v)) for r, v in rho.items()},
           "best_config": best, "test_best_config": test_best}
    if finalists is not None:
        row["finalists"] = {"top": finalists[0], "seeds": finalists[1], "baselines": bases}
        row["calibration"] = _calibration(calib)
        if calib_split:
            row["calibration_eval_size"] = {"eval_size": eval_size, **_calibration(calib_split)}
    return row


def oracle(plan: Plan, curves: Curves, window: int, replays: int, full: dict[str, Any]) -> dict[str, Any]:
    """The full grid with every recorded seed: the pick is the best mean score over all seeds (no
    luck left to draw, so every replay picks it); its cost is seeds x the full grid."""
    grid = sorted(set(plan.configs))
    score = {c: float(np.mean([curves.windowed(c, s, window)[-1] for s in range(curves.seeds)]))
             for c in grid}
    pick = _best(grid, score, plan.mode)
    truth = {c: curves.final(c) for c in grid}
    test = {c: curves.final_test(c) for c in grid}
    sign = 1.0 if plan.mode == "max" else -1.0
    regret = 100 * sign * (truth[full["best_config"]] - truth[pick])
    test_regret = 100 * (max(test.values()) - test[pick])
    return {**full, "name": f"full grid, all {curves.seeds} seeds", "searcher": plan.searcher,
            "regret_mean": regret, "regret_p90": regret, "regret_worst": regret,
            "test_regret_mean": test_regret, "test_regret_p90": test_regret,
            "trial_epochs_mean": curves.seeds * full["trial_epochs_mean"],
            "trial_epochs_frac": curves.seeds * full["trial_epochs_frac"], "wall": curves.seeds * full["wall"],
            "repeat_share": 1.0, "modal_pick": pick, "picks": {pick: replays},
            "test_best_share": float(pick == full["test_best_config"]), "spearman": {}, "rungs": []}


def parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def parse_variant(text: str, extra: tuple[str, ...] = ()) -> tuple[str, dict[str, Any]]:
    """'NAME:key=value;key=value' -> (NAME, {key: value}): scheduler keys, and the `extra` ones."""
    name, _, body = text.partition(":")
    sch: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in body.split(";"))):
        k, _, v = part.partition("=")
        k = k.strip().removeprefix("search.scheduler.").removeprefix("search.finalists.")
        if k not in (*SCHEDULER_KEYS, *extra):
            raise SystemExit(f"{text!r}: unknown key {k!r}; use {(*SCHEDULER_KEYS, *extra)}")
        sch[k] = parse_value(v)
    if "rungs" not in sch and ("grace_period" in sch or "reduction_factor" in sch):
        sch["rungs"] = None  # geometric rungs, whatever the space says
    return name.strip(), sch


DEFAULT_VARIANTS = [  # geometric rungs (grace * rf**k) stay valid when --set shortens the budget
    # the shipped default (first: random @ budget gets its trial-epochs)
    "sync w2 g2 rf3:synchronous=true;window=2;grace_period=2;reduction_factor=3",
    "sync w1 g2 rf2:synchronous=true;window=1;grace_period=2;reduction_factor=2",
    "sync w2 g2 rf2:synchronous=true;window=2;grace_period=2;reduction_factor=2",
    "async w2 g3 rf3:synchronous=false;window=2;grace_period=3;reduction_factor=3",
    "sync w1 g3 rf3:synchronous=true;window=1;grace_period=3;reduction_factor=3",
    "sync w2 g3 rf3:synchronous=true;window=2;grace_period=3;reduction_factor=3",
    "sync w3 g3 rf3:synchronous=true;window=3;grace_period=3;reduction_factor=3",
    "sync w2 g3 rf2:synchronous=true;window=2;grace_period=3;reduction_factor=2",
    "sync w3 g3 rf2:synchronous=true;window=3;grace_period=3;reduction_factor=2",
    "sync w2 g3 rf2.5:synchronous=true;window=2;grace_period=3;reduction_factor=2.5",
    "sync w2 g3 rf4:synchronous=true;window=2;grace_period=3;reduction_factor=4",
    "sync w3 g3 rf4:synchronous=true;window=3;grace_period=3;reduction_factor=4",
    "sync w2 rungs 5,8 rf3:synchronous=true;window=2;rungs=[5, 8];reduction_factor=3",
    "sync w2 rungs 5 rf3:synchronous=true;window=2;rungs=[5];reduction_factor=3",
    "full grid w3:kind=none;window=3",
]


# Finalists candidates: top, fresh seeds, and the search's scheduler (default: DEFAULT_VARIANTS[0]).
# The first is the recommended default (random @ budget gets its trial-epochs); the cheaper schedulers
# (grace 1) were tried to bring the whole search under 50% of the full grid's trial-epochs.
FINALISTS_VARIANTS = [
    "top2 n3:top=2;seeds=3",
    "top1 n3:top=1;seeds=3",
    "top3 n3:top=3;seeds=3",
    "top2 n4:top=2;seeds=4",
    "top3 n4:top=3;seeds=4",
    "top1 n3 (g1 rf3):top=1;seeds=3;grace_period=1;reduction_factor=3",
    "top2 n3 (g1 rf3):top=2;seeds=3;grace_period=1;reduction_factor=3",
    "top3 n3 (g1 rf3):top=3;seeds=3;grace_period=1;reduction_factor=3",
    "top2 n3 (g1 rf4):top=2;seeds=3;grace_period=1;reduction_factor=4",
    "top2 n3 (g1 rf6):top=2;seeds=3;grace_period=1;reduction_factor=6",
]


def parse_finalists(text: str, default: dict[str, Any]) -> tuple[str, dict[str, Any], tuple[int, int]]:
    """'NAME:top=2;seeds=3;<scheduler keys>' -> (NAME, the search's scheduler over `default`, (top, n))."""
    name, sch = parse_variant(text, ("top", "seeds"))
    top, n = int(sch.pop("top", 2)), int(sch.pop("seeds", 3))
    if top < 1 or n < 1:
        raise SystemExit(f"--finalists {text!r}: top and seeds must be >= 1")
    return name, {**default, **sch}, (top, n)


def _finalist_rows(plan: Plan, curves: Curves, variants: list[str], replays: int, seed: int,
                   full_row: dict[str, Any], eval_size: int | None = None) -> list[dict[str, Any]]:
    """The rows of the finalists table after the full grid: the full grid on every seed (the oracle's
    cost), the default search, each finalists candidate, and random search at the first one's budget."""
    grid_epochs = int(full_row["trial_epochs_mean"])
    name0, default = parse_variant(DEFAULT_VARIANTS[0])
    default = {**plan.scheduler, "kind": "asha", **default}
    rows = [oracle(plan, curves, int(default.get("window") or 1), replays, full_row),
            evaluate(plan, curves, f"default search ({name0})", default, replays, seed,
                     grid_epochs=grid_epochs)]
    for text in variants:
        name, sch, fin = parse_finalists(text, default)
        rows.append(evaluate(plan, curves, f"finalists {name}", sch, replays, seed, grid_epochs=grid_epochs,
                             finalists=fin, eval_size=eval_size))
    ref = rows[2]["trial_epochs_mean"] if len(rows) > 2 else grid_epochs / 2
    rows.append(evaluate(plan, curves, "random @ budget", {**plan.scheduler, "kind": "none"}, replays, seed,
                         random_budget=ref, grid_epochs=grid_epochs))
    rows[-1]["name"] = f"random @ {ref / grid_epochs:.0%} budget"
    return rows


def run(curves_path: str, space: str | None, *, replays: int, seed: int, overrides: dict[str, Any],
        variants: list[str], concurrency: int, fixed_noise: bool = False,
        finalists: list[str] | None = None, eval_size: int | None = None) -> dict[str, Any]:
    """The rows of one replay table. `finalists` (candidate texts): the finalists table instead of the
    scheduler candidates (`_finalist_rows`)."""
    curves = Curves(curves_path)
    plan = load_plan(curves, space, overrides, concurrency)
    base_sch = dict(plan.scheduler)
    t0 = time.time()
    full = {**base_sch, "kind": "none"}
    old = {**base_sch, "kind": "asha", "synchronous": False, "window": 1, "rungs": None}
    rows = [evaluate(plan, curves, "full grid", full, replays, seed, fixed_noise=fixed_noise)]
    grid_epochs = rows[0]["trial_epochs_mean"]
    if finalists is not None:
        rows[0]["name"] = "full grid, 1 seed"
        rows += _finalist_rows(plan, curves, finalists, replays, seed, rows[0], eval_size)
        return _result(curves, plan, space, replays, seed, fixed_noise, overrides, rows, t0)
    cands = [(n, {**base_sch, "kind": "asha", **s}) for n, s in map(parse_variant, variants)]
    cand_rows = [evaluate(plan, curves, n, s, replays, seed, fixed_noise=fixed_noise,
                          grid_epochs=int(grid_epochs)) for n, s in cands]
    # random search gets the trial-epochs of the first candidate
    ref_budget = cand_rows[0]["trial_epochs_mean"] if cand_rows else grid_epochs / 3
    if plan.from_space:
        cand_rows.append(evaluate(plan, curves, "space as given", dict(base_sch), replays, seed,
                                  fixed_noise=fixed_noise, grid_epochs=int(grid_epochs)))
    rows.append(evaluate(plan, curves, "random @ budget", full, replays, seed, fixed_noise=fixed_noise,
                         random_budget=ref_budget, grid_epochs=int(grid_epochs)))
    rows[-1]["name"] = f"random @ {ref_budget / grid_epochs:.0%} budget"
    rows.append(evaluate(plan, curves, "old default (async, w1)", old, replays, seed,
                         fixed_noise=fixed_noise, grid_epochs=int(grid_epochs)))
    rows += cand_rows
    return _result(curves, plan, space, replays, seed, fixed_noise, overrides, rows, t0)


def targets(rows: list[dict[str, Any]], budget: int, min_seeds: int = MIN_SEEDS) -> dict[str, Any] | None:
    """The finalists issue's targets for the first finalists row (the recommended default) against the
    full grid on one seed (rows[0]), each with its value, its bound and whether it is met, and what
    bounds it from below where the recording does: the all-seed pick's test regret (the best a pick on
    validation accuracy can hope for) and the cheapest stage that gives an interval (one finalist and
    the baselines, `min_seeds` fresh seeds each, at the budget) against the full grid's trial-epochs."""
    fin = next((r for r in rows if "finalists" in r), None)
    if fin is None:
        return None
    grid = rows[0]
    oracle_row = next((r for r in rows if r["name"].startswith("full grid, all")), None)
    cal = fin["calibration"]
    stage = (1 + len(fin["finalists"]["baselines"])) * min_seeds * budget
    out = {
        "row": fin["name"], "min_seeds": min_seeds,
        "test_regret": {"value": fin["test_regret_mean"], "bound": grid["test_regret_mean"] / 2,
                        "all_seed_pick": oracle_row["test_regret_mean"] if oracle_row else None},
        "trial_epochs": {"value": fin["trial_epochs_frac"], "bound": 0.5,
                         "cheapest_stage": stage / grid["trial_epochs_mean"]},
        "modal_pick": {"value": fin["repeat_share"], "bound": 2 * grid["repeat_share"]},
        "better_when_near": {"value": cal["better_when_near"], "bound": 0.05, "near": cal["near"]},
    }
    for k in ("test_regret", "trial_epochs", "better_when_near"):
        v = out[k]["value"]
        out[k]["met"] = v is not None and v <= out[k]["bound"] + 1e-9
    out["modal_pick"]["met"] = out["modal_pick"]["value"] >= out["modal_pick"]["bound"] - 1e-9
    return out


def targets_text(t: dict[str, Any]) -> list[str]:
    """The targets as lines under the table."""
    yes = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    tr, te, mp, bn = t["test_regret"], t["trial_epochs"], t["modal_pick"], t["better_when_near"]
    lines = [f"targets for '{t['row']}' against the full grid on 1 seed:",
             f"  test regret {tr['value']:.2f} <= {tr['bound']:.2f} (half the grid's): {yes(tr['met'])}"
             + (f"; the all-seed pick's own is {tr['all_seed_pick']:.2f}" if tr["all_seed_pick"] is not None
                else ""),
             f"  trial-epochs {100 * te['value']:.0f}% <= 50% of the grid's: {yes(te['met'])}; the cheapest "
             f"stage with an interval (1 finalist + the baselines, {t['min_seeds']} seeds) alone is "
             f"{100 * te['cheapest_stage']:.0f}%",
             f"  modal pick {100 * mp['value']:.0f}% >= {100 * mp['bound']:.0f}% (twice the grid's): "
             f"{yes(mp['met'])}" + ("; above 100%, out of reach" if mp["bound"] > 1 else "")]
    lines.append(f"  `better` when truly within 0.2 pt of the best baseline "
                 + ("(no such replay)" if bn["value"] is None else
                    f"{100 * bn['value']:.1f}% of {bn['near']} <= 5%: {yes(bn['met'])}"))
    return lines


def _result(curves: Curves, plan: Plan, space: str | None, replays: int, seed: int, fixed_noise: bool,
            overrides: dict[str, Any], rows: list[dict[str, Any]], t0: float) -> dict[str, Any]:
    for r in rows:
        r["wall_frac"] = r["wall"] / rows[0]["wall"]
    grid = sorted(set(plan.configs))
    return {"curves": curves.path, "space": space, "replays": replays, "seed": seed,
            "fixed_noise": fixed_noise, "overrides": overrides, "concurrency": plan.concurrency,
            "searcher": plan.searcher, "budget": curves.budget, "seeds_recorded": curves.seeds,
            "grid_trials": len(plan.configs), "grid_trial_epochs": rows[0]["trial_epochs_mean"],
            "best_config": rows[0]["best_config"], "test_best_config": rows[0]["test_best_config"],
            "truth": {c: round(curves.final(c), 5) for c in grid},
            "truth_test": {c: round(curves.final_test(c), 5) for c in grid},
            "seconds": time.time() - t0, "targets": targets(rows, curves.budget), "rows": rows}


def table(result: dict[str, Any]) -> str:
    lines = [f"replay of {result['curves']} ({result['space'] or 'every recorded config'}): "
             f"{result['replays']} replays, seed {result['seed']}, {result['grid_trials']} trials x "
             f"{result['budget']} epochs, concurrency {result['concurrency']}, searcher "
             f"{result['searcher']}; best config {result['best_config']} "
             f"({100 * result['truth'][result['best_config']]:.2f}; on the stand-in test "
             f"{result['test_best_config']}: {100 * result['truth_test'][result['test_best_config']]:.2f})",
             f"{'search':<32}{'rungs':<12}{'epochs%':>8}{'wall%':>7}{'busy%':>7}{'regret':>8}{'p90':>7}"
             f"{'worst':>7}{'test':>7}{'repeat':>8}{'best%':>7}{'better|near':>24}  spearman(rung)  "
             f"modal pick"]
    for r in result["rows"]:
        rho = " ".join(f"{k}:{v:.2f}" for k, v in r["spearman"].items()) or "-"
        rungs = ",".join(map(str, r["rungs"])) or "-"
        near = " / ".join(_near_text(r[k]) for k in ("calibration", "calibration_eval_size") if k in r) or "-"
        lines.append(f"{r['name']:<32}{rungs:<12}{100 * r['trial_epochs_frac']:>7.0f}%"
                     f"{100 * r['wall_frac']:>6.0f}%{100 * r['slot_use']:>6.0f}%"
                     f"{r['regret_mean']:>8.2f}{r['regret_p90']:>7.2f}{r['regret_worst']:>7.2f}"
                     f"{r['test_regret_mean']:>7.2f}{100 * r['repeat_share']:>7.0f}%"
                     f"{100 * r['test_best_share']:>6.0f}%{near:>24}  {rho:<15} {r['modal_pick']}")
    lines.append("regret: points of mean-over-seeds final val accuracy below the grid's best (test: the "
                 "stand-in test accuracy); epochs%: trial-epochs against the full grid; wall%: the "
                 "search's wall time against the full grid's; busy%: share "
                 "of the trial slots' time spent training (simulated epoch times: a lognormal speed "
                 "per trial, +-30% per epoch), the rest idle waiting for a rung or the last trials; "
                 "repeat: share of replays picking the modal pick; best%: share picking the config best "
                 "on the stand-in test; better|near: among replays whose pick is truly (all-seed test "
                 "mean) within 0.2 points of the truly best baseline, the share whose verdict against "
                 "it says `better` (after ' / ': with --eval-size)")
    if result.get("targets"):
        lines += targets_text(result["targets"])
    return "\n".join(lines)


def _near_text(cal: dict[str, Any]) -> str:
    return "none near" if not cal["near"] else f"{100 * cal['better_when_near']:.0f}% of {cal['near']}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("curves", help="a curves parquet written by benchmarks/curves.py")
    p.add_argument("--space", help="a search-space YAML, or a curves YAML (every recorded config)")
    p.add_argument("--replays", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=8, help="trials at once (default 8; the space's "
                   "max_concurrent wins)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the space (search.scheduler.window=2, search.num_samples=16, ...)")
    p.add_argument("--variant", action="append", default=None, metavar="NAME:k=v;k=v",
                   help="a candidate scheduler (repeatable; default: a built-in list)")
    p.add_argument("--finalists", action="append", default=None, metavar="NAME:top=2;seeds=3;k=v",
                   help="replay the finalists stage instead of the scheduler candidates: a candidate "
                        "(top, fresh seeds, scheduler keys over the default's; repeatable), or 'default' "
                        "for the built-in list")
    p.add_argument("--eval-size", type=int, help="the validation set's size: the finalists' verdicts "
                   "are also judged with its sampling noise (stats.compare's eval_size)")
    p.add_argument("--fixed-noise", action="store_true", help="one noise draw for every replay "
                   "(only the arrival order changes)")
    p.add_argument("--json", help="write the result here")
    p.add_argument("--txt", help="write the printed table here")
    args = p.parse_args(argv)
    overrides = {}
    for item in args.set:
        k, _, v = item.partition("=")
        overrides[k.strip()] = parse_value(v)
    result = run(args.curves, args.space, replays=args.replays, seed=args.seed, overrides=overrides,
                 variants=DEFAULT_VARIANTS if args.variant is None else args.variant,
                 concurrency=args.concurrency, fixed_noise=args.fixed_noise,
                 finalists=None if args.finalists is None else
                 [v for f in args.finalists for v in (FINALISTS_VARIANTS if f == "default" else [f])],
                 eval_size=args.eval_size)
    text = table(result)
    print(text)
    print(f"({result['seconds']:.1f} s)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.txt:
        Path(args.txt).write_text(text + "\n")


if __name__ == "__main__":
    main()
