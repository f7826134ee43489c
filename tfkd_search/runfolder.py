"""The run folder of a search, as one typed model: trial records, their status, the tables' schema,
reading and writing the folder, and the one ranking rule everything uses.

In the spirit of Optuna's `FrozenTrial` / `TrialState`: the search driver turns Ray's results into
`TrialRecord`s, this module writes them as `trials.parquet` / `history.parquet`, and the export, the
report, the MLflow summary and the CLI table all read them back through `RunFolder` and rank them
with `Ranking`. Nothing here imports Ray or MLflow.

The ranking rule (documented in the README, "How the winner is chosen"):

1. only trials that finished (completed, or stopped early by ASHA) are ranked;
2. trials that trained more epochs rank first: a trial ASHA stopped at a rung was only compared with
   the trials at that rung, never with trials that went further;
3. then by the score: the mean of the space's metric (`val_acc` or `val_loss`) over the trial's last
   `window` epochs, higher first for mode max, lower first for mode min;
4. ties go to the trial the searcher proposed first (the lower trial index).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .io import atomic_write_json, atomic_write_parquet, atomic_write_text

STATE_FILE = "search.json"
SPACE_FILE = "space.yaml"
TRIALS_FILE = "trials.parquet"
HISTORY_FILE = "history.parquet"
BEST_DIR = "best"
FINALISTS_DIR = "finalists"            # Ray Tune's experiment of the finalists stage
FINALISTS_FILE = "finalists.parquet"   # one row per finalist or baseline run (config x fresh seed)


class TrialStatus(str, Enum):
    COMPLETED = "completed"          # trained the whole budget
    STOPPED_EARLY = "stopped_early"  # stopped by the scheduler at a rung
    DIVERGED = "diverged"            # the training loss became NaN/inf
    ERRORED = "errored"              # raised (after Ray's retries)
    RUNNING = "running"              # seen only while a search is in progress (report)
    PENDING = "pending"              # seen only while a search is in progress (report)

    def __str__(self) -> str:
        return self.value


FINISHED = (TrialStatus.COMPLETED.value, TrialStatus.STOPPED_EARLY.value)
STATUSES = tuple(s.value for s in TrialStatus)

# Metrics a space may rank by, with the direction that is better.
METRICS: dict[str, str] = {"val_acc": "max", "val_loss": "min"}

# One row per trial and epoch (history.parquet), as the trainer reports them.
HISTORY_COLUMNS = ("epoch", "val_acc", "val_loss", "train_loss", "train_ce", "train_kl", "lr",
                   "images_per_s", "epoch_seconds", "diverged")
# One row per trial (trials.parquet), then one column per searched parameter (its config path).
TRIAL_COLUMNS = ("trial_id", "trial_index", "status", "epochs", "score", "best_val_acc",
                 "last_val_acc", "wall_seconds", "error")
# One row per run of the finalists stage (finalists.parquet): `name` is finalist<k> (k: its rank in the
# search) or a baseline (ce, lsr); then one column per searched parameter (empty for baselines).
FINALIST_COLUMNS = ("name", "role", "search_rank", "seed", "trial_id", "status", "epochs", "score",
                    "best_val_acc", "last_val_acc", "wall_seconds", "error", "val_correct")
# The result key of a trial's last report that holds its per-image validation results
# (stats.pack_correct): the finalists' intervals hold the validation split's sampling noise with them.
VAL_CORRECT = "val_correct"


def trial_index(trial_id: str) -> int:
    """The order in which the searcher proposed the trial: Ray names trials PREFIX_00042."""
    tail = str(trial_id).rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def trial_status(last: Mapping[str, Any], error: Any, budget: int) -> TrialStatus:
    """Status of a trial that ended, from its last report."""
    if error is not None:
        return TrialStatus.ERRORED
    if float(last.get("diverged", 0.0) or 0.0) > 0:
        return TrialStatus.DIVERGED
    if int(last.get("epoch", 0) or 0) >= budget:
        return TrialStatus.COMPLETED
    return TrialStatus.STOPPED_EARLY


def windowed(values: Sequence[float], window: int) -> float:
    """Mean of the last `window` finite values (NaN when there are none): the rung and ranking
    metric, less noisy than one epoch's accuracy."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    tail = vals[-max(1, window):]
    return sum(tail) / len(tail) if tail else float("nan")


@dataclass(frozen=True)
class Ranking:
    """The one ranking rule (see the module docstring): metric, direction and smoothing window."""

    metric: str = "val_acc"
    mode: str = "max"
    window: int = 1

    @classmethod
    def of_space(cls, scheduler: Any) -> Ranking:
        """From a space's scheduler block (typed `spaces.Scheduler` or its plain dict)."""
        get = scheduler.get if isinstance(scheduler, Mapping) else (
            lambda k, d=None: getattr(scheduler, k, d))
        return cls(metric=str(get("metric", "val_acc") or "val_acc"),
                   mode=str(get("mode", "max") or "max"), window=int(get("window", 1) or 1))

    def score(self, history: Any) -> float:
        """The score of one trial from its history (a DataFrame with `epoch` and the metric)."""
        if history is None or not len(history) or self.metric not in history:
            return float("nan")
        h = history
        if "diverged" in h:
            h = h[h["diverged"].fillna(0) == 0]
        return windowed(list(h.sort_values("epoch")[self.metric]), self.window)

    def rank(self, trials: Any) -> Any:
        """Finished trials with a score, best first (a copy; other trials are left out)."""
        t = trials
        ok = t[t["status"].isin(FINISHED) & t["score"].notna()].copy()
        ok["_index"] = ok["trial_index"] if "trial_index" in ok else range(len(ok))
        ok = ok.sort_values(["epochs", "score", "_index"],
                            ascending=[False, self.mode == "min", True], kind="mergesort")
        return ok.drop(columns="_index")

    def best(self, trials: Any) -> Any:
        """The rank-1 row, or None when no trial finished."""
        ranked = self.rank(trials) if len(trials) else trials
        return ranked.iloc[0] if len(ranked) else None

    def describe(self) -> str:
        smooth = f"mean {self.metric} over the last {self.window} epochs" if self.window > 1 \
            else f"last-epoch {self.metric}"
        return (f"{smooth}, {'higher' if self.mode == 'max' else 'lower'} is better; trials that "
                f"trained more epochs first; ties to the lower trial index")


@dataclass
class TrialRecord:
    """One trial as the run folder keeps it."""

    trial_id: str
    status: TrialStatus
    params: dict[str, Any]
    history: Any  # DataFrame with HISTORY_COLUMNS (may be empty)
    wall_seconds: float = 0.0
    error: str | None = None
    score: float = float("nan")
    index: int = field(default=-1)
    val_correct: str | None = None  # the last report's per-image validation results

    def __post_init__(self) -> None:
        if self.index < 0:
            self.index = trial_index(self.trial_id)

    @classmethod
    def from_reports(cls, trial_id: str, reports: Iterable[Mapping[str, Any]], params: dict[str, Any],
                     *, budget: int, ranking: Ranking, error: str | None = None,
                     finished: bool = True) -> TrialRecord:
        """Build a record from a trial's epoch reports (Ray result dicts or result.json lines).

        `finished=False`: the trial is still running (or has not reported yet)."""
        reports = list(reports)
        hist = history_frame(reports)
        last = dict(reports[-1]) if reports else {}
        if error is not None:
            status = TrialStatus.ERRORED
        elif not finished:
            diverged = float(last.get("diverged", 0.0) or 0.0) > 0
            status = (TrialStatus.DIVERGED if diverged else
                      TrialStatus.RUNNING if len(hist) else TrialStatus.PENDING)
        else:
            status = trial_status(last, None, budget)
        correct = next((r[VAL_CORRECT] for r in reversed(reports)
                        if isinstance(r.get(VAL_CORRECT), str) and r[VAL_CORRECT]), None)
        return cls(trial_id=str(trial_id), status=status, params=dict(params), history=hist,
                   wall_seconds=float(last.get("time_total_s", 0.0) or 0.0), error=error,
                   score=ranking.score(hist), val_correct=correct)

    def row(self, param_names: Iterable[str]) -> dict[str, Any]:
        h = self.history
        ok = h[h["diverged"].fillna(0) == 0] if len(h) else h
        best = float(ok["val_acc"].max()) if len(ok) and ok["val_acc"].notna().any() else float("nan")
        last = (0.0 if self.status is TrialStatus.DIVERGED
                else float(h["val_acc"].iloc[-1]) if len(h) else float("nan"))
        return {"trial_id": self.trial_id, "trial_index": self.index, "status": self.status.value,
                "epochs": int(h["epoch"].max()) if len(h) else 0, "score": self.score,
                "best_val_acc": best, "last_val_acc": last, "wall_seconds": self.wall_seconds,
                "error": self.error, **{k: self.params.get(k) for k in param_names}}


def history_frame(reports: Iterable[Mapping[str, Any]]) -> Any:
    """Epoch reports as a history table: one row per epoch (a trial restarted from a checkpoint may
    report an epoch twice: the last report wins), columns HISTORY_COLUMNS."""
    import pandas as pd

    recs = [r for r in reports if isinstance(r.get("epoch"), (int, float))
            and not (isinstance(r.get("epoch"), float) and math.isnan(r["epoch"]))]
    h = pd.DataFrame([{k: r.get(k, float("nan")) for k in HISTORY_COLUMNS} for r in recs],
                     columns=list(HISTORY_COLUMNS))
    if not len(h):
        return h
    h["epoch"] = h["epoch"].astype(int)
    h["diverged"] = h["diverged"].fillna(0.0)
    return h.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def tables(records: Sequence[TrialRecord], param_names: Sequence[str]) -> tuple[Any, Any]:
    """(trials, history) DataFrames in the run folder's schema."""
    import pandas as pd

    trials = pd.DataFrame([r.row(param_names) for r in records],
                          columns=[*TRIAL_COLUMNS, *param_names])
    for k in param_names:  # a column of mixed types (e.g. 0.1 and '1e8') would not fit parquet
        if trials[k].dtype == object and len({type(v) for v in trials[k] if v is not None}) > 1:
            trials[k] = trials[k].map(lambda v: v if v is None else str(v))
    hist = [r.history.assign(trial_id=r.trial_id)[["trial_id", *HISTORY_COLUMNS]]
            for r in records if len(r.history)]
    history = (pd.concat(hist, ignore_index=True) if hist
               else pd.DataFrame(columns=["trial_id", *HISTORY_COLUMNS]))
    return trials, history


def normalize_trials(trials: Any) -> Any:
    """Fill in the schema's columns and types on a table read from disk (older folders lack some)."""
    import pandas as pd

    t = trials.copy()
    for col in TRIAL_COLUMNS:
        if col not in t:
            t[col] = None if col in ("trial_id", "status", "error") else float("nan")
    t["trial_id"] = t["trial_id"].astype(str)
    t["status"] = t["status"].fillna(TrialStatus.ERRORED.value).astype(str)
    t["epochs"] = pd.to_numeric(t["epochs"], errors="coerce").fillna(0).astype(int)
    idx = pd.to_numeric(t["trial_index"], errors="coerce")
    t["trial_index"] = [int(i) if i == i else trial_index(tid) for i, tid in zip(idx, t["trial_id"])]
    for col in ("score", "best_val_acc", "last_val_acc", "wall_seconds"):
        t[col] = pd.to_numeric(t[col], errors="coerce")
    if t["score"].isna().all() and t["best_val_acc"].notna().any():
        t["score"] = t["last_val_acc"]  # a folder written before scores existed
    return t


def read_result_lines(path: Path) -> list[dict[str, Any]]:
    """A Ray `result.json`: one JSON object per reported epoch (a half-written last line is skipped)."""
    lines: list[dict[str, Any]] = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:  # a half-written last line of a running trial
                continue
            if isinstance(rec, dict):
                lines.append(rec)
    return lines


def records_from_results(trial_dirs: Sequence[Path], budget: int | None, ranking: Ranking, *,
                         search_finished: bool = False) -> list[TrialRecord]:
    """Trial records from Ray's trial_*/result.json, what the search's tables are made of.

    While a search runs, a trial without a final (`done`) report is running. Once the search has
    finished (`search_finished`) every trial has ended: a trial stopped or paused by the scheduler
    never writes a `done` report, and its status follows from its last report as at the end of a
    search (`trial_status`)."""
    records = []
    for d in trial_dirs:
        f = d / "result.json"
        lines = read_result_lines(f)
        last = lines[-1] if lines else {}
        config = last.get("config")
        if not isinstance(config, dict) and (d / "params.json").exists():
            try:
                config = json.loads((d / "params.json").read_text())
            except (OSError, ValueError):
                config = None
        config = config if isinstance(config, dict) else {}
        trial_id = str(last.get("trial_id") or d.name.removeprefix("trial_"))
        error_file = d / "error.txt"  # Ray appends each failure; a retried trial may go on after it
        error = None
        if error_file.exists() and not last.get("done") and (
                not f.exists() or error_file.stat().st_mtime >= f.stat().st_mtime):
            text = error_file.read_text(errors="replace").strip().splitlines()
            error = (text[-1] if text else "error")[:500]
        records.append(TrialRecord.from_reports(
            trial_id, lines, {str(k): v for k, v in config.items()},
            budget=budget or int(last.get("epoch", 0) or 0), ranking=ranking, error=error,
            finished=search_finished or bool(last.get("done"))))
    return records


def _unreadable(*paths: Path) -> list[tuple[Path, str]]:
    """The tables among `paths` that are missing or unreadable (no parquet footer), with why."""
    import pyarrow.parquet as pq

    bad = []
    for path in paths:
        try:
            pq.read_metadata(path)  # the footer: a torn or truncated file has none
        except FileNotFoundError:
            bad.append((path, "missing"))
        except Exception as exc:  # noqa: BLE001 - torn, truncated or not a parquet file
            kept = path.with_name(path.name + ".unreadable")
            bad.append((path, f"unreadable: {type(exc).__name__}; kept as {kept.name}"))
    return bad


def _set_aside(bad: list[tuple[Path, str]]) -> None:
    for path, why in bad:
        if why != "missing":
            path.replace(path.with_name(path.name + ".unreadable"))


def _what(bad: list[tuple[Path, str]]) -> str:
    return ", ".join(f"{p.name} ({why})" for p, why in bad)


class RunFolder:
    """`<storage>/<name>/` of a search: its state, space, tables and exported configs."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()

    # -- files
    @property
    def state_path(self) -> Path:
        return self.path / STATE_FILE

    @property
    def space_path(self) -> Path:
        return self.path / SPACE_FILE

    @property
    def trials_path(self) -> Path:
        return self.path / TRIALS_FILE

    @property
    def history_path(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def best_dir(self) -> Path:
        return self.path / BEST_DIR

    @property
    def finalists_path(self) -> Path:
        return self.path / FINALISTS_FILE

    def exists(self) -> bool:
        return self.state_path.exists() or self.trials_path.exists()

    def is_finished(self) -> bool:
        return bool(self.read_state().get("finished"))

    # -- state (search.json)
    def read_state(self, strict: bool = False) -> dict[str, Any]:
        """search.json ({} when missing; also when unreadable, unless `strict`: then a ConfigError
        that names the file, for the commands that cannot go on without it)."""
        if not self.state_path.exists():
            return {}
        try:
            loaded = json.loads(self.state_path.read_text())
        except (OSError, ValueError) as exc:
            if strict:
                raise ConfigError(
                    f"{self.state_path}: unreadable ({type(exc).__name__}: {str(exc)[:120]}); it holds "
                    f"what the search was started with (space digest, MLflow run, base config) and "
                    f"cannot be rebuilt: restore it, or start the search again with --name NEW (the "
                    f"trials' results stay in {self.path} and 'tfkd-search report {self.path}' "
                    f"shows them)") from None
            return {}
        if not isinstance(loaded, dict):
            if strict:
                raise ConfigError(f"{self.state_path}: not a tfkd-search search.json (the top level "
                                  f"is not a mapping); restore it, or start the search again with "
                                  f"--name NEW")
            return {}
        return loaded

    def write_state(self, state: Mapping[str, Any]) -> None:
        atomic_write_json(self.state_path, dict(state))

    def update_state(self, **changes: Any) -> dict[str, Any]:
        state = {**self.read_state(), **changes}
        self.write_state(state)
        return state

    # -- the space (space.yaml: the space as searched, --set values applied)
    def write_space(self, raw: Mapping[str, Any]) -> None:
        import yaml

        atomic_write_text(self.space_path, yaml.safe_dump(dict(raw), sort_keys=False))

    def read_space_raw(self) -> dict[str, Any]:
        import yaml

        if not self.space_path.exists():
            return {}
        loaded = yaml.safe_load(self.space_path.read_text())
        return loaded if isinstance(loaded, dict) else {}

    def space(self) -> Any:
        """The typed space (`spaces.Space`) this folder was searched with."""
        from .spaces import load_space

        return load_space(self.space_path)

    def ranking(self) -> Ranking:
        search = self.read_space_raw().get("search") or {}
        return Ranking.of_space((search.get("scheduler") or {}) if isinstance(search, dict) else {})

    # -- tables
    def write_tables(self, records: Sequence[TrialRecord], param_names: Sequence[str]) -> Any:
        trials, history = tables(records, param_names)
        atomic_write_parquet(trials, self.trials_path)
        atomic_write_parquet(history, self.history_path)
        return trials

    def read_trials(self) -> Any:
        import pandas as pd

        if not self.trials_path.exists():
            raise ConfigError(f"{self.path}: not a finished tfkd-search run folder (no {TRIALS_FILE}); "
                              f"pass the folder <storage>/<name> of a search")
        try:
            frame = pd.read_parquet(self.trials_path)
        except Exception as exc:  # noqa: BLE001 - torn, truncated or not a parquet file
            raise ConfigError(
                f"{self.trials_path}: unreadable ({type(exc).__name__}: {str(exc)[:200]}); a finished "
                f"search rebuilds it from its trial_*/result.json files (tfkd-search export "
                f"{self.path}); an unfinished one writes it at its end (tfkd-search --space SPACE "
                f"--resume)") from None
        return normalize_trials(frame)

    def write_finalists(self, runs: Sequence[tuple[Mapping[str, Any], TrialRecord]],
                        param_names: Sequence[str]) -> Any:
        """finalists.parquet from the finalists stage's runs: (plan entry, its trial's record)."""
        import pandas as pd

        rows = []
        for entry, rec in runs:
            row = rec.row(param_names)
            row.update({"name": entry["name"], "role": entry["role"],
                        "search_rank": entry.get("search_rank"), "seed": int(entry["seed"]),
                        "val_correct": rec.val_correct})
            rows.append(row)
        frame = pd.DataFrame(rows, columns=[*FINALIST_COLUMNS, *param_names])
        frame["search_rank"] = pd.to_numeric(frame["search_rank"], errors="coerce").astype("Int64")
        for k in param_names:  # baselines have no searched values: keep the column one type
            if frame[k].dtype == object:
                frame[k] = frame[k].map(lambda v: v if v is None else str(v))
        atomic_write_parquet(frame, self.finalists_path)
        return frame

    def read_finalists(self) -> Any:
        """finalists.parquet, or None for a search without a finalists stage."""
        import pandas as pd

        if not self.finalists_path.exists():
            return None
        try:
            return pd.read_parquet(self.finalists_path)
        except Exception as exc:  # noqa: BLE001 - torn, truncated or not a parquet file
            raise ConfigError(
                f"{self.finalists_path}: unreadable ({type(exc).__name__}: {str(exc)[:200]}); a "
                f"finished search rebuilds it from its finalists/trial_*/result.json files "
                f"(tfkd-search export {self.path})") from None

    def standings(self) -> list[Any]:
        """The finalists stage's answer (`finalists.standings`: finalists best first, then the
        baselines, with summaries and paired comparisons); [] without a finalists stage."""
        from .finalists import per_seed, standings

        frame = self.read_finalists()
        plan = self.read_state().get("finalists_plan")
        if frame is None or not len(frame) or not plan:
            return []
        # a run that did not complete is a failed seed (NaN)
        scores, examples = per_seed(
            (r["name"], r["seed"], r["score"] if r["status"] == TrialStatus.COMPLETED.value else math.nan,
             r.get(VAL_CORRECT)) for _, r in frame.iterrows())
        ranking = self.ranking()
        return standings(scores, [e["name"] for e in plan["entries"]], ranking.mode,
                         examples=examples)

    def trial_dirs(self) -> list[Path]:
        """Ray's per-trial folders (`trial_<id>/`, with result.json) of this search."""
        return sorted(d for d in self.path.glob("trial_*") if d.is_dir())

    def rebuild_tables(self) -> str | None:
        """Mend the tables of a finished search: when trials.parquet or history.parquet is missing or
        unreadable, write both again from Ray's per-trial result.json files, which hold every epoch
        report the search made them from; likewise finalists.parquet from the finalists stage's
        (`finalists/trial_*`, each with its planned run in its config). An unreadable file is kept
        beside, as `<name>.unreadable`. Returns what was done (None: nothing to do, or nothing to
        rebuild from)."""
        if not self.is_finished():
            return None
        notes = []
        dirs = [d for d in self.trial_dirs() if (d / "result.json").exists()]
        bad = _unreadable(self.trials_path, self.history_path)
        if bad and dirs:
            space = self.space()
            records = records_from_results(dirs, space.budget, self.ranking(), search_finished=True)
            _set_aside(bad)
            self.write_tables(records, list(space.params))
            notes.append(f"rebuilt {TRIALS_FILE} and {HISTORY_FILE} from the {len(dirs)} trials' "
                         f"result.json files: {_what(bad)}")
        plan = self.read_state().get("finalists_plan")
        fdirs = sorted(d for d in (self.path / FINALISTS_DIR).glob("trial_*")
                       if (d / "result.json").exists())
        bad = _unreadable(self.finalists_path) if plan and fdirs else []
        if bad:
            space = self.space()
            runs = []
            for rec in records_from_results(fdirs, space.budget, self.ranking(), search_finished=True):
                run = dict(rec.params.get("run") or {})
                rec.params = dict(run.get("params") or {})
                runs.append((run, rec))
            order = {(e["name"], s): i for i, (e, s) in enumerate(
                (e, s) for e in plan["entries"] for s in plan["seeds"])}
            runs.sort(key=lambda r: order.get((r[0].get("name"), r[0].get("seed")), len(order)))
            _set_aside(bad)
            self.write_finalists(runs, list(space.params))
            notes.append(f"rebuilt {FINALISTS_FILE} from the {len(fdirs)} finalists stage runs' "
                         f"result.json files: {_what(bad)}")
        return f"{self.path}: " + "; ".join(notes) if notes else None

    def read_history(self) -> Any:
        import pandas as pd

        if not self.history_path.exists():
            return pd.DataFrame(columns=["trial_id", *HISTORY_COLUMNS])
        return pd.read_parquet(self.history_path)
