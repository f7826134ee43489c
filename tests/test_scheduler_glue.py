"""The Ray Tune glue of the successive-halving decisions (`search.scheduler`): decisions persist
across a driver restart (Ray restores schedulers from their start-time pickle, ray#30838), paused
trials are resumed or stopped when their rung completes, and the running-trial cap holds."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import ray.cloudpickle as cloudpickle
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from tfkd_search.scheduling import Halving
from tfkd_search.search.scheduler import make_scheduler


class Controller:
    """The two calls the scheduler makes on Tune's controller."""

    def __init__(self, trials: list[SimpleNamespace]) -> None:
        self.trials, self.stopped = trials, []

    def get_trials(self) -> list[SimpleNamespace]:
        return self.trials

    def stop_trial(self, t: SimpleNamespace) -> None:
        self.stopped.append(t.trial_id)
        t.status = Trial.TERMINATED


def _trials(n: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(trial_id=f"abcde_{i:05d}", status=Trial.PENDING, is_saving=False)
            for i in range(n)]


def _report(s, tc, t, epoch, score):
    t.status = Trial.RUNNING
    action = s.on_trial_result(tc, t, {"epoch": epoch, "score": score})
    if action == TrialScheduler.PAUSE:
        t.status = Trial.PAUSED
    elif action == TrialScheduler.STOP:
        t.status = Trial.TERMINATED
    return action


def test_synchronous_rung_pauses_then_resumes_the_best_and_stops_the_rest(tmp_path) -> None:
    trials = _trials(4)
    tc = Controller(trials)
    s = make_scheduler(Halving([2], 2, "max", synchronous=True, total_trials=4),
                       tmp_path / "rungs.json", max_running=2)
    scores = [0.5, 0.9, 0.7, 0.6]
    actions = [_report(s, tc, t, 2, v) for t, v in zip(trials[:3], scores[:3])]
    assert actions == [TrialScheduler.PAUSE] * 3
    # the last report completes the rung: it is answered at once (0.6 is not in the top 2)
    assert _report(s, tc, trials[3], 2, scores[3]) == TrialScheduler.STOP
    assert tc.stopped == ["abcde_00000"]  # paused and below the cut
    assert s.choose_trial_to_run(tc) is trials[1]  # the best goes on first
    trials[1].status = Trial.RUNNING
    assert s.choose_trial_to_run(tc) is trials[2]
    trials[2].status = Trial.RUNNING
    assert s.choose_trial_to_run(tc) is None  # two running: the cap


def test_decisions_survive_a_restore_from_the_start_pickle(tmp_path) -> None:
    f = tmp_path / "rungs.json"
    s = make_scheduler(Halving([2], 2, "max", synchronous=True, total_trials=2), f)
    start_pickle = cloudpickle.dumps(s)  # what Tuner writes to tuner.pkl before fit()
    trials = _trials(2)
    tc = Controller(trials)
    assert _report(s, tc, trials[0], 2, 0.8) == TrialScheduler.PAUSE
    assert f.exists()
    # the driver dies; Ray restores the scheduler from the start-time pickle and the paused trial
    # restarts from its rung checkpoint, repeating its report
    restored = pickle.loads(start_pickle)
    assert _report(restored, tc, trials[0], 2, 0.8) == TrialScheduler.PAUSE
    assert _report(restored, tc, trials[1], 2, 0.4) == TrialScheduler.STOP
    assert restored.choose_trial_to_run(tc) is trials[0]
    # without the saved records, the rung would wait for a trial it already has
    fresh = make_scheduler(Halving([2], 2, "max", synchronous=True, total_trials=2), None)
    assert _report(fresh, Controller(_trials(2)), _trials(2)[1], 2, 0.4) == TrialScheduler.PAUSE
