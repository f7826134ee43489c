"""Reading a run folder for the report, through `runfolder.RunFolder` and the typed space.

A finished search is read from `trials.parquet` / `history.parquet`; a search still running (or whose
driver died before it wrote them) from Ray's per-trial `trial_*/result.json`, turned into the same
tables with `runfolder.TrialRecord.from_reports(..., finished=False)`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..runfolder import (FINISHED, HISTORY_COLUMNS, Ranking, RunFolder, normalize_trials,
                         records_from_results, tables)


@dataclass(frozen=True)
class Param:
    """One searched parameter as the report needs it: its kind and declared values or bounds."""

    name: str
    kind: str | None = None          # grid, choice, uniform, loguniform, int; None: unknown
    values: tuple[Any, ...] = ()     # grid / choice
    low: float | None = None         # uniform / loguniform / int
    high: float | None = None

    @classmethod
    def of(cls, name: str, spec: Any) -> Param:
        """From a typed `spaces` distribution or its plain space.yaml dict."""
        get = spec.get if isinstance(spec, dict) else (lambda k, d=None: getattr(spec, k, d))
        values = get("values")
        low, high = get("low"), get("high")
        return cls(name=name, kind=get("kind"),
                   values=tuple(norm(v) for v in values) if isinstance(values, (list, tuple)) else (),
                   low=float(low) if is_num(low) else None, high=float(high) if is_num(high) else None)

    def describe(self) -> str:
        return self.kind or "?"


@dataclass
class RunData:
    run_dir: Path
    name: str
    state: dict[str, Any]                 # search.json ({} when missing)
    space: Any                            # spaces.Space, or None when space.yaml is missing/invalid
    space_raw: dict[str, Any]             # space.yaml as plain YAML ({} when missing)
    ranking: Ranking                      # the space's metric, mode and window
    trials: Any                           # DataFrame in runfolder's schema, one row per trial
    history: Any                          # DataFrame, one row per trial and epoch
    params: dict[str, Param]              # searched parameter -> kind and range
    budget: int | None                    # epochs a trial may train (ASHA's max_t)
    source: str                           # "trials.parquet" or "result.json"
    notes: list[str] = field(default_factory=list)

    # -- the search block, typed when the space validates, else from the raw file with defaults
    def _block(self, key: str) -> dict[str, Any]:
        if self.space is not None:
            return getattr(self.space.spec.search, key).model_dump()
        s = self.space_raw.get("search")
        b = s.get(key) if isinstance(s, dict) else None
        return b if isinstance(b, dict) else {}

    @property
    def searcher(self) -> dict[str, Any]:
        return self._block("searcher")

    @property
    def scheduler(self) -> dict[str, Any]:
        return self._block("scheduler")

    @property
    def resources(self) -> dict[str, Any]:
        return self._block("resources")

    @property
    def top_k(self) -> int:
        if self.space is not None:
            return self.space.spec.export.top_k
        e = self.space_raw.get("export")
        k = e.get("top_k") if isinstance(e, dict) else None
        return int(k) if isinstance(k, int) and k > 0 else 3

    @property
    def planned(self) -> int | None:
        """Trials the search plans (Space.num_trials()); None when the space did not validate."""
        return self.space.num_trials() if self.space is not None else None

    @property
    def in_progress(self) -> bool:
        return self.source != "trials.parquet"

    @property
    def metric(self) -> str:
        return self.ranking.metric

    def finished(self) -> Any:
        """Finished trials (completed or stopped early) that have a score."""
        t = self.trials
        return t[t["status"].isin(FINISHED) & t["score"].notna()] if len(t) else t

    def best(self) -> Any:
        """The rank-1 row by the run's ranking rule (the row the export and MLflow use), or None."""
        return self.ranking.best(self.trials) if len(self.trials) else None

    def ranked(self) -> Any:
        return self.ranking.rank(self.trials) if len(self.trials) else self.trials


def norm(v: Any) -> Any:
    """A parameter value as a plain Python value (lists and dicts as JSON text, NaN as None)."""
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


def is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _first_line(exc: BaseException) -> str:
    lines = [x.strip() for x in str(exc).strip().splitlines() if x.strip()]
    return "; ".join(lines[:2])[:300] or type(exc).__name__


def _storage_hint(run_dir: Path) -> str:
    try:
        runs = sorted(d.name for d in run_dir.iterdir() if d.is_dir() and RunFolder(d).exists())
    except OSError:
        runs = []
    if runs:
        shown = ", ".join(str(run_dir / r) for r in runs[:5])
        return f"; it holds the run folders {shown}{' ...' if len(runs) > 5 else ''}"
    return "; pass the folder <storage>/<name> of a search, e.g. tfkd_runs/quickstart"


def _read_space(folder: RunFolder, notes: list[str]) -> tuple[Any, dict[str, Any]]:
    """(typed space or None, raw space.yaml); a space that no longer validates is read raw."""
    if not folder.space_path.exists():
        return None, {}
    try:
        raw = folder.read_space_raw()
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file: the report goes on without it
        notes.append(f"space.yaml could not be read ({_first_line(exc)}); parameter kinds are "
                     f"inferred from the values")
        return None, {}
    try:
        return folder.space(), raw
    except Exception as exc:  # noqa: BLE001 - e.g. a space of an older version
        notes.append(f"space.yaml no longer validates ({_first_line(exc)}); the report reads it as "
                     f"plain YAML: parameter kinds come from the file, the planned number of trials "
                     f"is unknown")
        return None, raw


def _budget(space: Any, state: dict[str, Any], raw: dict[str, Any]) -> int | None:
    if space is not None:
        return int(space.budget)
    for base in (state.get("base"), raw.get("base")):
        if not isinstance(base, dict):
            continue
        try:
            from ..config import build_run_config

            return int(build_run_config(base).schedule.trained_epochs)
        except Exception:  # noqa: BLE001 - a base config of another version: read it raw
            sched = base.get("schedule") or {}
            value = sched.get("budget") or sched.get("epochs")
            if isinstance(value, int) and value > 0:
                return value
    return None


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
    folder = RunFolder(run_dir)
    trial_dirs = sorted(d for d in run_dir.glob("trial_*") if d.is_dir())
    has_results = any((d / "result.json").exists() or (d / "params.json").exists() for d in trial_dirs)
    if not (folder.exists() or has_results):
        raise ConfigError(f"report: {run_dir} is not a tfkd-search run folder (no search.json, "
                          f"trials.parquet or trial_*/result.json){_storage_hint(run_dir)}")
    notes: list[str] = []
    state = folder.read_state()
    if not state and folder.state_path.exists():
        notes.append("search.json could not be read; the report shows what the other files hold")
    space, raw = _read_space(folder, notes)
    try:
        ranking = Ranking.of_space(space.spec.search.scheduler) if space is not None else folder.ranking()
    except Exception:  # noqa: BLE001 - an unreadable space: the default rule
        ranking = Ranking()
    name = str(state.get("name") or raw.get("name") or run_dir.name)
    if space is not None:
        params = {k: Param.of(k, d) for k, d in space.params.items()}
    else:
        s = raw.get("search")
        rp = s.get("params") if isinstance(s, dict) else None
        params = {str(k): Param.of(str(k), v if isinstance(v, dict) else {})
                  for k, v in (rp if isinstance(rp, dict) else {}).items()}
    budget = _budget(space, state, raw)

    trials = history = None
    source = "trials.parquet"
    if folder.trials_path.exists():
        try:
            trials = folder.read_trials()
        except Exception as exc:  # noqa: BLE001 - a torn or foreign file: fall back to Ray's files
            notes.append(f"trials.parquet could not be read ({type(exc).__name__}: {exc}); "
                         f"read Ray's per-trial result.json files instead")
    if trials is not None:
        mtime = folder.trials_path.stat().st_mtime
        newer = [d.name for d in trial_dirs if (d / "result.json").exists()
                 and (d / "result.json").stat().st_mtime > mtime + 5]
        if newer:
            notes.append(f"{len(newer)} trial(s) reported after trials.parquet was written (a resumed "
                         f"search still running?); this report shows trials.parquet, the state at the "
                         f"end of the last finished run of the search")
        if folder.history_path.exists():
            try:
                history = folder.read_history()
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
        records = records_from_results(trial_dirs, budget, ranking)
        names = list(params)
        for r in records:
            names += [k for k in r.params if "." in k and k not in names]
        trials, history = tables(records, names)
        trials = normalize_trials(trials)
    for col in [c for c in trials.columns if "." in c]:
        params.setdefault(col, Param(col))
    for p in params:
        trials[p] = [norm(v) for v in trials[p]] if p in trials else None
    if history is None or not len(history) or "epoch" not in history:
        history = pd.DataFrame(columns=["trial_id", *HISTORY_COLUMNS])
    history = history.copy()
    for col in HISTORY_COLUMNS:
        if col not in history:
            history[col] = float("nan")
    history["trial_id"] = history["trial_id"].astype(str)
    history["diverged"] = pd.to_numeric(history["diverged"], errors="coerce").fillna(0.0)
    if budget is None and len(trials):
        budget = int(trials["epochs"].max()) or None
    return RunData(run_dir=run_dir, name=name, state=state, space=space, space_raw=raw,
                   ranking=ranking, trials=trials, history=history, params=params, budget=budget,
                   source=source, notes=notes)
