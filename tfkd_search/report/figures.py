"""The report's figures, as PNG bytes (None when the run has too little data for one).

Optuna draws the figures it has an equivalent for (parallel coordinates, slice plot, parameter
importances), on in-memory studies built from the run's trials (`study.py`). Ours are only the two
Optuna has no equivalent for: the learning curves coloured by outcome with ASHA's stops marked
(Optuna's `plot_intermediate_values` marks neither), and the compute spent against a full grid.
Our own figures use matplotlib's object API on the Agg canvas (no pyplot); Optuna's use pyplot, so
they are drawn inside an rc_context (Optuna switches to the ggplot style sheet globally) and closed
after rendering.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .compute import Compute
from .data import RunData, norm
from .study import Importance, finished_study, metric_at, quiet_optuna

DPI = 110
STATUS_ORDER = ("completed", "stopped_early", "running", "pending", "diverged", "errored")
STATUS_COLORS = {"completed": "#1a9641", "stopped_early": "#f28e2b", "running": "#4e79a7",
                 "pending": "#9c9c9c", "diverged": "#d62728", "errored": "#6b6b6b"}
STATUS_LABELS = {"completed": "completed (full budget)", "stopped_early": "stopped early by ASHA",
                 "running": "running / unfinished", "pending": "pending (no epoch yet)",
                 "diverged": "diverged (NaN loss)", "errored": "errored"}
METRIC_LABELS = {"val_acc": "validation accuracy", "val_loss": "validation loss",
                 "test_acc": "test accuracy", "last_val_acc": "last validation accuracy"}


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def score_label(data: RunData) -> str:
    """Short axis label of the score: 'score (last-epoch val_acc)'."""
    w = data.ranking.window
    return f"score ({'last-epoch ' + data.metric if w <= 1 else f'mean {data.metric}, last {w} epochs'})"


def status_counts(t: Any) -> dict[str, int]:
    counts = t["status"].value_counts().to_dict() if len(t) else {}
    return {s: int(counts[s]) for s in [*STATUS_ORDER, *sorted(counts)] if s in counts}


def _figure(w: float, h: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any, tight: bool = False) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white",
                **({"bbox_inches": "tight", "pad_inches": 0.15} if tight else {}))
    return buf.getvalue()


@contextmanager
def _optuna_style(w: float, h: float) -> Iterator[Any]:
    """pyplot for Optuna's plots: its style changes undone afterwards, the Agg backend when none is
    chosen yet (no display needed), our size and resolution."""
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    with quiet_optuna() as optuna, matplotlib.rc_context(
            {"figure.figsize": (w, h), "figure.dpi": DPI}), warnings.catch_warnings():
        # a single trial or value: "identical low and high xlims", expanded by matplotlib itself
        warnings.filterwarnings("ignore", "Attempting to set identical", UserWarning)
        yield optuna


def _render_pyplot(axes: Any) -> bytes:
    import numpy as np
    from matplotlib import pyplot as plt

    ax = axes.flat[0] if isinstance(axes, np.ndarray) else axes
    fig = ax.figure
    try:  # Optuna lays its figures out for screens: labels may stick out of the canvas
        return _png(fig, tight=True)
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------------
# Ours


def fig_learning_curves(data: RunData) -> bytes | None:
    """The ranking metric per epoch of every trial, coloured by outcome, ASHA's stops marked."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    h, t, metric = data.history, data.trials, data.metric
    if not len(h) or metric not in h:
        return None
    h = h.assign(_div=h["diverged"].fillna(0) > 0)
    valid = h[~h["_div"] & h[metric].notna()]  # a diverged epoch reports the worst score
    if not len(valid):
        return None
    status_of = dict(zip(t["trial_id"], t["status"]))
    counts = status_counts(t)
    best = data.best()
    n = h["trial_id"].nunique()
    alpha = 0.85 if n <= 20 else (0.55 if n <= 100 else 0.3)
    fig = _figure(10.5, 5.8)
    ax = fig.add_subplot()
    shown: set[str] = set()
    stop_epochs: dict[int, int] = {}
    for tid, g in h.groupby("trial_id", sort=False):
        g = g.sort_values("epoch")
        status = status_of.get(tid, "running")
        color = STATUS_COLORS.get(status, "#4e79a7")
        div = g["_div"]
        ok = g[~div & g[metric].notna()]
        ax.plot(ok["epoch"], ok[metric], color=color, lw=1.3, alpha=alpha, marker="o", ms=3, zorder=2)
        shown.add(status)
        if status == "stopped_early" and len(ok):
            ep, y = int(ok["epoch"].iloc[-1]), float(ok[metric].iloc[-1])
            ax.plot([ep], [y], marker="X", ms=10, color=color, mec="black", mew=0.7, ls="none", zorder=4)
            stop_epochs[ep] = stop_epochs.get(ep, 0) + 1
        if status == "diverged" and div.any():
            ep = int(g.loc[div, "epoch"].iloc[0])
            y = float(ok[metric].iloc[-1]) if len(ok) else float(valid[metric].min())
            ax.plot([ep], [y], marker="v", ms=10, color=color, mec="black", mew=0.7, ls="none", zorder=4)
    for ep, k in sorted(stop_epochs.items()):
        ax.axvline(ep, color=STATUS_COLORS["stopped_early"], ls=":", lw=1.4, zorder=1)
        ax.annotate(f"ASHA stopped {k}", xy=(ep, 1), xycoords=("data", "axes fraction"),
                    xytext=(0, 3), textcoords="offset points", fontsize=9, color="#9a4f00",
                    ha="center", va="bottom", annotation_clip=False)
    handles = [Line2D([], [], color=STATUS_COLORS.get(s, "#4e79a7"), lw=2, marker="o", ms=4,
                      label=f"{STATUS_LABELS.get(s, s)}: {counts.get(s, 0)}")
               for s in [*(x for x in STATUS_ORDER if x in shown), *sorted(shown - set(STATUS_ORDER))]]
    if stop_epochs:
        handles.append(Line2D([], [], color=STATUS_COLORS["stopped_early"], marker="X", ms=9,
                              mec="black", ls="none", label="epoch where ASHA stopped a trial"))
    if "diverged" in shown:
        handles.append(Line2D([], [], color=STATUS_COLORS["diverged"], marker="v", ms=9, mec="black",
                              ls="none", label="epoch where the loss diverged"))
    if best is not None:
        g = valid[valid["trial_id"] == best["trial_id"]].sort_values("epoch")
        ax.plot(g["epoch"], g[metric], color="black", lw=2.6, zorder=5)
        handles.append(Line2D([], [], color="black", lw=2.6,
                              label=f"best: trial {best['trial_id']} (score {best['score']:.4f})"))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric_label(metric))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    last = max(int(h["epoch"].max()), data.budget or 0)
    ax.set_xlim(0.7, last + 0.3)
    vals = valid[metric].astype(float)
    lo, hi = float(vals.min()), float(vals.max())
    pad = max(0.02, (hi - lo) * 0.08)
    ax.set_ylim(lo - pad if metric != "val_acc" else max(0.0, lo - pad),
                min(1.0, hi + pad) if metric == "val_acc" and hi <= 1 else hi + pad)
    ax.grid(alpha=0.3)
    budget = f", budget {data.budget} epochs" if data.budget else ""
    ax.set_title(f"Learning curves of {n} trial{'s' if n != 1 else ''}{budget}", fontsize=13,
                 pad=20 if stop_epochs else 6)
    ax.legend(handles=handles, loc="lower right" if data.ranking.mode == "max" else "upper right",
              fontsize=9, framealpha=0.9)
    return _png(fig)


def fig_compute(c: Compute) -> bytes | None:
    if not c.epochs_full or not c.epochs_used or c.seconds_per_epoch != c.seconds_per_epoch:
        return None  # nothing trained yet: a bar of zeros says nothing
    fig = _figure(10.0, 3.0)
    a1, a2 = fig.subplots(1, 2)
    labels = ["this search" + (",\nso far" if c.in_progress else ""), c.full_label.replace(", ", ",\n")]
    colors = ["#4e79a7", "#bab0ac"]
    for ax, vals, what, fmt in ((a1, [c.epochs_used, c.epochs_full], "trial-epochs", "{:.0f}"),
                                (a2, [c.hours_used, c.hours_full], c.unit, "{:.3g}")):
        vals = [v if v == v else 0.0 for v in vals]
        bars = ax.barh(labels, vals, color=colors, edgecolor="black", linewidth=0.5, height=0.55)
        top = max(vals) or 1.0
        for b, v in zip(bars, vals):
            ax.text(v + top * 0.01, b.get_y() + b.get_height() / 2, fmt.format(v), va="center",
                    fontsize=10)
        ax.set_xlim(0, top * 1.18)
        ax.invert_yaxis()
        ax.set_xlabel(what if what == "trial-epochs"
                      else f"{what} ({c.share:g} {what.split('-')[0]} per trial)")
        ax.grid(axis="x", alpha=0.3)
    saved = f": early stopping saved {c.saved:.0%} of the trial-epochs" if c.saved == c.saved else ""
    fig.suptitle(f"Compute spent{' so far' if c.in_progress else ''}{saved}", fontsize=13)
    return _png(fig)


# ------------------------------------------------------------------------------------------------
# Optuna's


def fig_parallel(data: RunData) -> bytes | None:
    """Optuna's parallel-coordinate plot of the finished trials, valued by their score."""
    study, params, ok = finished_study(data)
    if study is None:
        return None
    best = data.best()
    with _optuna_style(max(8.0, 2.3 * (len(params) + 1) + 1.5), 5.6) as optuna:
        ax = optuna.visualization.matplotlib.plot_parallel_coordinate(
            study, params=params, target_name="score")
        ax.tick_params(axis="x", labelrotation=0)
        n = len(ok)
        title = f"Searched values and score ({n} finished trial{'s' if n != 1 else ''})"
        if best is not None:
            title += f"; best: trial {best['trial_id']}"
        ax.set_title(title, fontsize=12, y=1.06)
        return _render_pyplot(ax)


def fig_slice(data: RunData) -> bytes | None:
    """Optuna's slice plot: each searched parameter against the score, the best trial starred."""
    import numpy as np

    study, params, ok = finished_study(data)
    if study is None:
        return None
    best = data.best()
    with _optuna_style(max(6.4, 4.0 * len(params)), 4.6) as optuna:
        axes = optuna.visualization.matplotlib.plot_slice(study, params=params,
                                                          target_name=score_label(data))
        flat = list(axes.flat) if isinstance(axes, np.ndarray) else [axes]
        fig = flat[0].figure
        fig.suptitle("Each searched parameter against the score (colour: trial order; "
                     "star: the best trial)", fontsize=12)
        if len(flat) == 1:
            flat[0].set_title("")
        if best is not None:
            for ax in flat:  # Optuna orders the panels by name: find each one's parameter
                p = ax.get_xlabel()
                if p not in params:
                    continue
                v = norm(best[p])
                numeric = isinstance(study.trials[0].distributions[p],
                                     (optuna.distributions.FloatDistribution,
                                      optuna.distributions.IntDistribution))
                ax.scatter([v if numeric else repr(v)], [float(best["score"])], s=260, marker="*",
                           color="gold", edgecolors="black", linewidths=0.8, zorder=4)
        return _render_pyplot(axes)


def fig_importance(imp: Importance, data: RunData) -> bytes | None:
    """Optuna's importance plot, of the importances computed at one fidelity (study.py)."""
    if imp.values is None or imp.study is None:
        return None
    from optuna.importance import BaseImportanceEvaluator

    values = dict(imp.values)

    class _Computed(BaseImportanceEvaluator):  # the numbers the page's table shows, not a rerun
        def evaluate(self, study: Any, params: Any = None, *, target: Any = None) -> dict[str, float]:
            return dict(values)

    with _optuna_style(8.5, max(3.2, 1.6 + 0.6 * len(values))) as optuna:
        ax = optuna.visualization.matplotlib.plot_param_importances(
            imp.study, evaluator=_Computed(), params=list(values),
            target_name=metric_at(data, imp.epoch))
        ax.set_title(f"Which parameters mattered ({imp.evaluator}; {metric_at(data, imp.epoch)}, "
                     f"{imp.trials} trials)", loc="left", fontsize=12)
        return _render_pyplot(ax)


def fig_seeds(rows: list[Any], metric: str, labels: dict[str, str] | None = None) -> bytes | None:
    """Finalists and baselines side by side: every seed's score as a point (one thin line per seed
    joins its runs: the comparisons are paired), each config's mean with its 95% t interval."""
    import math

    from ..stats import t_ppf

    rows = [r for r in rows if any(v == v for v in r.scores.values())]
    if not rows:
        return None
    scale = 100.0 if metric.endswith("acc") else 1.0
    labels = labels or {}
    fig = _figure(max(5.0, 1.4 * len(rows) + 1.5), 4.2)
    ax = fig.add_subplot()
    seeds = sorted({s for r in rows for s in r.scores})
    for s in seeds:
        xs = [i for i, r in enumerate(rows) if s in r.scores and r.scores[s] == r.scores[s]]
        ax.plot(xs, [rows[i].scores[s] * scale for i in xs], color="#bbbbbb", lw=0.8, zorder=1)
    for i, r in enumerate(rows):
        vals = [v * scale for v in r.scores.values() if v == v]
        color = "#4e79a7" if r.role == "finalist" else "#7f7f7f"
        ax.scatter([i] * len(vals), vals, s=22, color=color, alpha=0.75, zorder=2)
        m = r.summary
        if m.n >= 2 and m.std == m.std:
            half = t_ppf(0.975, m.n - 1) * m.std / math.sqrt(m.n) * scale
            ax.errorbar([i + 0.18], [m.mean * scale], yerr=[[half], [half]], fmt="D", color="black",
                        ms=5, capsize=4, zorder=3)
        elif m.n:
            ax.plot([i + 0.18], [m.mean * scale], "D", color="black", ms=5, zorder=3)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([_tick(labels.get(r.name, r.name)) for r in rows], fontsize=8)
    ax.set_xlim(-0.5, len(rows) - 0.3)
    ax.set_ylabel(f"{metric_label(metric)}{' (%)' if scale != 1 else ''}")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"per seed (points, a grey line per seed), mean and 95% interval (black), "
                 f"{len(seeds)} seeds", fontsize=9)
    return _png(fig)


def _tick(label: str) -> str:
    """'finalist1 (loss.a=0.5,loss.tau=1)' as 'finalist1\na=0.5\ntau=1': one value per line."""
    name, _, rest = label.partition(" (")
    parts = []
    for p in filter(None, rest.rstrip(")").split(",")):
        key, eq, value = p.partition("=")
        parts.append(key.rsplit(".", 1)[-1] + eq + value)
    return "\n".join([name, *parts])
