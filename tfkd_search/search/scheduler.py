"""Ray Tune glue for `tfkd_search.scheduling.Halving`: the same decision code the replays use.

Synchronous mode decides each rung when it is complete: a trial that reaches a rung early is
PAUSED (its checkpoint at the rung is kept, its GPU share goes to the next trial) and, once every
trial has reported at the rung or ended before it, the best 1/reduction_factor are resumed and the
rest stopped. The result does not depend on the order in which results arrive. The decisions are
also written to `scheduler/asha_rungs.json` in the run folder whenever they change, and read back after
`--resume` (Ray restores the scheduler from the pickle taken at the start of the experiment, so its
own state would be empty: ray-project/ray#30838).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..io import atomic_write_json
from ..runfolder import trial_index
from ..scheduling import Decision, Halving
from .trial import SCORE

# Not at the top of the run folder: at a restore Tune copies the top-level .json and .pkl files of
# the experiment folder to its staging folder and, during the resumed run, writes those copies back
# over the originals, so decisions taken after the restore would be lost at the next resume.
RUNGS_FILE = "scheduler/asha_rungs.json"
_OLD_RUNGS_FILE = "asha_rungs.json"  # where run folders of earlier versions keep them


def read_halving(rungs_file: str | Path) -> Halving | None:
    """The decisions saved in a run folder's rungs file (None: none saved yet)."""
    path = Path(rungs_file)
    old = path.parent.parent / _OLD_RUNGS_FILE
    for p in (path, old):
        if p.exists():
            return Halving.from_json(json.loads(p.read_text()))
    return None


def make_scheduler(halving: Halving, rungs_file: Path | None, max_running: int | None = None) -> Any:
    """A Ray `TrialScheduler` that asks `halving` at every epoch report.

    `max_running` caps the trials it resumes from a rung. New trials are capped by the searcher
    (`searchers.make_searcher` with `rungs_wait`), which this scheduler tells, after every decision,
    which trials wait at a rung: those hold no resources and do not count."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    from .searchers import tell_waiting

    actions = {Decision.CONTINUE: TrialScheduler.CONTINUE, Decision.PAUSE: TrialScheduler.PAUSE,
               Decision.STOP: TrialScheduler.STOP}

    class HalvingScheduler(FIFOScheduler):
        def __init__(self) -> None:
            super().__init__()
            self.halving = halving
            self._file = str(rungs_file) if rungs_file else None
            self._loaded = False
            self._resumable: set[str] = set()

        # -- persistence
        def _load(self) -> None:
            self._loaded = True
            saved = read_halving(self._file) if self._file else None
            if saved is not None:
                self.halving = saved

        def _save(self, tc: Any) -> None:
            if self._file:
                atomic_write_json(self._file, self.halving.to_json())
            tell_waiting(tc.search_alg, self.halving.paused())

        # -- decisions
        def _release(self, tc: Any, current: Any = None) -> str | None:
            """Act on rungs that became complete; returns the action for `current`, if decided."""
            action = None
            by_id = {t.trial_id: t for t in tc.get_trials()}
            for trial_id, decision in self.halving.releasable().items():
                t = by_id.get(trial_id)
                if current is not None and trial_id == current.trial_id:
                    action = actions[decision]
                elif t is None:
                    continue
                elif decision is Decision.CONTINUE:
                    self._resumable.add(trial_id)
                elif t.status == Trial.PAUSED or t.is_saving:
                    tc.stop_trial(t)
            return action

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            if not self._loaded:
                self._load()
            epoch = int(result.get("epoch", 0) or 0)
            decision = self.halving.on_result(trial.trial_id, trial_index(trial.trial_id), epoch,
                                              float(result.get(SCORE, float("nan"))))
            self._resumable.discard(trial.trial_id)
            released = self._release(tune_controller, trial)
            self._save(tune_controller)
            return released or actions[decision]

        def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
            self.on_trial_remove(tune_controller, trial)

        def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
            self.on_trial_remove(tune_controller, trial)

        def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
            if not self._loaded:
                self._load()
            self.halving.on_end(trial.trial_id)
            self._resumable.discard(trial.trial_id)
            self._release(tune_controller)
            self._save(tune_controller)

        def choose_trial_to_run(self, tune_controller: Any) -> Any:
            if not self._loaded:  # after --resume: tell the searcher which trials wait, first thing
                self._load()
                tell_waiting(tune_controller.search_alg, self.halving.paused())
            trials = tune_controller.get_trials()
            if max_running and sum(t.status == Trial.RUNNING for t in trials) >= max_running:
                return None
            for t in trials:
                if t.status == Trial.PENDING:
                    return t
            for t in trials:
                if t.status == Trial.PAUSED and t.trial_id in self._resumable:
                    return t
            return None

        def debug_string(self) -> str:
            return "tfkd-search successive halving"

    return HalvingScheduler()
