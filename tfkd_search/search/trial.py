"""One trial in a Ray worker process: `train()` with the searched values, reporting every epoch to Tune."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..overrides import with_overrides
from ..runfolder import VAL_CORRECT, TrialRecord, windowed
from ..spaces import Choice, Grid, IntRange, LogUniform, Uniform

# Tune ranks and schedules on this key: the space's metric averaged over the last `window` epochs.
SCORE = "score"
# The result key that carries why a trial's step went eager (once; `trainer.StepRunner`).
EAGER_REASON = "eager_reason"
# Score reported for a diverged trial so that schedulers and searchers move away from it.
WORST = {"max": 0.0, "min": 1e9}
STATE_FILE = "state.pt"


def to_tune(dist: Any) -> Any:
    """One of our distributions as a Ray Tune domain. Our `int` is inclusive on both ends."""
    from ray import tune

    match dist:
        case Grid(values=v):
            return tune.grid_search(list(v))
        case Choice(values=v):
            return tune.choice(list(v))
        case Uniform(low=lo, high=hi):
            return tune.uniform(lo, hi)
        case LogUniform(low=lo, high=hi):
            return tune.loguniform(lo, hi)
        case IntRange(low=lo, high=hi):
            return tune.randint(lo, hi + 1)  # Tune's randint excludes its upper bound
    raise TypeError(f"unknown distribution {dist!r}")


class TrialOutOfMemory(RuntimeError):
    """A trial ran out of GPU memory; the message says what to change (the other trials go on)."""


def oom_advice(cfg: Any, gpu_share: float, detail: str) -> str:
    per_gpu = round(1 / gpu_share) if gpu_share else 1
    fewer = (f"fewer trials per GPU (search.resources.gpu: {min(1.0, gpu_share * 2):g} runs "
             f"{max(1, per_gpu // 2)} per GPU instead of {per_gpu})" if per_gpu > 1 else
             "a GPU with more memory")
    from ..modelref import model_label

    return (f"CUDA out of memory in a trial of {model_label(cfg.model)} at batch "
            f"{cfg.optim.batch_size} with {per_gpu} trial(s) per GPU: use {fewer}, or a smaller batch "
            f"(base.optim.batch_size; the lr follows it through optim.lr_batch) "
            f"[{detail.splitlines()[0][:200]}]")


def train_explaining_oom(train: Any, cfg: Any, gpu_share: float, **kwargs: Any) -> Any:
    """`train(cfg, **kwargs)`, with an out-of-memory error turned into one that says what to change."""
    import torch

    try:
        return train(cfg, **kwargs)
    except torch.OutOfMemoryError as exc:
        raise TrialOutOfMemory(oom_advice(cfg, gpu_share, str(exc))) from None


def run_trial(params: dict[str, Any], *, base: dict[str, Any], metric: str, mode: str, window: int,
              rungs: Sequence[int], cpus: float, gpu_share: float, source: str,
              registry: Any = None) -> None:
    """Ray Tune function trainable: one trial = one `train()` with the searched values applied.

    Checkpoints go to Tune only where resume and the scheduler need them
    (`packing.wants_checkpoint`): at the rung epochs (a trial paused there restarts from it), every
    `checkpoint_every` epochs and at the end. A trial restored from a checkpoint first repeats its
    last report, so the scheduler decides about it again from the same numbers (it may have been
    paused at a rung when the driver stopped). With a host `registry` the trial trains packed with
    the other trials of its GPU in that GPU's host process (`search.hosting`), otherwise here."""
    import torch
    from ray import tune

    from ..config import build_run_config
    from ..packing import wants_checkpoint
    from ..trainer import EpochReport, train

    cfg = build_run_config(with_overrides(base, params), source=source, prefix="base")
    cfg = cfg.model_copy(update={"threads": cfg.threads or max(1, int(cpus))})
    state = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
    values: list[float] = []
    keep = set(rungs)
    if state is not None and state.get("history"):
        values = [float(h.get(metric, float("nan"))) for h in state["history"]]
        if int(state["epoch"]) in keep:  # it may have been paused at this rung: ask again
            last = dict(state["history"][-1])
            tune.report(_result(last, int(state["epoch"]), metric, window, values, diverged=False))

    def report(ep: EpochReport) -> None:
        m = dict(ep.metrics)
        values.append(float(m.get(metric, float("nan"))))
        diverged = ep.status == "diverged"
        result: dict[str, Any] = _result(m, ep.epoch, metric, window, values, diverged=diverged)
        if ep.eager_reason:
            result[EAGER_REASON] = ep.eager_reason
        if ep.val_correct:
            result[VAL_CORRECT] = ep.val_correct
        if diverged:
            # A diverged trial is a bad region, not a crash: report the worst score so the scheduler
            # stops it and the searcher learns to avoid the region; the search goes on.
            result[SCORE] = WORST[mode]
            tune.report(result)
            return
        if wants_checkpoint(ep.epoch, ep.epochs, keep, cfg.checkpoint_every):
            with tempfile.TemporaryDirectory(prefix="tfkd-ckpt-") as tmp:
                torch.save(ep.make_checkpoint(), Path(tmp) / STATE_FILE)
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(tmp))
        else:
            tune.report(result)

    if registry is not None:
        from .hosting import hosted_train

        hosted_train(registry, tune.get_context().get_trial_id(), cfg, resume=state, rungs=keep,
                     checkpoint_every=cfg.checkpoint_every, report=report,
                     oom_error=lambda detail: TrialOutOfMemory(oom_advice(cfg, gpu_share, detail)))
    else:
        train_explaining_oom(train, cfg, gpu_share, report=report, resume=state)


def trainable(fn: Any, space: Any, ranking: Any, *, base: dict[str, Any], gpu_share: float,
              rungs: Sequence[int], registry: Any = None) -> Any:
    """`fn` (`run_trial`, `run_finalist`) as a Tune trainable: the search's base config, ranking and
    rungs bound to it, the space's resources per trial."""
    from ray import tune

    cpu = space.spec.search.resources.cpu
    return tune.with_resources(
        tune.with_parameters(fn, base=base, metric=ranking.metric, mode=ranking.mode,
                             window=ranking.window, rungs=list(rungs), cpus=cpu, gpu_share=gpu_share,
                             source=space.source, registry=registry),
        {"cpu": cpu, "gpu": gpu_share})


def run_config(space: Any, *, name: str, storage_path: str, callback: Any) -> Any:
    """Tune's RunConfig of a search stage: the space's retries, one checkpoint kept per trial."""
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig

    return RunConfig(
        name=name, storage_path=storage_path, verbose=0, callbacks=[callback],
        failure_config=FailureConfig(max_failures=space.spec.search.max_failures),
        # num_to_keep=1: Tune snapshots the experiment state after every trial checkpoint (it forces
        # one once a trial has made num_to_keep checkpoints since the last), so a driver killed right
        # after a trial's last epoch resumes that trial from its final checkpoint instead of training
        # its last epoch again
        checkpoint_config=CheckpointConfig(num_to_keep=1))


def restore(path: str, fn: Any) -> Any:
    """The Tuner of an interrupted stage at `path`: unfinished trials continue, errored ones stay."""
    from ray.tune import Tuner

    return Tuner.restore(path, fn, resume_unfinished=True, resume_errored=False,
                         restart_errored=False)


def run_finalist(config: dict[str, Any], **kwargs: Any) -> None:
    """Ray Tune trainable of the finalists stage (`finalstage`): one planned run, i.e. `run_trial`
    with the run's config changes (searched values or a baseline's method, and its seed)."""
    run_trial(dict(config["run"]["overrides"]), **kwargs)


def record_of(result: Any, params: dict[str, Any], *, budget: int, ranking: Any) -> TrialRecord:
    """A Tune `Result` as the run folder's `TrialRecord` (`params`: the values it ran with)."""
    m = dict(result.metrics or {})
    trial_id = str(m.get("trial_id") or (result.path or "").rstrip("/").rsplit("trial_", 1)[-1])
    df = result.metrics_dataframe
    reports = df.to_dict("records") if df is not None and len(df) else ([m] if m else [])
    error = None
    if result.error is not None:
        error = (str(result.error).strip().splitlines() or [""])[-1][:500]
    return TrialRecord.from_reports(trial_id, reports, params, budget=budget, ranking=ranking,
                                    error=error)


def _result(metrics: dict[str, Any], epoch: int, metric: str, window: int, values: list[float], *,
            diverged: bool) -> dict[str, float]:
    out = {k: float(v) for k, v in metrics.items()}
    out["epoch"] = epoch
    out["diverged"] = 1.0 if diverged else 0.0
    out[SCORE] = windowed(values, window)
    return out
