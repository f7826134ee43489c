"""Finalists: the configs a search trains again on fresh seeds, beside the baselines, and their ranking.

One search trial per config is one seed: its rank-1 is partly the luckiest seed (the project's replays:
the full grid with one seed each picks its modal winner in only 40% of draws). So after the halving,
the best `top` configs are trained again at the search budget on `n` further seeds, none equal to the
search's, and the baselines CE and LSR on the same seeds, so every comparison is paired (same seed:
same initialisation and data order). The finalists are then ranked by their mean over those fresh
seeds only: the search seed chose them, so its scores are biased upward (the winner's curse).

This module is the one place that decides which configs become finalists and how they rank; the
search (`tfkd_search.search.driver`), the export and `benchmarks/replay.py` all call it. Pure Python.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .stats import (VERDICTS, Comparison, Summary, compare, format_comparison, format_summary,
                    summarize)

__all__ = ["BASELINES", "baseline_overrides", "choose", "fresh_seeds", "label", "rank", "scores_key", "seeds_avoiding",
           "Standing", "format_standings", "per_seed", "row_labels", "standings"]

# The baselines every finalist is compared with, by label: the config changes that make them from
# the search's base config (LSR's eps is the space's, else 0.1).
BASELINES = ("ce", "lsr")


def baseline_overrides(name: str, eps: float | None = None) -> dict[str, Any]:
    """Dotted config changes that turn the base config into baseline `name` (same recipe, seeds)."""
    if name == "ce":
        return {"method": "ce"}
    if name == "lsr":
        return {"method": "lsr", "loss.eps": 0.1 if eps is None else float(eps)}
    raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")


def choose(ranked: Sequence[Mapping[str, Any]], top: int) -> list[dict[str, Any]]:
    """The first `top` distinct configs (searched values, as dicts) in the search's ranking order.
    A config searched twice (grid repeats, random draws that coincide) is one finalist."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for params in ranked:
        if len(out) >= top:
            break
        key = label(params)
        if key in seen:
            continue
        seen.add(key)
        out.append(dict(params))
    return out


def fresh_seeds(search_seed: int, n: int) -> list[int]:
    """`n` seeds for the finalists and baselines, none equal to the search's seed."""
    return [int(search_seed) + 1 + i for i in range(max(0, int(n)))]


def seeds_avoiding(seeds: Sequence[int], taken: Iterable[int]) -> list[int]:
    """`seeds` without those in `taken` (e.g. the teacher's seed: a student that replayed its teacher's
    initialisation and data order would not be an independent run), topped up with the next seeds
    above all of them, so the count stays the same."""
    taken = {int(t) for t in taken}
    out = [int(s) for s in seeds if int(s) not in taken]
    nxt = max([*seeds, *taken], default=-1) + 1
    while len(out) < len(seeds):
        if nxt not in taken and nxt not in out:
            out.append(nxt)
        nxt += 1
    return out


def label(params: Mapping[str, Any]) -> str:
    """A stable text name of a config's searched values, e.g. 'loss.alpha=0.3,loss.tau=4'."""
    return ",".join(f"{k}={_text(v)}" for k, v in sorted(params.items()))


def scores_key(values: Sequence[float], mode: str = "max") -> tuple[int, float]:
    """Sort key of one config's per-seed scores, best first: fewer seeds that failed (NaN, infinite or
    missing: a diverged or errored run) first, then the mean of the others in the better direction."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    bad = len(values) - len(finite)
    if not finite:
        return (bad + 1, math.inf)
    mean = sum(finite) / len(finite)
    return (bad, -mean if mode == "max" else mean)


def rank(scores: Mapping[str, Sequence[float]], order: Sequence[str], mode: str = "max") -> list[str]:
    """Finalists best first by their mean score over the fresh seeds (`scores_key`); ties go to the
    finalist the search ranked higher (earlier in `order`)."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    pos = {name: i for i, name in enumerate(order)}
    return sorted(scores, key=lambda name: (*scores_key(list(scores[name]), mode),
                                           pos.get(name, len(pos))))


def _text(v: Any) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return f"{v:g}"
    return str(v)


@dataclass(frozen=True)
class Standing:
    """One finalist or baseline after the finalists stage: its per-seed scores, their summary and,
    for a finalist, its paired comparison with each baseline (`stats.compare`)."""

    name: str
    role: str                       # "finalist" or "baseline"
    scores: dict[int, float]        # seed -> score (NaN: the run failed)
    summary: Summary
    versus: dict[str, Comparison]   # baseline name -> comparison (empty for a baseline)

    against: str | None = None      # the stronger baseline (by mean score): the one that decides

    def headline(self) -> Comparison | None:
        """The comparison with the stronger baseline (None for a baseline or without baselines)."""
        return self.versus.get(self.against) if self.against else None


def standings(scores: Mapping[str, Mapping[int, float]], order: Sequence[str], mode: str = "max", *,
              level: float = 0.95, examples: Mapping[str, Mapping[int, Any]] | None = None
              ) -> list[Standing]:
    """The finalists best first (`rank`), then the baselines (BASELINES order), each with its summary
    over seeds and, for the finalists, the paired comparison with every baseline. `scores` maps a name
    (finalist<k>, ce, lsr) to {seed: score}; `examples` a name to {seed: per-image validation results}
    (`stats.pack_correct`), which put the validation split's sampling noise into the intervals."""
    examples = examples or {}
    finals = [n for n in scores if n not in BASELINES]
    bases = [b for b in BASELINES if b in scores]
    stronger = min(bases, key=lambda b: scores_key(list(scores[b].values()), mode), default=None)
    out = []
    for n in rank({n: list(scores[n].values()) for n in finals}, order, mode):
        vs = {b: compare(scores[n], scores[b], mode=mode, level=level,
                         examples=(examples[n], examples[b]) if n in examples and b in examples else None)
              for b in bases}
        out.append(Standing(n, "finalist", dict(scores[n]), summarize(scores[n].values()), vs, stronger))
    out += [Standing(b, "baseline", dict(scores[b]), summarize(scores[b].values()), {}) for b in bases]
    return out


def per_seed(runs: Iterable[tuple[str, int, float, Any]]
             ) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, str]]]:
    """(scores, examples) for `standings` from one (name, seed, score, per-image results) per run: the
    score by name and seed (NaN: a failed run), and the per-image results (`stats.pack_correct` text)
    of the runs that have them and a finite score (tables of older versions have none)."""
    scores: dict[str, dict[int, float]] = {}
    examples: dict[str, dict[int, str]] = {}
    for name, seed, score, correct in runs:
        scores.setdefault(str(name), {})[int(seed)] = float(score)
        if isinstance(correct, str) and correct and math.isfinite(float(score)):
            examples.setdefault(str(name), {})[int(seed)] = correct
    return scores, examples


def row_labels(plan: Mapping[str, Any]) -> dict[str, str]:
    """The answer table's row names from a finalists plan: 'finalist1 (loss.tau=4,...)', 'ce', 'lsr'."""
    return {e["name"]: e["name"] if e["role"] == "baseline" else f"{e['name']} ({e['label']})"
            for e in plan.get("entries", [])}


def format_standings(rows: Sequence[Standing], metric: str = "val_acc",
                     labels: Mapping[str, str] | None = None) -> str:
    """The answer as a table: config, mean ± std (n) over the fresh seeds, the paired difference to
    each baseline with its 95% interval (marked better/worse where the interval excludes 0), and the
    verdict against the stronger baseline. Accuracies in points (x100); `labels` names the rows."""
    scale = 100.0 if metric.endswith("acc") else 1.0
    labels = dict(labels or {})
    bases = [r.name for r in rows if r.role == "baseline"]
    head = ["config", f"{metric} mean ± std (n)", *(f"Δ vs {b.upper()} [95% CI]" for b in bases),
            "verdict"]
    body, notes = [], set()
    for r in rows:
        cells = [labels.get(r.name, r.name), format_summary(r.summary, scale)]
        for b in bases:
            c = r.versus.get(b)
            if c is None:
                cells.append("-")
            elif c.low is None or c.high is None:
                cells.append(f"{c.diff * scale:+.2f} (no interval)")
                notes.add(f"no interval: {c.note}")
            else:
                mark = "" if c.verdict == VERDICTS[2] else f" {c.verdict}"
                cells.append(f"{c.diff * scale:+.2f} [{c.low * scale:+.2f}, {c.high * scale:+.2f}]{mark}")
                how = "paired t on the per-seed differences" if c.paired else "Welch"
                if c.examples:
                    how += (f", widened by the sampling noise of the {c.examples:,} evaluation images "
                            f"(from every run's per-image results)")
                notes.add(f"intervals: {how}")
        h = r.headline()
        cells.append("(baseline)" if r.role == "baseline" else "(no baseline to compare with)"
                     if h is None else f"{h.verdict} than {r.against.upper()}"
                     if h.verdict != VERDICTS[2] else f"{h.verdict} to {r.against.upper()}")
        body.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + [f"({n})" for n in sorted(notes)])
