"""ASHA's rung records survive a restore (Ray restores the scheduler from its start-time pickle)."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import ray.cloudpickle as cloudpickle

from tfkd_search.search import make_asha


def _trial(i: int) -> SimpleNamespace:
    return SimpleNamespace(trial_id=f"t{i}")


def test_rungs_are_persisted_and_restored(tmp_path) -> None:
    f = tmp_path / "asha_rungs.json"
    sched = make_asha(rungs_file=f, time_attr="epoch", metric="val_acc", mode="max", max_t=8,
                      grace_period=2, reduction_factor=2)
    start_pickle = cloudpickle.dumps(sched)  # what Tuner writes to tuner.pkl before fit()
    for i, acc in enumerate([0.9, 0.8, 0.7, 0.6]):
        t = _trial(i)
        sched.on_trial_add(None, t)
        sched.on_trial_result(None, t, {"epoch": 1, "val_acc": acc})
        sched.on_trial_result(None, t, {"epoch": 2, "val_acc": acc})
    assert f.exists()

    # the driver dies; Ray restores the scheduler from the start-time pickle
    restored = pickle.loads(start_pickle)
    late = _trial(9)
    restored.on_trial_add(None, late)
    # with the records back, a poor trial at the first rung is stopped at once ...
    assert restored.on_trial_result(None, late, {"epoch": 2, "val_acc": 0.5}) == "STOP"
    # ... while without them (a fresh ASHA, as plain Ray restores it) it would continue
    fresh = make_asha(rungs_file=None, time_attr="epoch", metric="val_acc", mode="max", max_t=8,
                      grace_period=2, reduction_factor=2)
    fresh.on_trial_add(None, late)
    assert fresh.on_trial_result(None, late, {"epoch": 2, "val_acc": 0.5}) == "CONTINUE"


def test_restored_trials_unknown_to_the_scheduler_are_handled(tmp_path) -> None:
    sched = make_asha(rungs_file=tmp_path / "r.json", time_attr="epoch", metric="val_acc",
                      mode="max", max_t=4, grace_period=1, reduction_factor=2)
    t = _trial(1)  # never passed through on_trial_add (resumed from Ray's experiment state)
    assert sched.on_trial_result(None, t, {"epoch": 1, "val_acc": 0.5}) == "CONTINUE"
    sched.on_trial_complete(None, t, {"epoch": 4, "val_acc": 0.6})
    assert (tmp_path / "r.json").exists()
