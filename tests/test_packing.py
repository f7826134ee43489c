"""Trials packed in one process (`packing.TrialHost`) on the CPU stand-in: the same numbers as unpacked
trials, independent reports and checkpoints, resume, one trial's failure leaving the others running."""

from __future__ import annotations

import threading

import pytest
import torch

from tfkd_search.config import build_run_config
from tfkd_search.packing import HostedEnd, HostedEpoch, HostedError, TrialHost, wants_checkpoint
from tfkd_search.trainer import train

from _spaces import base_cfg


def _cfg(epochs: int = 3, **loss):
    doc = base_cfg(epochs)
    doc["loss"].update(loss)
    return build_run_config(doc)


def _drain(host: TrialHost, key: str) -> list:
    events = []
    while True:
        ev = host.next(key, timeout=120)
        events.append(ev)
        if not isinstance(ev, HostedEpoch):
            return events


def _histories_alone(cfgs):
    return [train(c).history for c in cfgs]


def _strip(rows):  # timings differ; everything else must be identical
    return [{k: v for k, v in r.items() if k not in ("epoch_seconds", "images_per_s")} for r in rows]


def test_packed_trials_train_exactly_like_unpacked_ones():
    cfgs = [_cfg(tau=1.0, a=0.5), _cfg(tau=4.0, a=0.9), _cfg(tau=10.0, a=0.99, alpha=0.9)]
    host = TrialHost("cpu")
    try:
        for i, c in enumerate(cfgs):
            host.open(f"t{i}", c)
        results: dict[str, list] = {}
        # the callers run concurrently, as the trials' Ray workers do
        threads = [threading.Thread(target=lambda k=f"t{i}": results.__setitem__(k, _drain(host, k)))
                   for i in range(len(cfgs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        host.stop()
    alone = _histories_alone(cfgs)
    for i in range(len(cfgs)):
        events = results[f"t{i}"]
        assert isinstance(events[-1], HostedEnd), events[-1]
        epochs = [e for e in events if isinstance(e, HostedEpoch)]
        assert [e.epoch for e in epochs] == [1, 2, 3]
        assert _strip([e.metrics for e in epochs]) == _strip(alone[i])
        assert events[-1].summary["status"] == "completed"
    # the configs differ, so the packed trials did not share a model
    assert len({r[-1]["train_loss"] for r in alone}) == 3


def test_checkpoints_only_where_asked_and_a_resume_continues_identically():
    cfg = _cfg(epochs=4)
    host = TrialHost("cpu")
    try:
        host.open("a", cfg, rungs=[2], checkpoint_every=100)
        events = _drain(host, "a")
        kept = {e.epoch: e.checkpoint for e in events if isinstance(e, HostedEpoch)}
        assert [ep for ep, c in kept.items() if c is not None] == [2, 4]  # the rung and the end
        ckpt = kept[2]
        assert ckpt["epoch"] == 2
        assert all(t.device.type == "cpu" for t in ckpt["model"].values())
        host.open("a", cfg, resume=ckpt, rungs=[2], checkpoint_every=100)
        resumed = _drain(host, "a")
    finally:
        host.stop()
    full = [e.metrics for e in events if isinstance(e, HostedEpoch)]
    again = [e.metrics for e in resumed if isinstance(e, HostedEpoch)]
    assert [e.epoch for e in resumed if isinstance(e, HostedEpoch)] == [3, 4]
    assert _strip(again) == _strip(full[2:])


def test_a_failing_trial_is_reported_and_the_others_go_on(tmp_path):
    doc = base_cfg(3, data={"dataset": "cifar10", "data_dir": str(tmp_path / "nope")})
    bad = build_run_config(doc)  # the images are missing: found when the trial loads them
    host = TrialHost("cpu")
    try:
        host.open("bad", bad)
        host.open("good", _cfg())
        err = host.next("bad", timeout=120)
        good = _drain(host, "good")
    finally:
        host.stop()
    assert isinstance(err, HostedError)
    assert "nope" in err.message and not err.out_of_memory
    assert isinstance(good[-1], HostedEnd) and good[-1].summary["status"] == "completed"


def test_train_drives_one_trial_from_the_calling_thread(tmp_path):
    cfg = _cfg(epochs=2)
    host = TrialHost("cpu")
    try:
        seen: list[int] = []
        summary = host.train("t", cfg, report=lambda ep: seen.append(ep.epoch))
        with pytest.raises(RuntimeError, match="nope"):
            host.train("bad", build_run_config(base_cfg(2, data={"dataset": "cifar10",
                                                                 "data_dir": str(tmp_path / "nope")})))
        assert host.keys() == []  # both closed
    finally:
        host.stop()
    assert seen == [1, 2] and summary["status"] == "completed"
    assert summary["best_val_acc"] == train(cfg).best_val_acc


def test_a_replaced_trial_stops_and_its_waiting_caller_hears_it():
    host = TrialHost("cpu")
    try:
        host.open("x", _cfg(epochs=3), owner="worker-1")
        first = host.next("x", timeout=120)
        assert isinstance(first, HostedEpoch) and first.epoch == 1
        # the same worker starts another trial (Ray reuses actors): the old one is dropped
        host.open("y", _cfg(epochs=2), owner="worker-1")
        with pytest.raises(KeyError, match="'x'"):
            host.next("x", timeout=5)
        assert host.keys() == ["y"]
        assert isinstance(_drain(host, "y")[-1], HostedEnd)
        assert host.keys() == []
    finally:
        host.stop()


def test_a_caller_that_stops_asking_holds_its_trial_at_the_epoch_end():
    host = TrialHost("cpu")
    try:
        host.open("slow", _cfg(epochs=3))
        assert host.next("slow", timeout=120).epoch == 1
        host.open("other", _cfg(epochs=2))
        assert isinstance(_drain(host, "other")[-1], HostedEnd)  # runs while "slow" waits
        # "slow" has not been asked again: it has not trained epoch 2 meanwhile
        trial = host._trials["slow"]
        assert trial.waiting and not trial.outbox
        assert host.next("slow", timeout=120).epoch == 2
    finally:
        host.stop()


@pytest.mark.parametrize("epoch,epochs,rungs,every,want", [
    (2, 10, {2, 6}, 100, True), (3, 10, {2, 6}, 100, False), (10, 10, set(), 100, True),
    (5, 10, set(), 5, True), (4, 10, set(), 5, False),
])
def test_wants_checkpoint(epoch, epochs, rungs, every, want):
    assert wants_checkpoint(epoch, epochs, rungs, every) is want


def test_datasets_are_loaded_once_per_host():
    host = TrialHost("cpu")
    try:
        a = host._splits(_cfg())
        b = host._splits(_cfg(tau=2.0))
    finally:
        host.stop()
    assert a is b and torch.equal(a.train_x, b.train_x)


def test_preload_raises_in_the_caller_and_the_trials_share_what_it_loaded(tmp_path):
    from tfkd_search.errors import DataError
    from tfkd_search.trainer import load_run_data

    cfg = _cfg(epochs=2)
    given = load_run_data(cfg)
    host = TrialHost("cpu")
    try:
        with pytest.raises(DataError, match="nope"):
            host.preload(build_run_config(base_cfg(2, data={"dataset": "cifar10",
                                                            "data_dir": str(tmp_path / "nope")})))
        host.preload(cfg, given)
        assert host._splits(_cfg(tau=2.0)).train_x is given.train_x  # not loaded again
        assert host.train("t", cfg)["status"] == "completed"
    finally:
        host.stop()
