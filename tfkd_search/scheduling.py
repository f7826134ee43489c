"""Successive-halving decisions, shared by the search (wrapped in a Ray TrialScheduler) and by
`benchmarks/replay.py` (run against recorded learning curves). Pure Python: no Ray, no torch.

A trial reports its rung metric after every epoch (`runfolder.windowed` of the space's metric over the
last `window` epochs). At a rung epoch `Halving.on_result` decides:

* asynchronous (classic ASHA, as Ray's `ASHAScheduler`): the trial continues when its value is at least
  the (1 - 1/rf) percentile (linear interpolation) of the values recorded at that rung so far, itself
  included; the first trial at a rung always continues. The decision depends on the order in which
  results arrive.
* synchronous: the trial PAUSEs until the rung is complete, i.e. every trial of the search has either
  reported at that rung or ended before it. Then the best max(1, floor(n / rf)) of the n trials that
  reached the rung continue (mode max: highest value first; ties go to the lower `order`, the order in
  which the searcher proposed the trials) and the others stop. The decision is the same for every
  arrival order. The trial whose report completes the rung gets its own decision as the return value;
  the paused ones are handed out once each by `releasable()`.

Completeness needs to know how many trials there will be: `total_trials` (a grid, or num_samples). With
`total_trials=None` a rung is decided only after `close()` (the searcher will add no more trials), once
every trial known then (seen through `on_add` or `on_result`) has reported at the rung or ended. A trial
that arrives at a rung already decided (possible only when trials are added after the decision, e.g. more
trials than `total_trials` or reports after `close()`) is ranked against the values recorded there and
continues if it would have been among the kept, given the rung's n including itself.

NaN or infinite values are the worst possible value (a diverged trial). Every trial that STOPs is
treated as ended. `to_json()`/`from_json()` keep the whole state, so a resumed search decides exactly as
an uninterrupted one would have.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

__all__ = ["Decision", "Halving", "rung_epochs"]


def rung_epochs(budget: int, grace_period: int, reduction_factor: float,
                rungs: list[int] | None = None) -> list[int]:
    """Epochs at which trials are compared: `rungs` when given (sorted, those inside (0, budget)),
    else ceil(grace * rf**k) for k = 0, 1, ... while below the budget (Ray's ASHA milestones, as
    `spaces.Scheduler.rung_epochs`; a rung at the budget itself would decide nothing)."""
    if rungs is not None:
        return sorted({int(r) for r in rungs if 0 < int(r) < budget})
    if grace_period < 1 or reduction_factor <= 1:
        raise ValueError(f"need grace_period >= 1 and reduction_factor > 1, got {grace_period}, "
                         f"{reduction_factor}")
    out: list[int] = []
    k = 0
    while True:
        t = grace_period * reduction_factor ** k
        r = int(math.ceil(t - 1e-9))  # Ray compares epoch >= milestone: a fractional rung is its ceiling
        if r >= budget:
            return out
        if not out or r > out[-1]:
            out.append(r)
        k += 1


class Decision(str, Enum):
    CONTINUE = "CONTINUE"
    PAUSE = "PAUSE"
    STOP = "STOP"

    def __str__(self) -> str:
        return self.value


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class Halving:
    """Successive halving at fixed rungs, asynchronous (ASHA) or synchronous (order-independent).

    Args:
        rungs: rung epochs (see `rung_epochs`).
        reduction_factor: keep 1/rf of the trials at each rung.
        mode: "max" or "min" (the metric's better direction).
        synchronous: wait for the whole rung before deciding (see the module docstring).
        total_trials: how many trials the search will run (None: unknown, then call `close()`).
    """

    def __init__(self, rungs: list[int], reduction_factor: float, mode: str = "max", *,
                 synchronous: bool = True, total_trials: int | None = None) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be > 1, got {reduction_factor}")
        self.rungs = sorted({int(r) for r in rungs})
        self.reduction_factor = float(reduction_factor)
        self.mode = mode
        self.synchronous = bool(synchronous)
        self.total_trials = None if total_trials is None else int(total_trials)
        self.closed = False
        self._order: dict[str, int] = {}          # trial -> proposal order
        self._ended: set[str] = set()
        self._records: dict[int, dict[str, float | None]] = {r: {} for r in self.rungs}  # None = worst
        self._decided: dict[int, dict[str, str]] = {}   # sync: rung -> trial -> CONTINUE/STOP
        self._paused: dict[str, int] = {}          # sync: trial -> rung it waits at
        self._release: dict[str, str] = {}         # decided paused trials not yet handed out

    # -- events ------------------------------------------------------------------------------------
    def on_add(self, trial: str, order: int) -> None:
        """The searcher proposed `trial` (optional: `on_result` registers trials too; needed with
        total_trials=None so that a trial that has not reported yet holds its rungs open)."""
        self._order.setdefault(str(trial), int(order))

    def on_result(self, trial: str, order: int, epoch: int, value: float) -> Decision:
        """A trial's report after `epoch` epochs, with its rung metric `value`."""
        trial = str(trial)
        self.on_add(trial, order)
        epoch = int(epoch)
        if epoch not in self._records:
            return Decision.CONTINUE
        rec = self._records[epoch]
        decided = self._decided.get(epoch)
        if decided is not None and trial in decided:  # a report repeated after a restart
            return self._finish(trial, Decision(decided[trial]))
        rec[trial] = _finite(value)
        if not self.synchronous:
            return self._finish(trial, self._async_rule(epoch, trial))
        if decided is not None:  # late arrival at a decided rung
            keep = self._ranked(epoch)[: self._keep(len(rec))]
            d = Decision.CONTINUE if trial in keep else Decision.STOP
            decided[trial] = d.value
            return self._finish(trial, d)
        self._paused[trial] = epoch
        self._try_decide()
        if trial in self._release:  # this report completed the rung: answer directly
            return self._finish(trial, Decision(self._release.pop(trial)))
        return Decision.PAUSE

    def on_end(self, trial: str) -> None:
        """The trial ended and will not report again (completed, stopped, errored, diverged)."""
        trial = str(trial)
        self._order.setdefault(trial, len(self._order) + 1_000_000)
        self._ended.add(trial)
        self._paused.pop(trial, None)
        self._release.pop(trial, None)
        if self.synchronous:
            self._try_decide()

    def close(self) -> None:
        """No more trials will be added (the searcher is finished): rungs can complete with
        total_trials=None."""
        self.closed = True
        if self.synchronous:
            self._try_decide()

    def releasable(self) -> dict[str, Decision]:
        """Paused trials whose rung is now decided -> CONTINUE or STOP (each returned once)."""
        out = {t: Decision(d) for t, d in sorted(self._release.items(), key=lambda kv: self._order[kv[0]])}
        self._release.clear()
        return out

    # -- inspection ----------------------------------------------------------------------------------
    def paused(self) -> dict[str, int]:
        """Trials waiting at a rung (trial -> rung epoch)."""
        return dict(self._paused)

    def ended(self) -> set[str]:
        """Trials that ended: stopped at a rung, or reported ended through `on_end`."""
        return set(self._ended)

    def decided(self, rung: int) -> dict[str, Decision] | None:
        """Sync: the decision of a complete rung (trial -> CONTINUE/STOP), None while open."""
        d = self._decided.get(int(rung))
        return None if d is None else {t: Decision(v) for t, v in d.items()}

    def rung_complete(self, rung: int) -> bool:
        known = set(self._order)
        if self.total_trials is not None:
            if len(known) < self.total_trials:
                return False
        elif not self.closed:
            return False
        rec = self._records[rung]
        return all(t in rec or t in self._ended for t in known)

    # -- rules ---------------------------------------------------------------------------------------
    def _sign(self) -> float:
        return 1.0 if self.mode == "max" else -1.0

    def _key(self, trial: str, value: float | None) -> tuple[int, float, int]:
        # sort key, best first: finite before worst, then by value in the better direction, then order
        return (0 if value is not None else 1, -self._sign() * value if value is not None else 0.0,
                self._order.get(trial, 0))

    def _ranked(self, rung: int) -> list[str]:
        rec = self._records[rung]
        return [t for t, _ in sorted(rec.items(), key=lambda kv: self._key(kv[0], kv[1]))]

    def _keep(self, n: int) -> int:
        return max(1, int(math.floor(n / self.reduction_factor + 1e-9)))

    def _async_rule(self, rung: int, trial: str) -> Decision:
        value = self._records[rung][trial]
        if value is None:
            return Decision.CONTINUE if len(self._records[rung]) == 1 else Decision.STOP
        vals = sorted(self._sign() * v for v in self._records[rung].values() if v is not None)
        q = (1.0 - 1.0 / self.reduction_factor) * (len(vals) - 1)
        lo, hi = int(math.floor(q)), int(math.ceil(q))
        cutoff = vals[lo] + (vals[hi] - vals[lo]) * (q - lo)
        return Decision.STOP if self._sign() * value < cutoff - 1e-12 else Decision.CONTINUE

    def _try_decide(self) -> None:
        for rung in self.rungs:
            if rung in self._decided or not self.rung_complete(rung):
                continue
            rec = self._records[rung]
            keep = set(self._ranked(rung)[: self._keep(len(rec))]) if rec else set()
            self._decided[rung] = {t: (Decision.CONTINUE if t in keep else Decision.STOP).value
                                   for t in rec}
            for t, r in list(self._paused.items()):
                if r == rung:
                    del self._paused[t]
                    if t not in self._ended:
                        self._release[t] = self._decided[rung][t]
            # stopped trials will not report again: later rungs must not wait for them
            self._ended.update(t for t, d in self._decided[rung].items() if d == Decision.STOP.value)

    def _finish(self, trial: str, d: Decision) -> Decision:
        if d is Decision.STOP:
            self._ended.add(trial)
            self._paused.pop(trial, None)
            if self.synchronous:
                self._try_decide()
        return d

    # -- state ---------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"format": 1, "rungs": self.rungs, "reduction_factor": self.reduction_factor,
                "mode": self.mode, "synchronous": self.synchronous, "total_trials": self.total_trials,
                "closed": self.closed, "order": dict(self._order), "ended": sorted(self._ended),
                "records": {str(r): dict(v) for r, v in self._records.items()},
                "decided": {str(r): dict(v) for r, v in self._decided.items()},
                "paused": dict(self._paused), "release": dict(self._release)}

    @classmethod
    def from_json(cls, state: dict[str, Any]) -> Halving:
        h = cls(list(state["rungs"]), state["reduction_factor"], state.get("mode", "max"),
                synchronous=bool(state.get("synchronous", True)), total_trials=state.get("total_trials"))
        h.closed = bool(state.get("closed", False))
        h._order = {str(k): int(v) for k, v in (state.get("order") or {}).items()}
        h._ended = {str(t) for t in state.get("ended") or []}
        for r, v in (state.get("records") or {}).items():
            h._records.setdefault(int(r), {}).update({str(t): _finite(x) for t, x in v.items()})
        h._decided = {int(r): {str(t): str(x) for t, x in v.items()}
                      for r, v in (state.get("decided") or {}).items()}
        h._paused = {str(t): int(r) for t, r in (state.get("paused") or {}).items()}
        h._release = {str(t): str(d) for t, d in (state.get("release") or {}).items()}
        return h
