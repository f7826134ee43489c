"""tfkd_search.scheduling: rung placement, the ASHA rule, and synchronous halving that decides the same
for every arrival order (randomized permutations, no hypothesis)."""

from __future__ import annotations

import json
import math
import random

import pytest

from tfkd_search.scheduling import Decision, Halving, rung_epochs


def test_rung_epochs_geometric_and_explicit():
    assert rung_epochs(70, 10, 3) == [10, 30]          # the CIFAR-100 spaces: 90 is past the budget
    assert rung_epochs(8, 2, 2) == [2, 4]
    assert rung_epochs(12, 1, 2) == [1, 2, 4, 8]
    assert rung_epochs(12, 1, 1.5) == [1, 2, 3, 4, 6, 8]  # ceil, as Ray's epoch >= milestone
    assert rung_epochs(70, 10, 3, rungs=[65, 62, 80, 0]) == [62, 65]
    with pytest.raises(ValueError):
        rung_epochs(10, 0, 2)


def test_async_rule_is_rays_percentile():
    h = Halving([2], 3, "max", synchronous=False)
    assert h.on_result("a", 0, 1, 0.1) is Decision.CONTINUE   # not a rung
    assert h.on_result("a", 0, 2, 0.5) is Decision.CONTINUE   # first at the rung
    assert h.on_result("b", 1, 2, 0.4) is Decision.STOP       # below the 67th percentile of [.4, .5]
    assert h.on_result("c", 2, 2, 0.9) is Decision.CONTINUE
    assert h.on_result("d", 3, 2, float("nan")) is Decision.STOP  # NaN is the worst value
    m = Halving([2], 2, "min", synchronous=False)
    assert m.on_result("a", 0, 2, 1.0) is Decision.CONTINUE
    assert m.on_result("b", 1, 2, 2.0) is Decision.STOP
    assert m.on_result("c", 2, 2, 0.5) is Decision.CONTINUE


def test_sync_pauses_until_the_rung_is_complete_then_keeps_the_best():
    h = Halving([2], 2, "max", synchronous=True, total_trials=4)
    assert h.on_result("a", 0, 2, 0.7) is Decision.PAUSE
    assert h.on_result("b", 1, 2, 0.9) is Decision.PAUSE
    assert h.releasable() == {}
    assert h.on_result("c", 2, 1, 0.1) is Decision.CONTINUE
    h.on_end("c")                                             # ended before the rung (errored)
    assert h.releasable() == {}
    assert h.on_result("d", 3, 2, 0.7) is Decision.STOP       # completes it: 3 reached, keep 1
    assert h.releasable() == {"a": Decision.STOP, "b": Decision.CONTINUE}
    assert h.releasable() == {}                               # each handed out once
    assert h.on_result("b", 1, 2, 0.9) is Decision.CONTINUE   # repeated report after a restart


def test_sync_ties_go_to_the_lower_order():
    h = Halving([1], 2, "max", synchronous=True, total_trials=2)
    assert h.on_result("late", 5, 1, 0.5) is Decision.PAUSE
    assert h.on_result("early", 2, 1, 0.5) is Decision.CONTINUE
    assert h.releasable() == {"late": Decision.STOP}


def test_sync_unknown_total_waits_for_close_and_added_trials():
    h = Halving([1], 2, "max", synchronous=True, total_trials=None)
    h.on_add("z", 2)
    assert h.on_result("x", 0, 1, 0.3) is Decision.PAUSE
    assert h.on_result("y", 1, 1, 0.6) is Decision.PAUSE
    h.close()
    assert h.releasable() == {}                               # z has not reported yet
    assert h.on_result("z", 2, 1, 0.1) is Decision.STOP
    assert h.releasable() == {"x": Decision.STOP, "y": Decision.CONTINUE}
    assert h.on_result("w", 3, 1, 0.9) is Decision.CONTINUE   # late arrival beats the kept value


def _simulate(h: Halving, curves: dict[str, list[float]], rng: random.Random, concurrency: int):
    """Trials start in proposal order on `concurrency` slots with random epoch durations; PAUSE frees
    the slot, releasable() resumes (CONTINUE) or ends (STOP). Returns trial -> epochs trained."""
    budget = len(next(iter(curves.values())))
    order = {t: i for i, t in enumerate(curves)}
    queue = list(curves)
    resume: list[str] = []
    running: dict[str, tuple[float, int]] = {}   # trial -> (time its next epoch ends, that epoch)
    trained = {t: 0 for t in curves}
    now = 0.0

    def start(t: str) -> None:
        running[t] = (now + rng.uniform(0.5, 2.0), trained[t] + 1)

    while queue or running or resume:
        while len(running) < concurrency and (resume or queue):
            start(resume.pop(0) if resume else queue.pop(0))
        if not running:
            raise AssertionError(f"deadlock: paused {h.paused()}")
        t, (now, epoch) = min(running.items(), key=lambda kv: kv[1][0])
        del running[t]
        trained[t] = epoch
        d = h.on_result(t, order[t], epoch, curves[t][epoch - 1])
        if d is Decision.CONTINUE and epoch < budget:
            running[t] = (now + rng.uniform(0.5, 2.0), epoch + 1)
        elif d is not Decision.PAUSE:
            h.on_end(t)
        for r, d2 in h.releasable().items():
            if d2 is Decision.CONTINUE:
                resume.append(r)
            else:
                h.on_end(r)
    return trained


@pytest.mark.parametrize("seed", range(5))
def test_sync_is_order_independent(seed):
    rng = random.Random(seed)
    n, budget = 20, 12
    # noisy curves with ties and a NaN (a diverged trial) to exercise every rule
    curves = {f"t{i:02d}": [round(rng.gauss(0.5 + 0.02 * e, 0.1), 2) for e in range(budget)]
              for i in range(n)}
    curves["t07"][3] = float("nan")
    rungs = rung_epochs(budget, 2, 2)
    results = set()
    for trial in range(30):
        h = Halving(rungs, 2, "max", synchronous=True, total_trials=n)
        items = list(curves.items())
        rng.shuffle(items)                                       # a different proposal/start order
        shuffled = dict(items)
        order = {t: int(t[1:]) for t in curves}
        h2 = _OrderProxy(h, order)
        trained = _simulate(h2, shuffled, random.Random(1000 * seed + trial), rng.randint(1, 8))
        results.add(tuple(sorted(trained.items())))
    assert len(results) == 1
    trained = dict(next(iter(results)))
    assert sum(e == budget for e in trained.values()) == max(1, n // 2 // 2 // 2)  # 20 -> 10 -> 5 -> 2
    asyn = set()
    for trial in range(30):
        items = list(curves.items())
        rng.shuffle(items)
        h = _OrderProxy(Halving(rungs, 2, "max", synchronous=False), {t: int(t[1:]) for t in curves})
        asyn.add(tuple(sorted(_simulate(h, dict(items), random.Random(trial), 4).items())))
    assert len(asyn) > 1, "async ASHA should depend on the arrival order"


class _OrderProxy:
    """Gives the Halving the trials' fixed proposal order whatever order the simulation starts them."""

    def __init__(self, h: Halving, order: dict[str, int]) -> None:
        self.h, self.order = h, order

    def on_result(self, t, _order, epoch, value):
        return self.h.on_result(t, self.order[t], epoch, value)

    def __getattr__(self, name):
        return getattr(self.h, name)


def test_state_round_trip_decides_the_same():
    rng = random.Random(3)
    curves = {f"t{i}": [rng.random() for _ in range(8)] for i in range(9)}
    rungs = [2, 4]
    full = Halving(rungs, 3, "max", synchronous=True, total_trials=9)
    events = [(t, e) for e in range(1, 9) for t in curves]
    log_full, log_resumed = [], []
    h = Halving(rungs, 3, "max", synchronous=True, total_trials=9)
    alive_full, alive = set(curves), set(curves)
    for k, (t, e) in enumerate(events):
        if k == len(events) // 3:  # "driver crash": save, reload through JSON text
            h = Halving.from_json(json.loads(json.dumps(h.to_json())))
        for hh, log, al in ((full, log_full, alive_full), (h, log_resumed, alive)):
            if t in al:
                d = hh.on_result(t, int(t[1:]), e, curves[t][e - 1])
                if d is Decision.STOP:
                    al.discard(t)
                log.append((t, e, d.value, sorted((x, y.value) for x, y in hh.releasable().items())))
                for x, y in log[-1][3]:
                    if y == "STOP":
                        al.discard(x)
    assert log_full == log_resumed
    assert math.isclose(len(alive_full), 1)
