"""The search report: `RUN_DIR/report/index.html`, a self-contained page of matplotlib figures.

`tfkd-search report RUN_DIR` writes it on demand; every search writes it at the end. It needs no Ray:
it reads the run folder only (`trials.parquet`, `history.parquet`, `search.json`, `space.yaml`, and,
for a search still in progress or killed before it wrote `trials.parquet`, Ray's per-trial
`trial_*/result.json`). The figures are PNGs in `RUN_DIR/report/` and are also embedded in the page as
data URIs, so the page opens from disk, from a copy of the page alone, or from MLflow's artifact view.

Figures (each one is replaced by a note when the run has too little data for it):

* learning_curves.png: validation accuracy per epoch of every trial, coloured by outcome, with the
  epochs where ASHA stopped trials marked;
* parallel_coordinates.png and param_scatter.png: the searched values against best val accuracy;
* importance.png: which parameters mattered, from Optuna's fANOVA importance evaluator on an in-memory
  study built from the finished trials;
* compute.png: trial-epochs and GPU-hours (CPU-hours on the CPU) spent, against a full grid without
  early stopping.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

REPORT_DIR = "report"
INDEX = "index.html"
FINISHED = ("completed", "stopped_early")
STATUS_ORDER = ("completed", "stopped_early", "running", "pending", "diverged", "errored")
STATUS_COLORS = {"completed": "#1a9641", "stopped_early": "#f28e2b", "running": "#4e79a7",
                 "pending": "#9c9c9c", "diverged": "#d62728", "errored": "#6b6b6b"}
STATUS_LABELS = {"completed": "completed (full budget)", "stopped_early": "stopped early by ASHA",
                 "running": "running / unfinished", "pending": "pending (no epoch yet)",
                 "diverged": "diverged (NaN loss)", "errored": "errored"}
HISTORY_COLUMNS = ("epoch", "val_acc", "val_loss", "train_loss", "train_ce", "train_kl", "lr",
                   "images_per_s", "epoch_seconds", "diverged")
DPI = 110

Warn = Callable[[str], None]


# ------------------------------------------------------------------------------------------------
# Reading a run folder


@dataclass
class RunData:
    run_dir: Path
    name: str
    state: dict[str, Any]                 # search.json ({} when missing)
    space: dict[str, Any]                 # space.yaml as plain YAML ({} when missing)
    trials: Any                           # DataFrame, one row per trial
    history: Any                          # DataFrame, one row per trial and epoch
    params: dict[str, dict[str, Any]]     # searched parameter -> its space.yaml spec ({} if unknown)
    budget: int | None                    # epochs a trial may train (ASHA's max_t)
    source: str                           # "trials.parquet" or "result.json"
    notes: list[str] = field(default_factory=list)

    @property
    def search(self) -> dict[str, Any]:
        s = self.space.get("search")
        return s if isinstance(s, dict) else {}


def _storage_hint(run_dir: Path) -> str:
    try:
        runs = sorted(d.name for d in run_dir.iterdir()
                      if d.is_dir() and ((d / "search.json").exists() or (d / "trials.parquet").exists()))
    except OSError:
        runs = []
    if runs:
        shown = ", ".join(str(run_dir / r) for r in runs[:5])
        return f"; it holds the run folders {shown}{' ...' if len(runs) > 5 else ''}"
    return "; pass the folder <storage>/<name> of a search, e.g. tfkd_runs/quickstart"


def load_run(run_dir: str | os.PathLike[str]) -> RunData:
    """Everything the report needs from a run folder; ConfigError when it is not one."""
    import pandas as pd

    run_dir = Path(run_dir).expanduser()
    if not run_dir.exists():
        raise ConfigError(f"report: run folder {run_dir} does not exist; pass the folder "
                          f"<storage>/<name> of a search, e.g. tfkd_runs/quickstart")
    if not run_dir.is_dir():
        raise ConfigError(f"report: {run_dir} is a file, not a run folder; pass the folder "
                          f"<storage>/<name> of a search, e.g. tfkd_runs/quickstart")
    trial_dirs = sorted(d for d in run_dir.glob("trial_*") if d.is_dir())
    has_results = any((d / "result.json").exists() or (d / "params.json").exists() for d in trial_dirs)
    state_path, trials_path = run_dir / "search.json", run_dir / "trials.parquet"
    if not (state_path.exists() or trials_path.exists() or has_results):
        raise ConfigError(f"report: {run_dir} is not a tfkd-search run folder (no search.json, "
                          f"trials.parquet or trial_*/result.json){_storage_hint(run_dir)}")
    notes: list[str] = []
    state: dict[str, Any] = {}
    if state_path.exists():
        try:
            loaded = json.loads(state_path.read_text())
            state = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError) as exc:
            notes.append(f"search.json could not be read ({exc}); the report shows what the other "
                         f"files hold")
    space: dict[str, Any] = {}
    if (run_dir / "space.yaml").exists():
        import yaml

        try:
            loaded = yaml.safe_load((run_dir / "space.yaml").read_text())
            space = loaded if isinstance(loaded, dict) else {}
        except (OSError, yaml.YAMLError) as exc:
            notes.append(f"space.yaml could not be read ({str(exc).splitlines()[0]}); parameter kinds "
                         f"are inferred from the values")
    name = str(state.get("name") or space.get("name") or run_dir.name)
    raw_params = (space.get("search") or {}).get("params") if isinstance(space.get("search"), dict) else None
    params: dict[str, dict[str, Any]] = {str(k): (v if isinstance(v, dict) else {})
                                         for k, v in (raw_params or {}).items()}
    budget = _budget(state, space)

    trials = history = None
    source = "trials.parquet"
    if trials_path.exists():
        try:
            trials = pd.read_parquet(trials_path)
        except Exception as exc:  # noqa: BLE001 - a torn or foreign file: fall back to Ray's files
            notes.append(f"trials.parquet could not be read ({type(exc).__name__}: {exc}); "
                         f"read Ray's per-trial result.json files instead")
    if trials is not None:
        newer = [d.name for d in trial_dirs if (d / "result.json").exists()
                 and (d / "result.json").stat().st_mtime > trials_path.stat().st_mtime + 5]
        if newer:
            notes.append(f"{len(newer)} trial(s) reported after trials.parquet was written (a resumed "
                         f"search still running?); this report shows trials.parquet, the state at the "
                         f"end of the last finished run of the search")
        hist_path = run_dir / "history.parquet"
        if hist_path.exists():
            try:
                history = pd.read_parquet(hist_path)
            except Exception as exc:  # noqa: BLE001
                notes.append(f"history.parquet could not be read ({type(exc).__name__}: {exc}); no "
                             f"learning curves")
        else:
            notes.append("history.parquet is missing: no learning curves")
    else:
        source = "result.json"
        if has_results:
            notes.insert(0, "trials.parquet is missing: the search is still running, or its driver "
                            "stopped before the end; this report reads Ray's per-trial result.json "
                            "files and shows the trials as they were when it was written")
        else:
            notes.insert(0, "no trial has reported yet (no trials.parquet, no trial_*/result.json)")
        trials, history = _from_results(trial_dirs, budget)
    for col in ("trial_id", "status", "epochs", "best_val_acc", "last_val_acc", "wall_seconds", "error"):
        if col not in trials:
            trials[col] = float("nan") if col not in ("trial_id", "status", "error") else None
    trials["trial_id"] = trials["trial_id"].astype(str)
    trials["status"] = trials["status"].fillna("errored").astype(str)
    trials["epochs"] = pd.to_numeric(trials["epochs"], errors="coerce").fillna(0).astype(int)
    for col in ("best_val_acc", "last_val_acc", "wall_seconds"):
        trials[col] = pd.to_numeric(trials[col], errors="coerce")
    for col in [c for c in trials.columns if "." in c]:
        params.setdefault(col, {})
    for p in params:
        trials[p] = [_norm(v) for v in trials[p]] if p in trials else None
    if history is None or not len(history) or "val_acc" not in history or "epoch" not in history:
        history = pd.DataFrame(columns=["trial_id", *HISTORY_COLUMNS])
    history = history.copy()
    history["trial_id"] = history["trial_id"].astype(str)
    if budget is None and len(trials):
        budget = int(trials["epochs"].max()) or None
    return RunData(run_dir=run_dir, name=name, state=state, space=space, trials=trials,
                   history=history, params=params, budget=budget, source=source, notes=notes)


def _budget(state: dict[str, Any], space: dict[str, Any]) -> int | None:
    for base in (state.get("base"), space.get("base")):
        if not isinstance(base, dict):
            continue
        try:
            from .config import build_run_config

            return int(build_run_config(base).schedule.trained_epochs)
        except Exception:  # noqa: BLE001 - a base config of another version: read it raw
            sched = base.get("schedule") or {}
            value = sched.get("budget") or sched.get("epochs")
            if isinstance(value, int) and value > 0:
                return value
    return None


def _from_results(trial_dirs: list[Path], budget: int | None) -> tuple[Any, Any]:
    """Trials and history from Ray's trial_*/result.json (one JSON object per reported epoch)."""
    import pandas as pd

    from .search import _outcome

    rows, hists = [], []
    for d in trial_dirs:
        lines: list[dict[str, Any]] = []
        f = d / "result.json"
        if f.exists():
            for line in f.read_text(errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:  # a half-written last line of a running trial
                    continue
                if isinstance(rec, dict):
                    lines.append(rec)
        last = lines[-1] if lines else {}
        config = last.get("config")
        if not isinstance(config, dict) and (d / "params.json").exists():
            try:
                config = json.loads((d / "params.json").read_text())
            except (OSError, ValueError):
                config = None
        config = config if isinstance(config, dict) else {}
        trial_id = str(last.get("trial_id") or d.name.removeprefix("trial_"))
        recs = [r for r in lines if isinstance(r.get("epoch"), (int, float))]
        h = pd.DataFrame([{k: r.get(k, float("nan")) for k in HISTORY_COLUMNS} for r in recs],
                         columns=list(HISTORY_COLUMNS))
        if len(h):
            h["epoch"] = h["epoch"].astype(int)
            h = h.drop_duplicates("epoch", keep="last").sort_values("epoch")
            h.insert(0, "trial_id", trial_id)
            hists.append(h)
        error_file = d / "error.txt"  # Ray appends each failure; a retried trial may go on after it
        error = None
        if error_file.exists() and not last.get("done") and (
                not f.exists() or error_file.stat().st_mtime >= f.stat().st_mtime):
            text = error_file.read_text(errors="replace").strip().splitlines()
            error = (text[-1] if text else "error")[:500]
        diverged = bool(float(last.get("diverged", 0.0) or 0.0) > 0)
        if error is not None:
            status = "errored"
        elif not lines:
            status = "pending"
        elif diverged:
            status = "diverged"
        elif last.get("done"):
            status = _outcome(last, None, budget or int(last.get("epoch", 0) or 0))
        else:
            status = "running"
        valid = h[h["diverged"].fillna(0) == 0] if len(h) else h
        best = float(valid["val_acc"].max()) if len(valid) else float("nan")
        row = {"trial_id": trial_id, "status": status, "epochs": int(last.get("epoch", 0) or 0),
               "best_val_acc": best,
               "last_val_acc": float(last.get("val_acc", float("nan"))) if not diverged else 0.0,
               "wall_seconds": float(last.get("time_total_s", 0.0) or 0.0), "error": error}
        row.update({str(k): v for k, v in config.items()})
        rows.append(row)
    trials = pd.DataFrame(rows) if rows else pd.DataFrame(
        columns=["trial_id", "status", "epochs", "best_val_acc", "last_val_acc", "wall_seconds", "error"])
    history = (pd.concat(hists, ignore_index=True) if hists
               else pd.DataFrame(columns=["trial_id", *HISTORY_COLUMNS]))
    return trials, history


def _norm(v: Any) -> Any:
    """A parameter value as a plain Python value (lists and dicts as JSON text)."""
    if v is None:
        return None
    if hasattr(v, "tolist"):
        v = v.tolist()
    elif hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v)
    return v


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ------------------------------------------------------------------------------------------------
# Numbers


def best_trial(data: RunData) -> Any:
    """The export's rank 1 (completed trials first), or None."""
    from .export import rank_trials

    t = data.trials
    ok = t[t["status"].isin(FINISHED) & t["best_val_acc"].notna()]
    if not len(ok):
        return None
    return rank_trials(ok).iloc[0]


def planned_trials(data: RunData) -> int | None:
    s = data.search
    params = s.get("params") if isinstance(s.get("params"), dict) else {}
    if not params:
        return None
    searcher = (s.get("searcher") or {}).get("kind", "grid") if isinstance(s.get("searcher"), dict) \
        else "grid"
    samples = int(s.get("num_samples", 1) or 1)
    if searcher == "optuna":
        return samples
    grid = 1
    for spec in params.values():
        if isinstance(spec, dict) and spec.get("kind") == "grid":
            grid *= max(1, len(spec.get("values") or []))
    return grid * samples


@dataclass
class Compute:
    unit: str               # "GPU-hours" or "CPU-hours"
    share: float            # GPUs (or CPUs) per trial
    trials: int
    planned: int
    budget: int | None
    epochs_used: int
    epochs_full: int | None
    wall_seconds: float
    seconds_per_epoch: float
    hours_used: float
    hours_full: float
    finished: int = 0          # trials that completed or were stopped early
    in_progress: bool = False  # read from Ray's result files: more trials and epochs may come
    grid: bool = True          # the searcher is a grid (else: the planned samples)

    @property
    def saved(self) -> float:
        """Share of the full budget's trial-epochs that early stopping saved (NaN: not meaningful)."""
        if not self.epochs_full or not self.finished or self.in_progress:
            return float("nan")
        return 1.0 - self.epochs_used / self.epochs_full

    @property
    def full_label(self) -> str:
        return ("full grid, no early stopping" if self.grid
                else "all planned trials, no early stopping")


def compute_summary(data: RunData) -> Compute:
    res = data.search.get("resources") if isinstance(data.search.get("resources"), dict) else {}
    gpu = float(res.get("gpu", 0) or 0)
    cpu = float(res.get("cpu", 1) or 1)
    base = data.state.get("base") if isinstance(data.state.get("base"), dict) else {}
    on_gpu = gpu > 0 and base.get("device") != "cpu"  # a search started with --gpus 0 ran on CPUs
    t = data.trials
    epochs_used = int(t["epochs"].sum()) if len(t) else 0
    wall = float(t["wall_seconds"].fillna(0).sum()) if len(t) else 0.0
    ran = t[t["epochs"] > 0] if len(t) else t
    spe = (float(ran["wall_seconds"].fillna(0).sum()) / int(ran["epochs"].sum())
           if len(ran) and int(ran["epochs"].sum()) else float("nan"))
    planned = max(planned_trials(data) or 0, len(t))
    epochs_full = planned * data.budget if data.budget else None
    share = gpu if on_gpu else cpu
    searcher = data.search.get("searcher") if isinstance(data.search.get("searcher"), dict) else {}
    return Compute(unit="GPU-hours" if on_gpu else "CPU-hours", share=share, trials=len(t),
                   planned=planned, budget=data.budget, epochs_used=epochs_used,
                   epochs_full=epochs_full, wall_seconds=wall, seconds_per_epoch=spe,
                   hours_used=wall * share / 3600,
                   hours_full=(epochs_full * spe * share / 3600) if epochs_full else float("nan"),
                   finished=int(t["status"].isin(FINISHED).sum()) if len(t) else 0,
                   in_progress=data.source != "trials.parquet",
                   grid=searcher.get("kind", "grid") != "optuna")


def param_importances(data: RunData) -> tuple[dict[str, float] | None, str, list[str]]:
    """(importances or None, a note, the parameters left out because they took one value)."""
    t = data.trials
    ok = t[t["status"].isin(FINISHED) & t["best_val_acc"].notna()]
    params = [p for p in data.params if p in t and ok[p].notna().any()]
    if not params:
        return None, ("No searched parameter values are recorded for the finished trials of this "
                      "run." if len(ok) else "Parameter importance needs at least 2 finished trials "
                      "(completed or stopped early); this run has 0."), []
    ok = ok.dropna(subset=params)
    if len(ok) < 2:
        return None, (f"Parameter importance needs at least 2 finished trials (completed or stopped "
                      f"early); this run has {len(ok)}."), []
    varying = [p for p in params if ok[p].nunique() > 1]
    fixed = [p for p in params if p not in varying]
    if not varying:
        return None, ("Every searched parameter took a single value among the finished trials, so "
                      "there is nothing to attribute the accuracy differences to."), fixed
    if ok["best_val_acc"].nunique() < 2:
        return None, ("All finished trials reached the same best val accuracy, so no parameter "
                      "made a difference that can be measured."), fixed
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" lines
    dists = {p: _distribution(data.params.get(p, {}), list(ok[p])) for p in varying}
    try:
        result, how = _importances(optuna, ok, varying, dists, data.name)
    finally:
        optuna.logging.set_verbosity(verbosity)
    if not result:
        return None, f"Optuna could not compute importances for this run ({how or 'no result'}).", fixed
    note = (f"Optuna {how} importance evaluator on {len(ok)} finished trials (value: best val "
            f"accuracy; stopped-early trials count with the accuracy they reached before ASHA "
            f"stopped them).")
    if len(varying) == 1:
        note += f" Only {varying[0]} varied, so it carries all the importance by construction."
    return {k: float(v) for k, v in result.items()}, note, fixed


def _importances(optuna: Any, ok: Any, varying: list[str], dists: dict[str, Any], name: str
                 ) -> tuple[dict[str, float] | None, str]:
    """An in-memory study of the finished trials; fANOVA first, mean decrease in impurity second."""
    from optuna.distributions import CategoricalDistribution
    from optuna.importance import FanovaImportanceEvaluator, MeanDecreaseImpurityImportanceEvaluator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(direction="maximize", study_name=f"{name}-report")
        for _, row in ok.iterrows():
            values = {}
            for p in varying:
                v = row[p]
                if isinstance(dists[p], CategoricalDistribution):
                    v = v if v in dists[p].choices else str(v)
                values[p] = v
            study.add_trial(optuna.trial.create_trial(params=values, distributions=dists,
                                                      value=float(row["best_val_acc"])))
        result = None
        how = ""
        for label, evaluator in (("fANOVA", FanovaImportanceEvaluator(seed=0)),
                                 ("mean decrease in impurity",
                                  MeanDecreaseImpurityImportanceEvaluator(seed=0))):
            try:
                result = optuna.importance.get_param_importances(study, evaluator=evaluator,
                                                                 params=varying)
            except Exception as exc:  # noqa: BLE001 - try the next evaluator, then give a note
                how = f"{type(exc).__name__}: {exc}"
                continue
            if result and all(math.isfinite(v) for v in result.values()):
                how = label
                break
            result = None
    return result, how


def _distribution(spec: dict[str, Any], observed: list[Any]) -> Any:
    """An Optuna distribution from the space.yaml kind, widened to cover the observed values."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kind = spec.get("kind")
    nums = [v for v in observed if _is_num(v)]
    numeric = len(nums) == len(observed)
    if kind in ("uniform", "loguniform") and numeric:
        lo = min([float(spec.get("low", min(nums))), *map(float, nums)])
        hi = max([float(spec.get("high", max(nums))), *map(float, nums)])
        log = kind == "loguniform" and lo > 0
        return FloatDistribution(lo, hi, log=log)
    if kind == "int" and numeric and all(float(v).is_integer() for v in nums):
        lo = int(min([spec.get("low", min(nums)), *nums]))
        hi = int(max([spec.get("high", max(nums)), *nums]))
        return IntDistribution(lo, hi)
    if kind in ("grid", "choice") or not numeric:
        choices: list[Any] = []
        for v in [*(_norm(x) for x in (spec.get("values") or [])), *observed]:
            v = v if v is None or isinstance(v, (bool, int, float, str)) else str(v)
            if v not in choices:
                choices.append(v)
        return CategoricalDistribution(choices)
    if all(isinstance(v, int) for v in nums):
        return IntDistribution(int(min(nums)), int(max(nums)))
    return FloatDistribution(float(min(nums)), float(max(nums)))


# ------------------------------------------------------------------------------------------------
# Figures (matplotlib's object API on the Agg canvas: no pyplot, no global backend switch)


def _figure(w: float, h: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def _status_counts(t: Any) -> dict[str, int]:
    counts = t["status"].value_counts().to_dict() if len(t) else {}
    return {s: int(counts[s]) for s in [*STATUS_ORDER, *sorted(counts)] if s in counts}


def _short(p: str) -> str:
    return p.split(".")[-1] if p.startswith(("loss.", "optim.")) else p


def fig_learning_curves(data: RunData) -> Any:
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    h, t = data.history, data.trials
    if not len(h):
        return None
    h = h.assign(_div=(h["diverged"].fillna(0) > 0) if "diverged" in h else False)
    valid = h[~h["_div"] & h["val_acc"].notna()]  # a diverged epoch reports the worst score
    if not len(valid):
        return None
    status_of = dict(zip(t["trial_id"], t["status"]))
    counts = _status_counts(t)
    best = best_trial(data)
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
        ok = g[~div & g["val_acc"].notna()]
        ax.plot(ok["epoch"], ok["val_acc"], color=color, lw=1.3, alpha=alpha, marker="o", ms=3,
                zorder=2)
        shown.add(status)
        if status == "stopped_early" and len(ok):
            ep, acc = int(ok["epoch"].iloc[-1]), float(ok["val_acc"].iloc[-1])
            ax.plot([ep], [acc], marker="X", ms=10, color=color, mec="black", mew=0.7, ls="none",
                    zorder=4)
            stop_epochs[ep] = stop_epochs.get(ep, 0) + 1
        if status == "diverged" and div.any():
            ep = int(g.loc[div, "epoch"].iloc[0])
            acc = float(ok["val_acc"].iloc[-1]) if len(ok) else float(valid["val_acc"].min())
            ax.plot([ep], [acc], marker="v", ms=10, color=color, mec="black", mew=0.7, ls="none",
                    zorder=4)
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
        ax.plot(g["epoch"], g["val_acc"], color="black", lw=2.6, zorder=5)
        handles.append(Line2D([], [], color="black", lw=2.6,
                              label=f"best: trial {best['trial_id']} ({best['best_val_acc']:.4f})"))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    last = max(int(h["epoch"].max()), data.budget or 0)
    ax.set_xlim(0.7, last + 0.3)
    lo, hi = float(valid["val_acc"].min()), float(valid["val_acc"].max())
    pad = max(0.02, (hi - lo) * 0.08)
    ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad) if hi <= 1 else hi + pad)
    ax.grid(alpha=0.3)
    budget = f", budget {data.budget} epochs" if data.budget else ""
    ax.set_title(f"Learning curves of {n} trial{'s' if n != 1 else ''}{budget}", fontsize=13,
                 pad=20 if stop_epochs else 6)
    ax.legend(handles=handles, loc="lower right", fontsize=9, framealpha=0.9)
    return fig


def _axis_values(data: RunData, p: str, values: list[Any]) -> tuple[Callable[[Any], float],
                                                                     list[tuple[float, str]], bool]:
    """Map a parameter's values to [0, 1]; returns (map, ticks as (position, label), log)."""
    spec = data.params.get(p, {})
    kind = spec.get("kind")
    distinct = sorted({v for v in values if v is not None}, key=lambda v: (not _is_num(v), v if _is_num(v)
                                                                               else str(v)))
    numeric = all(_is_num(v) for v in distinct)
    if kind in ("grid", "choice") or not numeric or len(distinct) <= 1:
        declared = [_norm(v) for v in (spec.get("values") or [])]
        order = [v for v in declared if v in distinct] + [v for v in distinct if v not in declared]
        if numeric and order:
            order = sorted(order)
        if len(order) <= 1:
            return (lambda v: 0.5), [(0.5, _fmt(order[0]) if order else "-")], False
        pos = {v: i / (len(order) - 1) for i, v in enumerate(order)}
        return (lambda v: pos.get(v, float("nan"))), [(pos[v], _fmt(v)) for v in order], False
    lo, hi = float(min(distinct)), float(max(distinct))
    log = (kind == "loguniform" or (kind is None and lo > 0 and hi / lo >= 20)) and lo > 0
    f = math.log10 if log else float
    a, b = f(lo), f(hi)

    def to01(v: Any) -> float:
        return (f(float(v)) - a) / (b - a) if _is_num(v) else float("nan")

    integer = kind == "int" or all(isinstance(v, int) for v in distinct)
    ticks = []
    for k in range(5):
        v = 10 ** (a + (b - a) * k / 4) if log else lo + (hi - lo) * k / 4
        ticks.append((to01(round(v)) if integer else k / 4, str(round(v)) if integer else f"{v:.3g}"))
    return to01, ticks, log


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _finished_with_params(data: RunData) -> tuple[Any, list[str]]:
    t = data.trials
    params = [p for p in data.params if p in t and t[p].notna().any()]
    ok = t[t["status"].isin(FINISHED) & t["best_val_acc"].notna()]
    return ok, params


def fig_parallel(data: RunData) -> Any:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D

    ok, params = _finished_with_params(data)
    if not len(ok) or not params:
        return None
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    acc = ok["best_val_acc"].astype(float)
    lo, hi = float(acc.min()), float(acc.max())
    if hi - lo < 1e-9:
        lo, hi = lo - 0.005, hi + 0.005
    norm = Normalize(lo, hi)
    maps = [_axis_values(data, p, list(ok[p])) for p in params]
    n_axes = len(params) + 1
    fig = _figure(max(8.0, 2.3 * n_axes + 1.5), 5.6)
    ax = fig.add_subplot()
    best = best_trial(data)
    order = ok.assign(_a=acc).sort_values("_a")  # best lines drawn last, on top
    for _, row in order.iterrows():
        ys = [m[0](row[p]) for m, p in zip(maps, params)] + [norm(float(row["best_val_acc"]))]
        is_best = best is not None and row["trial_id"] == best["trial_id"]
        ax.plot(range(n_axes), ys, color=cmap(norm(float(row["best_val_acc"]))),
                lw=3.2 if is_best else 1.6, alpha=1.0 if is_best else 0.8,
                ls="-" if row["status"] == "completed" else "--", zorder=3 if is_best else 2,
                marker="o", ms=4)
    for i in range(n_axes):
        ax.axvline(i, color="#333333", lw=1.0, zorder=1)
    for i, (m, p) in enumerate(zip(maps, params)):
        for pos, label in m[1]:
            ax.text(i - 0.05, pos, label, ha="right", va="center", fontsize=9,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="#bbbbbb", lw=0.5), zorder=5)
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        ax.text(n_axes - 1 + 0.04, k / 4, f"{v:.3f}", ha="left", va="center", fontsize=9)
    labels = [f"{p}{' (log)' if m[2] else ''}" for m, p in zip(maps, params)] + ["best val acc"]
    ax.set_xticks(range(n_axes), labels, fontsize=10)
    ax.set_xlim(-0.6, n_axes - 1 + 0.45)
    ax.set_ylim(-0.06, 1.06)
    ax.set_yticks([])
    for s in ("left", "right", "top"):
        ax.spines[s].set_visible(False)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="best validation accuracy",
                 pad=0.02, fraction=0.03)
    present = set(ok["status"])
    handles = [Line2D([], [], color="#444444", lw=1.6, ls=ls, label=label)
               for s, ls, label in (("completed", "-", "completed"),
                                    ("stopped_early", "--", "stopped early by ASHA")) if s in present]
    if best is not None:
        handles.append(Line2D([], [], color="#444444", lw=3.2, label=f"best: trial {best['trial_id']}"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=3, fontsize=9,
              frameon=False)
    ax.set_title(f"Searched values and best val accuracy ({len(ok)} finished trial"
                 f"{'s' if len(ok) != 1 else ''})", fontsize=13)
    return fig


def fig_scatter(data: RunData) -> Any:
    import numpy as np
    from matplotlib.lines import Line2D

    ok, params = _finished_with_params(data)
    if not len(ok) or not params:
        return None
    cols = min(3, len(params))
    rows = math.ceil(len(params) / cols)
    fig = _figure(max(7.0, 4.3 * cols + 0.4), 3.7 * rows + 0.8)
    axes = fig.subplots(rows, cols, squeeze=False)
    best = best_trial(data)
    rng = np.random.default_rng(0)
    for i, p in enumerate(params):
        ax = axes[i // cols][i % cols]
        sub = ok[ok[p].notna()]
        to01, ticks, log = _axis_values(data, p, list(sub[p]))
        spec_kind = data.params.get(p, {}).get("kind")
        ordinal = spec_kind in ("grid", "choice") or not all(_is_num(v) for v in sub[p]) \
            or sub[p].nunique() <= 1
        if ordinal:
            x = np.array([to01(v) for v in sub[p]], dtype=float)
            x = x + rng.uniform(-0.035, 0.035, len(x))  # trials at the same grid value stay visible
            ax.set_xticks([pos for pos, _ in ticks], [lab for _, lab in ticks])
            ax.set_xlim(-0.15, 1.15)
        else:
            x = np.array([float(v) for v in sub[p]])
            if log:
                from matplotlib.ticker import FuncFormatter

                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.margins(x=0.08)
        y = sub["best_val_acc"].to_numpy(dtype=float)
        for status, marker in (("completed", "o"), ("stopped_early", "^")):
            m = (sub["status"] == status).to_numpy()
            if m.any():
                ax.scatter(x[m], y[m], s=46, marker=marker, color=STATUS_COLORS[status], alpha=0.85,
                           edgecolors="black", linewidths=0.5, zorder=3)
        if best is not None:
            m = (sub["trial_id"] == best["trial_id"]).to_numpy()
            if m.any():
                ax.scatter(x[m], y[m], s=260, marker="*", color="gold", edgecolors="black",
                           linewidths=0.8, zorder=4)
        ax.margins(y=0.12)  # room for the best trial's star
        ax.set_xlabel(p + (" (log scale)" if log and not ordinal else ""), fontsize=10)
        ax.set_ylabel("best validation accuracy", fontsize=10)
        ax.set_title(f"{_short(p)} vs best val acc", fontsize=11)
        ax.grid(alpha=0.3)
    for j in range(len(params), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    present = set(ok["status"])
    handles = [Line2D([], [], marker=m, ls="none", color=STATUS_COLORS[s], mec="black", label=label)
               for s, m, label in (("completed", "o", "completed"),
                                   ("stopped_early", "^", "stopped early (accuracy at the stop)"))
               if s in present]
    if best is not None:
        handles.append(Line2D([], [], marker="*", ls="none", ms=14, color="gold", mec="black",
                              label=f"best: trial {best['trial_id']}"))
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle("Each searched parameter against best validation accuracy", fontsize=13)
    return fig


def fig_importance(imp: dict[str, float], how: str) -> Any:
    items = sorted(imp.items(), key=lambda kv: kv[1])
    fig = _figure(8.5, max(2.8, 1.3 + 0.6 * len(items)))
    ax = fig.add_subplot()
    names = [k for k, _ in items]
    vals = [v for _, v in items]
    bars = ax.barh(names, vals, color="#4e79a7", edgecolor="black", linewidth=0.5, height=0.6)
    for b, v in zip(bars, vals):
        ax.text(min(v, 1.0) + 0.01, b.get_y() + b.get_height() / 2, f"{v:.2f}", va="center", fontsize=10)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("share of the variance of best val accuracy explained (sums to 1)")
    ax.set_title(f"Which parameters mattered ({how})", fontsize=13)
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(axis="y", labelsize=10)
    return fig


def fig_compute(c: Compute) -> Any:
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
    return fig


# ------------------------------------------------------------------------------------------------
# The page


CSS = """
body { font-family: -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
img { max-width: 100%; height: auto; border: 1px solid #e3e3e3; margin: 0.4em 0; }
.note { background: #fff8e1; border-left: 4px solid #f2b01e; padding: 0.5em 0.8em; margin: 0.6em 0; }
.meta td { text-align: left; border: none; padding: 0.1em 0.8em 0.1em 0; }
.muted { color: #666; font-size: 0.9em; } code { background: #f5f5f5; padding: 0 0.2em; }
.s-completed { color: #1a9641; } .s-stopped_early { color: #b35f00; }
.s-errored, .s-diverged { color: #c62828; } .s-running { color: #4e79a7; }
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return _e(v)


def _table(headers: list[str], rows: list[list[str]], left: set[int] | None = None) -> str:
    left = left or set()
    head = "".join(f"<th{' class=l' if i in left else ''}>{h}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td{' class=l' if i in left else ''}>{c}</td>"
                                     for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(png: bytes, alt: str, fname: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}" title="{_e(fname)}">'
            f'<figcaption class="muted">{_e(fname)}</figcaption></figure>')


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _hours(h: float) -> str:
    if h != h:
        return "-"
    return f"{h:.3g} h" if h >= 0.1 else f"{h:.2g} h ({h * 60:.3g} min)"


def _acc(v: Any) -> str:
    return f"{float(v):.4f}" if v is not None and v == v else "-"


def _top_k_section(data: RunData) -> str:
    from .export import rank_trials

    t = data.trials
    export = data.space.get("export") if isinstance(data.space.get("export"), dict) else {}
    top = int(export.get("top_k", 3) or 3)
    ok = t[t["status"].isin(FINISHED) & t["best_val_acc"].notna()]
    if not len(ok):
        return _note("No trial finished: there is no best configuration and nothing was exported.")
    ranked = rank_trials(ok).head(top)
    params = [p for p in data.params if p in t]
    rows = []
    for rank, (_, r) in enumerate(ranked.iterrows(), start=1):
        path = data.run_dir / "best" / f"rank{rank}.yaml"
        link = "not exported"
        if path.exists() and data.source == "trials.parquet":
            try:
                same = f"# trial {r['trial_id']} " in path.read_text(errors="replace")[:2000]
            except OSError:
                same = False
            link = (f'<a href="../best/rank{rank}.yaml">best/rank{rank}.yaml</a>'
                    + ("" if same else " <span class=muted>(exported from an earlier ranking)</span>"))
        rows.append([str(rank), _e(r["trial_id"]),
                     f'<span class="s-{_e(r["status"])}">{_e(r["status"])}</span>',
                     str(int(r["epochs"])), _acc(r["best_val_acc"]), _acc(r["last_val_acc"]),
                     *(_cell(r[p]) for p in params), link])
    out = _table(["rank", "trial", "status", "epochs", "best val acc", "last val acc",
                  *map(_e, params), "config for the full runs"], rows, left={1, 2, len(params) + 6})
    out += ('<p class="muted">Ranking as in the export: trials that trained the whole budget first, '
            'then early-stopped ones (their accuracy comes from fewer epochs). Run a config with '
            '<code>tfkd-search train --config best/rank1.yaml --seeds 3</code>.</p>')
    if not (data.run_dir / "best").exists() and data.source == "trials.parquet":
        out += _note(f"No exported configs in best/: run 'tfkd-search export {data.run_dir}'.")
    return out


def _compute_section(c: Compute) -> str:
    full = c.epochs_full
    rows = [["trials", str(c.trials), str(c.planned)],
            ["trial-epochs", str(c.epochs_used), str(full) if full else "-"],
            [f"{c.unit} ({c.share:g} {c.unit.split('-')[0]} per trial)", _hours(c.hours_used),
             _hours(c.hours_full)]]
    out = _table(["", "this search" + (" so far" if c.in_progress else ""), c.full_label], rows,
                 left={0})
    known = c.seconds_per_epoch == c.seconds_per_epoch
    per = c.unit.split("-")[0]
    out += (f'<p class="muted">Spent: the sum over trials of wall-clock seconds x {c.share:g} {per} '
            f'per trial / 3600 (trial wall time {c.wall_seconds:.0f} s). Without early stopping: '
            f'{c.planned} trials x {c.budget or "?"} epochs'
            + (f', at this search\'s mean {c.seconds_per_epoch:.3g} s per trial-epoch (wall clock, '
               f'start-up included).' if known else '; no trial finished an epoch, so its time cannot '
                                                     'be estimated.')
            + (f' Early stopping saved {c.saved:.0%} of the trial-epochs.' if c.saved == c.saved else '')
            + '</p>')
    return out


def _trials_section(data: RunData) -> str:
    t = data.trials
    if not len(t):
        return _note("No trials recorded.")
    params = [p for p in data.params if p in t]
    order = {s: i for i, s in enumerate(STATUS_ORDER)}
    t = t.assign(_o=t["status"].map(lambda s: order.get(s, 99)), _b=t["best_val_acc"].fillna(-1))
    t = t.sort_values(["_o", "_b"], ascending=[True, False])
    rows = [[_e(r["trial_id"]), f'<span class="s-{_e(r["status"])}">{_e(r["status"])}</span>',
             str(int(r["epochs"])), _acc(r["best_val_acc"]), _acc(r["last_val_acc"]),
             f"{r['wall_seconds']:.1f}" if r["wall_seconds"] == r["wall_seconds"] else "-",
             *(_cell(r[p]) for p in params),
             _e(r["error"]) if isinstance(r["error"], str) and r["error"] else ""]
            for _, r in t.iterrows()]
    return _table(["trial", "status", "epochs", "best val acc", "last val acc", "wall s",
                   *map(_e, params), "error"], rows, left={0, 1, len(params) + 6})


def build_report(data: RunData) -> tuple[str, dict[str, bytes]]:
    """The HTML page and the PNG figures (file name -> bytes)."""
    t = data.trials
    pngs: dict[str, bytes] = {}

    def figure(fname: str, fig: Any, alt: str) -> str:
        pngs[fname] = _png(fig)
        return _img(pngs[fname], alt, fname)

    counts = _status_counts(t)
    best = best_trial(data)
    s = data.search
    sched = s.get("scheduler") if isinstance(s.get("scheduler"), dict) else {}
    searcher = s.get("searcher") if isinstance(s.get("searcher"), dict) else {}
    sections: list[str] = []

    # summary
    meta = [("run folder", f"<code>{_e(data.run_dir.resolve())}</code>"),
            ("trials", _e(", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items()) or "none")),
            ("budget", f"{data.budget} epochs per trial" if data.budget else "unknown"),
            ("searcher", _e(searcher.get("kind", "?")) + (f" (seed {_e(searcher['seed'])})"
                                                          if "seed" in searcher else "")),
            ("scheduler", _e(sched.get("kind", "?")) + (
                f", grace period {_e(sched.get('grace_period', 1))}, reduction factor "
                f"{_e(sched.get('reduction_factor', 3))}" if sched.get("kind", "asha") == "asha" and sched
                else "")),
            ("parameters", _e(", ".join(f"{p} ({spec.get('kind', '?')})" for p, spec in data.params.items())
                              or "none recorded"))]
    if best is not None:
        vals = ", ".join(f"{p}={_fmt(best[p])}" for p in data.params if p in t)
        meta.insert(1, ("best trial", f"<b>{_e(best['trial_id'])}</b>: best val acc "
                                      f"<b>{float(best['best_val_acc']):.4f}</b> ({_e(best['status'])}, "
                                      f"{int(best['epochs'])} epochs); {_e(vals)}"))
    uri = data.state.get("mlflow_uri")
    if uri:
        where = (f'<a href="{_e(uri)}">{_e(uri)}</a>' if str(uri).startswith(("http://", "https://"))
                 else f"<code>{_e(uri)}</code>")
        browse = ("" if str(uri).startswith(("http://", "https://"))
                  else f"; browse with <code>mlflow ui --backend-store-uri {_e(uri)}</code>")
        meta.append(("MLflow", f"{where}, experiment {_e(data.name)}, parent run "
                               f"<code>{_e(data.state.get('parent_run_id', '?'))}</code> (the figures "
                               f"are its artifacts under report/){browse}"))
    head = "<table class=meta>" + "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in meta) \
        + "</table>"
    head += "".join(_note(n) for n in data.notes)
    errored = t[t["status"] == "errored"] if len(t) else t
    if len(t) and len(errored) == len(t):
        head += _note(f"Every trial failed ({len(t)} errored), so there are no curves or best values; "
                      f"the errors are listed under 'All trials'.")

    sections.append("<h2>Best configurations</h2>" + _top_k_section(data))
    c = compute_summary(data)
    body = _compute_section(c)
    fig = fig_compute(c)
    if fig is not None:
        body += figure("compute.png", fig, "compute spent against a full grid")
    sections.append("<h2>Compute</h2>" + body)

    fig = fig_learning_curves(data)
    body = (figure("learning_curves.png", fig, "validation accuracy per epoch of every trial")
            if fig is not None else _note("No trial finished an epoch, so there are no learning curves."))
    sections.append("<h2>Learning curves</h2>" + body)

    body = ""
    ok, params = _finished_with_params(data)
    fig = fig_parallel(data)
    if fig is not None:
        body += figure("parallel_coordinates.png", fig, "parallel coordinates of the searched values")
        if len(ok) == 1:
            body += _note("Only one trial finished: the plots show a single point per parameter.")
    fig = fig_scatter(data)
    if fig is not None:
        body += figure("param_scatter.png", fig, "each searched parameter against best val accuracy")
    if not body:
        body = _note("No finished trial (completed or stopped early) with recorded parameter values: "
                     "nothing to relate the parameters to.")
    sections.append("<h2>Parameters and accuracy</h2>" + body)

    imp, note, fixed = param_importances(data)
    body = ""
    if imp is not None:
        how = note.split(" importance evaluator")[0].removeprefix("Optuna ")
        body += figure("importance.png", fig_importance(imp, how), "parameter importances")
        body += _table(["parameter", "importance"], [[_e(k), f"{v:.3f}"] for k, v in imp.items()],
                       left={0})
        body += f'<p class="muted">{_e(note)}</p>'
    else:
        body += _note(note)
    if fixed:
        body += _note("Left out, one value only among the finished trials: " + ", ".join(fixed) + ".")
    sections.append("<h2>Which parameters mattered</h2>" + body)

    sections.append("<h2>All trials</h2>" + _trials_section(data))
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    page = (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<title>tfkd-search report: {_e(data.name)}</title><style>{CSS}</style></head><body>"
            f"<h1>tfkd-search report: {_e(data.name)}</h1>"
            f"<p class=muted>written {when} from {_e(data.source)}; figures also in this folder as "
            f"PNG files</p>{head}{''.join(sections)}</body></html>\n")
    return page, pngs


# ------------------------------------------------------------------------------------------------
# Entry points


def _stderr_warn(msg: str) -> None:
    print(f"tfkd-search: warning: {msg}", file=sys.stderr, flush=True)


def write_report(run_dir: str | os.PathLike[str], *, log_mlflow: bool = True,
                 warn: Warn | None = None) -> Path:
    """Write RUN_DIR/report/index.html and its PNGs; returns the page's path.

    With `log_mlflow` the figures and the page are also logged as artifacts (folder `report`) of the
    search's MLflow parent run; an unreachable server or a missing run only gives a warning.
    """
    from .io import atomic_write_bytes, atomic_write_text

    warn = warn or _stderr_warn
    data = load_run(run_dir)
    page, pngs = build_report(data)
    out = data.run_dir / REPORT_DIR
    try:
        out.mkdir(exist_ok=True)
        for old in out.glob("*.png"):  # figures of an earlier report that this one has no data for
            if old.name not in pngs:
                old.unlink()
        for fname, png in pngs.items():
            atomic_write_bytes(out / fname, png)
        atomic_write_text(out / INDEX, page)
        mode = 0o666 & ~_umask()  # atomic writes make 0600 files; a report is for sharing
        for f in [*pngs, INDEX]:
            os.chmod(out / f, mode)
    except OSError as exc:
        raise ConfigError(f"report: cannot write {out} ({exc.strerror or exc}); the run folder must "
                          f"be writable") from None
    if log_mlflow:
        log_report(data, [out / f for f in pngs] + [out / INDEX], warn)
    return out / INDEX


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def report_files(index: Path) -> list[Path]:
    """The files of a written report: its PNGs, then the page."""
    return [*sorted(index.parent.glob("*.png")), index]


@contextmanager
def _quick_http() -> Iterator[None]:
    """Few retries and a short timeout: an on-demand report must not hang on a dead server."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
    saved = {k: os.environ.get(k) for k in keys}
    for k, v in keys.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


def log_report(data: RunData, files: list[Path], warn: Warn) -> bool:
    """Log the report files to the parent run recorded in search.json; False (with a warning) if not."""
    uri, parent = data.state.get("mlflow_uri"), data.state.get("parent_run_id")
    if not uri or not parent:
        warn(f"{data.run_dir / 'search.json'} names no MLflow parent run; the report was not logged "
             f"to MLflow")
        return False
    if str(uri).startswith("sqlite:///"):
        db = Path(str(uri)[len("sqlite:///"):])
        if not db.exists():  # MLflow would create an empty database there
            warn(f"MLflow database {db} does not exist (moved?); the report was not logged to MLflow")
            return False
    try:
        from .tracking import _client, check_reachable

        check_reachable(str(uri))
        with _quick_http():
            client = _client(str(uri))
            client.get_run(parent)
            for f in files:
                client.log_artifact(parent, str(f), REPORT_DIR)
    except Exception as exc:  # noqa: BLE001 - the report is written; MLflow is a bonus
        msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        warn(f"could not log the report to MLflow at {uri} (parent run {parent}): {msg}")
        return False
    return True


__all__ = ["write_report", "load_run", "build_report", "log_report", "report_files", "RunData",
           "param_importances", "compute_summary"]
