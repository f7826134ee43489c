"""Several trials packed into one process on one device: `TrialHost`.

Why: a batch-128 step of a CIFAR ResNet leaves an H100 mostly idle, and K trials as K processes only
time-slice the GPU (measured on an H100, ResNet18, batch 128: 4 processes 3.00x the classic pipeline,
less than one CUDA-graph trial alone at 3.21x), while K trials in one process, each replaying its
CUDA graph on its own CUDA stream, overlap on the GPU (4 trials 4.16x; one batch-512 run 4.41x).
`benchmarks/results/throughput-H100.json` holds those figures; `benchmarks/throughput.py --streams`
measures them again.

How: every trial is a `trainer.training()` generator (the same code `train()` runs). One thread, the
host's loop, owns the device: it builds each trial at its first step and then advances the trials
one optimisation step each in turn, each under its own CUDA stream (on the CPU, the stand-in used by
the tests, the streams are left out and the interleaving is the same). Only this thread launches
device work, so CUDA graph capture never meets another thread's allocation. A trial that reaches the
end of an epoch hands its report (and its checkpoint, when the caller asked for one at that epoch)
to its caller and waits until the caller asks for the next one; the others go on meanwhile, so
reporting and checkpoint writing do not stall the GPU. A trial that fails (out of memory included)
hands its error to its caller and is dropped; the others go on.

The trials stay independent: each has its own model, optimizer, generator-seeded data order, report
stream and checkpoints, so a scheduler, a searcher, the tracker and a resume see them exactly as
unpacked trials (on the CPU the numbers are identical, which `tests/test_packing.py` checks).
Datasets are loaded once per host and shared read-only on the device.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import RunConfig
from .data import DataSplits
from .trainer import EpochReport, TrainResult, load_run_data, resolve_device, training


def wants_checkpoint(epoch: int, epochs: int, rungs: Collection[int], every: int) -> bool:
    """Whether a search trial saves a checkpoint after `epoch`: at the rungs (a trial paused there
    restarts from it), every `every` epochs (a crashed trial restarts from it) and at the end."""
    return epoch in rungs or epoch % every == 0 or epoch == epochs


@dataclass(frozen=True)
class HostedEpoch:
    """One epoch's report, as the host hands it to the trial's caller (picklable)."""

    epoch: int
    epochs: int
    metrics: dict[str, float]
    status: str
    checkpoint: dict[str, Any] | None
    eager_reason: str | None = None
    val_correct: str | None = None

    def as_report(self) -> EpochReport:
        ckpt = self.checkpoint

        def make_checkpoint() -> dict[str, Any]:
            if ckpt is None:
                raise RuntimeError(f"no checkpoint was kept at epoch {self.epoch}")
            return ckpt

        return EpochReport(epoch=self.epoch, epochs=self.epochs, metrics=self.metrics,
                           status=self.status, make_checkpoint=make_checkpoint,
                           eager_reason=self.eager_reason, val_correct=self.val_correct)


@dataclass(frozen=True)
class HostedEnd:
    """The trial's end: its `TrainResult` summary (history left out)."""

    summary: dict[str, Any]


@dataclass(frozen=True)
class HostedError:
    """The trial failed on the host; `kind` is the exception's class name."""

    kind: str
    message: str
    out_of_memory: bool


HostEvent = HostedEpoch | HostedEnd | HostedError


@dataclass(eq=False)
class _Trial:
    key: str
    cfg: RunConfig
    resume: Mapping[str, Any] | None
    rungs: frozenset[int]
    every: int
    owner: Any = None
    run: Any = None  # the training() generator, made on the loop thread
    stream: Any = None
    waiting: bool = False  # a report is out; the trial waits for its caller's next `next()`
    ended: bool = False
    outbox: list[HostEvent] = field(default_factory=list)


class TrialHost:
    """Runs the trials it is given, interleaved step by step on one device (see the module text).

    Thread-safe: `open`, `next`, `close` may be called from any thread (a Ray actor's request threads).
    """

    def __init__(self, device: str = "auto", *, max_trials: int = 64) -> None:
        self.device = resolve_device(device)
        self.max_trials = max_trials
        self._trials: dict[str, _Trial] = {}
        self._ended: list[_Trial] = []  # released by the loop thread, the only one touching the device
        self._data: dict[tuple[Any, ...], DataSplits] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self.opened = 0  # trial starts served (a resumed trial counts again)
        self._thread = threading.Thread(target=self._loop, name="tfkd-trial-host", daemon=True)
        self._thread.start()

    # ---- the callers' side ------------------------------------------------------------------------

    def open(self, key: str, cfg: RunConfig, *, resume: Mapping[str, Any] | None = None,
             rungs: Collection[int] = (), checkpoint_every: int = 1, owner: Any = None) -> None:
        """Start (or restart, replacing an earlier one of the same key) the trial `key`.

        `owner` is whatever identifies the caller; a new trial of the same owner replaces the
        owner's earlier ones (a reused Ray actor does not come back for its old trial)."""
        with self._cond:
            for old in [t for t in self._trials.values()
                        if t.key == key or (owner is not None and t.owner == owner)]:
                self._drop(old)
            if len(self._trials) >= self.max_trials:
                raise RuntimeError(f"this host already runs {len(self._trials)} trials (its limit); "
                                   f"give each trial a larger GPU share")
            self.opened += 1
            self._trials[key] = _Trial(key, cfg.model_copy(update={"device": str(self.device)}),
                                       resume, frozenset(rungs), max(1, checkpoint_every), owner)
            self._cond.notify_all()

    def next(self, key: str, timeout: float | None = None) -> HostEvent:
        """The trial's next event: blocks until its next epoch ends (or it ends or fails)."""
        with self._cond:
            trial = self._trials.get(key)
            if trial is None:
                raise KeyError(f"no trial {key!r} on this host (closed, or replaced by a newer one)")
            if trial.waiting and not trial.outbox:
                trial.waiting = False  # the caller took the last report: go on
                self._cond.notify_all()
            if not self._cond.wait_for(lambda: bool(trial.outbox) or trial.ended,
                                       timeout):
                raise TimeoutError(f"trial {key!r}: no event within {timeout} s")
            if not trial.outbox:
                raise KeyError(f"trial {key!r} was replaced or closed while waiting")
            event = trial.outbox.pop(0)
            if not isinstance(event, HostedEpoch):
                self._drop(trial)
            return event

    def close(self, key: str) -> None:
        with self._cond:
            trial = self._trials.get(key)
            if trial is not None:
                self._drop(trial)

    def train(self, key: str, cfg: RunConfig, *, report: Any = None) -> dict[str, Any]:
        """Train `cfg` on this host from the calling thread, like `trainer.train` (no rungs, one checkpoint
        at the end, dropped): every epoch goes to `report`; returns the result's summary. Several threads
        calling this at once are several packed trials. A failed trial raises (out of memory as
        `torch.OutOfMemoryError`)."""
        self.open(key, cfg, checkpoint_every=cfg.schedule.trained_epochs)
        try:
            return relay(lambda: self.next(key), report, torch.OutOfMemoryError)
        finally:
            self.close(key)

    def preload(self, cfg: RunConfig, data: DataSplits | None = None) -> None:
        """Put `cfg`'s dataset on the device now, from the calling thread and before any trial runs, so
        that a missing dataset raises here; `data`: the splits, if the caller has loaded them already."""
        self._splits(cfg, data)

    def keys(self) -> list[str]:
        with self._cond:
            return list(self._trials)

    def owners(self) -> dict[str, Any]:
        with self._cond:
            return {k: t.owner for k, t in self._trials.items()}

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            for t in list(self._trials.values()):
                self._drop(t)
            self._cond.notify_all()
        self._thread.join(timeout=30)

    # ---- the loop thread ------------------------------------------------------------------------------

    def _drop(self, trial: _Trial) -> None:  # caller holds the lock
        if self._trials.get(trial.key) is trial:
            del self._trials[trial.key]
        trial.ended = True
        self._ended.append(trial)
        self._cond.notify_all()

    def _runnable(self) -> list[_Trial]:
        return [t for t in self._trials.values() if not t.waiting and not t.ended]

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or bool(self._runnable()) or bool(self._ended))
                batch = [] if self._stopping else self._runnable()
            for trial in batch:
                self._advance(trial)
            del batch
            self._release_ended()
            if self._stopping:
                break

    def _stream(self, trial: _Trial) -> Any:
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        if trial.stream is None:
            trial.stream = torch.cuda.Stream(self.device)
        return torch.cuda.stream(trial.stream)

    def _advance(self, trial: _Trial) -> None:
        """One step of one trial (its setup, at its first step), under its own stream."""
        if trial.ended:
            return
        try:
            with self._stream(trial):
                if trial.run is None:
                    trial.run = training(trial.cfg, data=self._splits(trial.cfg), resume=trial.resume)
                    trial.resume = None
                event = next(trial.run)
                out: HostEvent | None = None
                if isinstance(event, EpochReport):
                    ckpt = (_to_cpu(event.make_checkpoint())
                            if event.status != "diverged"
                            and wants_checkpoint(event.epoch, event.epochs, trial.rungs, trial.every)
                            else None)
                    out = HostedEpoch(event.epoch, event.epochs, dict(event.metrics), event.status, ckpt,
                                      event.eager_reason, event.val_correct)
        except StopIteration as end:
            result: TrainResult = end.value
            out = HostedEnd(result.summary())
        except Exception as exc:  # noqa: BLE001 - handed to the trial's caller, the others go on
            out = HostedError(type(exc).__name__, str(exc),
                              isinstance(exc, torch.OutOfMemoryError))
        if out is None:
            return
        with self._cond:
            if trial.ended:  # replaced or closed meanwhile
                return
            trial.outbox.append(out)
            trial.waiting = True  # until the caller takes it (an end or an error: for good)
            self._cond.notify_all()

    def _release_ended(self) -> None:
        """Free what ended trials held (their generators keep the models and CUDA graphs alive)."""
        with self._cond:
            gone, self._ended = self._ended, []
        released = any(t.run is not None for t in gone)
        for t in gone:
            t.run, t.stream, t.resume = None, None, None
        if released and self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _splits(self, cfg: RunConfig, data: DataSplits | None = None) -> DataSplits:
        """The trial's dataset, loaded once per host and kept on the device (read-only, shared)."""
        d = cfg.data
        key = (d.dataset, str(d.data_dir), d.val_fraction, d.split_seed, cfg.evaluate_test,
               d.synthetic_size, d.image_size, d.num_classes, d.cache_dir)
        if key not in self._data:
            s = data if data is not None else load_run_data(cfg)
            moved = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v)
                     for k, v in s.__dict__.items()}
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # every trial's stream reads these
            self._data[key] = DataSplits(**moved)
        return self._data[key]


def relay(next_event: Callable[[], HostEvent], report: Any,
          oom_error: Callable[[str], BaseException]) -> dict[str, Any]:
    """Pass a hosted trial's epochs to `report` (when given) until the trial ends; returns its summary,
    or raises its failure (`oom_error(message)` when it ran out of memory). `next_event` fetches the
    trial's next event, from a host in this process or through a Ray actor."""
    while True:
        event = next_event()
        if isinstance(event, HostedEpoch):
            if report is not None:
                report(event.as_report())
            continue
        if isinstance(event, HostedEnd):
            return event.summary
        if event.out_of_memory:
            raise oom_error(event.message)
        raise RuntimeError(f"{event.kind}: {event.message}")


def _to_cpu(obj: Any) -> Any:
    """A checkpoint with every tensor copied to the CPU (it leaves the host's process)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)  # a copy even on the CPU: the trial goes on
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_cpu(v) for v in obj)
    return obj
