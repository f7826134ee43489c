"""The Ray Tune glue of the successive-halving decisions (`search.scheduler`): decisions persist
across a driver restart (Ray restores schedulers from their start-time pickle, ray#30838), paused
trials are resumed or stopped when their rung completes, and the running-trial cap holds with trials
waiting at a rung (the searchers of `search.searchers` do not count them)."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import ray.cloudpickle as cloudpickle
from ray import tune
from ray.tune.experiment import Experiment, Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import BasicVariantGenerator, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from tfkd_search.scheduling import Halving
from tfkd_search.search.scheduler import make_scheduler
from tfkd_search.search.searchers import RungAwareLimiter, RungAwareVariants, tell_waiting


class Controller:
    """What the scheduler uses of Tune's controller: its trials, stop_trial and the search algorithm."""

    def __init__(self, trials: list[SimpleNamespace], search_alg: object = None) -> None:
        self.trials, self.stopped, self.search_alg = trials, [], search_alg

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


def _grid(search_alg, tmp_path, n: int):
    def trainable(config):  # never run: the generator only needs an experiment to expand
        return None
    search_alg.add_configurations([Experiment("cap", run=trainable, storage_path=str(tmp_path),
                                              config={"x": tune.grid_search(list(range(n)))})])
    return search_alg


def test_a_cap_of_one_goes_on_while_trials_wait_at_a_rung(tmp_path) -> None:
    """max_concurrent 1 with a synchronous rung: each trial that pauses at the rung lets the next
    start; Ray's own limit would count the paused trial as live and stall the rung for good."""
    searcher = _grid(RungAwareVariants(random_state=0, cap=1), tmp_path / "a", 3)
    s = make_scheduler(Halving([2], 3, "max", synchronous=True, total_trials=3), tmp_path / "r.json",
                       max_running=1)
    trials: list = []
    tc = Controller(trials, searcher)
    for score in (0.5, 0.9):
        t = searcher.next_trial()
        assert searcher.next_trial() is None  # one running: the cap
        trials.append(SimpleNamespace(trial_id=t.trial_id, status=Trial.PENDING, is_saving=False))
        assert _report(s, tc, trials[-1], 2, score) == TrialScheduler.PAUSE
    last = searcher.next_trial()
    trials.append(SimpleNamespace(trial_id=last.trial_id, status=Trial.PENDING, is_saving=False))
    assert _report(s, tc, trials[-1], 2, 0.1) == TrialScheduler.STOP  # completes the rung
    searcher.on_trial_complete(last.trial_id)
    for t in tc.stopped:
        searcher.on_trial_complete(t)
    assert tc.stopped == [trials[0].trial_id]
    assert s.choose_trial_to_run(tc) is trials[1]  # the kept one resumes
    searcher.on_trial_complete(trials[1].trial_id)
    assert searcher.next_trial() is None and searcher.is_finished()  # 3 of 3 suggested

    # Ray's limit, the same events: the first trial's pause stops everything
    ray_limit = _grid(BasicVariantGenerator(random_state=0, max_concurrent=1), tmp_path / "b", 3)
    first = ray_limit.next_trial()
    tell_waiting(ray_limit, [first.trial_id])  # not ours: ignored
    assert ray_limit.next_trial() is None


def test_optuna_limiter_counts_only_trials_not_waiting() -> None:
    optuna = OptunaSearch(seed=0, metric="score", mode="max")
    limiter = RungAwareLimiter(optuna, cap=1)
    limiter.set_search_properties("score", "max", {"x": tune.uniform(0.0, 1.0)})
    alg = SearchGenerator(limiter)  # how Tune holds a Searcher
    assert limiter.suggest("t0") is not None
    assert limiter.suggest("t1") is None
    tell_waiting(alg, ["t0"])
    assert limiter.suggest("t1") is not None
    assert limiter.suggest("t2") is None  # t1 runs
    tell_waiting(alg, [])  # t0 resumed from its rung: two running now, over the cap of one
    limiter.on_trial_complete("t1", {"score": 0.5})
    assert limiter.suggest("t2") is None
    limiter.on_trial_complete("t0", {"score": 0.7})
    assert limiter.suggest("t2") is not None


def test_saved_decisions_are_read_from_the_scheduler_folder_or_where_older_runs_kept_them(tmp_path) -> None:
    from tfkd_search.io import atomic_write_json
    from tfkd_search.search.scheduler import RUNGS_FILE, read_halving

    h = Halving([2], 2, "max", synchronous=True, total_trials=2)
    h.on_result("a", 0, 2, 0.5)
    assert read_halving(tmp_path / RUNGS_FILE) is None
    atomic_write_json(tmp_path / "asha_rungs.json", h.to_json())  # a run folder of an earlier version
    assert read_halving(tmp_path / RUNGS_FILE).paused() == {"a": 2}
    h.on_result("b", 1, 2, 0.9)  # completes the rung
    atomic_write_json(tmp_path / RUNGS_FILE, h.to_json())
    assert read_halving(tmp_path / RUNGS_FILE).decided(2) is not None
