"""Driver-side Tune callback: one progress line per event and the MLflow child run of every trial
(all logging from the driver: one writer, safe for a SQLite store)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..runfolder import Ranking, trial_status
from ..tracking import GRAPHS_TAG, Tracker
from .trial import EAGER_REASON, SCORE

Printer = Callable[[str], None]


Describe = Callable[[dict[str, Any]], tuple[dict[str, Any], dict[str, str], str]]


def make_callback(tracking: dict[str, Any], params: list[str], budget: int, ranking: Ranking,
                  total: int, printer: Printer, describe: Describe | None = None) -> Any:
    """`describe(config) -> (MLflow params, MLflow tags, title)` names a trial (default: the searched
    `params` of its config, no tags, `trial <id>`)."""
    from ray.tune import Callback

    label = ranking.metric if ranking.window == 1 else f"{ranking.metric}(mean of {ranking.window})"

    class SearchCallback(Callback):
        """Logs every trial to MLflow (from the driver: one writer) and prints progress."""

        def __init__(self) -> None:
            self.tracking = dict(tracking)
            self._tracker: Tracker | None = None
            self._best: dict[str, float] = {}
            self._started: set[str] = set()
            self.printer = print

        def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks; clients don't pickle
            return {"tracking": self.tracking, "_best": self._best, "_started": self._started}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__dict__.update(state)
            self._tracker = None
            self.printer = print  # noqa: T201 - a restored driver prints to stdout

        @property
        def tracker(self) -> Tracker:
            if self._tracker is None:
                t = Tracker(self.tracking["uri"], self.tracking["experiment"],
                            debug=bool(self.tracking.get("debug")))
                t.parent_id = self.tracking["parent_id"]
                self._tracker = t
            return self._tracker

        def _describe(self, trial: Any) -> tuple[dict[str, Any], dict[str, str], str]:
            if describe is not None:
                p, tags, title = describe(trial.config)
                return p, tags, f"{title} ({trial.trial_id})"
            return {k: trial.config.get(k) for k in params}, {}, f"trial {trial.trial_id}"

        def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            again = trial.trial_id in self._started
            self._started.add(trial.trial_id)
            p, tags, title = self._describe(trial)
            self.tracker.child(trial.trial_id, f"trial-{trial.trial_id}", params=p,
                               tags={"tfkd.trial_id": trial.trial_id, **tags})
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in p.items())
            epoch = int((trial.last_result or {}).get("epoch", 0) or 0)
            if again and epoch:  # paused at a rung, or retried from its checkpoint
                self.printer(f"[{_now()}] {title} resumed after epoch {epoch} ({shown})")
            elif again:  # failed before its first epoch: retried from the start
                self.printer(f"[{_now()}] {title} restarted ({shown})")
            else:
                self.printer(f"[{_now()}] {title} started ({shown})")

        def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                            **info: Any) -> None:
            run_id = self.tracker.child(trial.trial_id, f"trial-{trial.trial_id}")
            epoch = int(result.get("epoch", result.get("training_iteration", 0)))
            self.tracker.log_epoch(run_id, result, epoch)
            if result.get(EAGER_REASON):  # said once per trial process: the step went eager
                self.tracker.set_tags(run_id, {GRAPHS_TAG: f"off: {result[EAGER_REASON]}"})
                self.printer(f"[{_now()}] trial {trial.trial_id}: {result[EAGER_REASON]}")
            value = float(result.get(SCORE, float("nan")))
            if value == value:
                prev = self._best.get(trial.trial_id)
                better = prev is None or (value > prev if ranking.mode == "max" else value < prev)
                if better:
                    self._best[trial.trial_id] = value
            done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
            self.printer(f"[{_now()}] {self._describe(trial)[2]} epoch {epoch}/{budget} {label} "
                         f"{value:.4f}  (trials done {done}/{total}, best {self._overall():.4f})")

        def _overall(self) -> float:
            vals = list(self._best.values())
            if not vals:
                return float("nan")
            return max(vals) if ranking.mode == "max" else min(vals)

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            last = trial.last_result or {}
            outcome = trial_status(last, None, budget).value
            self.tracker.end_child(trial.trial_id, outcome,
                                   {"tfkd.epochs": last.get("epoch")})
            self.printer(f"[{_now()}] {self._describe(trial)[2]} {outcome.replace('_', ' ')} after "
                         f"{last.get('epoch', 0)} epochs")

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            msg = _error_text(trial)
            self.tracker.end_child(trial.trial_id, "errored", {"tfkd.error": _error_tag(msg)})
            self.printer(f"[{_now()}] {self._describe(trial)[2]} errored: "
                         f"{msg.splitlines()[-1][:200]}")

    return SearchCallback()


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None) or ""
    try:
        if path and Path(path).exists():
            return Path(path).read_text(errors="replace").strip()
    except OSError:
        pass
    return str(getattr(trial, "error_msg", None) or "unknown error")


def _error_tag(text: str, limit: int = 4000) -> str:
    """The exception line first, then the end of the traceback (an MLflow tag has a size limit and
    the exception is the last line of the traceback)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    head = (lines[-1] if lines else "unknown error")[:1000]
    return head + "\n\n" + text.strip()[-(limit - len(head) - 2):]


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _now() -> str:
    return time.strftime("%H:%M:%S")


