"""Final runs (`tfkd-search train`): one or more seeds of a run config, each in its run folder,
sequentially or in parallel on GPUs, tracked in MLflow beside searches.

The trainer writes no files: `RunWriter` is the report callback that keeps a run folder
(`config.json`, `metrics.parquet`, `checkpoint.pt`, `summary.json`).
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import TEACHER_METHODS, USER_DATASETS, RunConfig, build_run_config, config_to_dict
from .overrides import flatten
from .errors import ConfigError, DataError, EnvironmentProblem
from .io import (atomic_torch_save, atomic_write_json, atomic_write_parquet, ensure_writable_dir,
                 load_checkpoint)

Printer = Callable[[str], None]
CHECKPOINT = "checkpoint.pt"


class RunWriter:
    """The run folder of one training run, written from the trainer's epoch reports.

    `checkpoint.pt` every `checkpoint_every` epochs and at the end (what `--resume` continues from),
    `epoch_<N>.pt` for the epochs in `keep_checkpoints` (e.g. teachers for Re-KD / De-KD)."""

    def __init__(self, cfg: RunConfig, out: Path, *, then: Callable[[Any], None] | None = None) -> None:
        self.cfg, self.out, self.then = cfg, Path(out), then
        self.history: list[dict[str, float]] = []
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out / "config.json", config_to_dict(cfg))

    def resume_state(self, resume: bool) -> dict[str, Any] | None:
        path = self.out / CHECKPOINT
        if not resume or not path.exists():
            return None
        state = load_checkpoint(path, "resume checkpoint")
        self.history = [dict(h) for h in state.get("history", [])]
        return state

    def __call__(self, ep: Any) -> None:
        import pandas as pd

        self.history.append(dict(ep.metrics))
        atomic_write_parquet(pd.DataFrame(self.history), self.out / "metrics.parquet")
        keep = ep.epoch in self.cfg.keep_checkpoints
        save = ep.epoch % self.cfg.checkpoint_every == 0 or ep.epoch == ep.epochs
        if ep.status != "diverged" and (save or keep):
            ckpt = ep.make_checkpoint()
            if save:
                atomic_torch_save(ckpt, self.out / CHECKPOINT)
            if keep:
                atomic_torch_save(ckpt, self.out / f"epoch_{ep.epoch}.pt")
        if self.then is not None:
            self.then(ep)

    def finish(self, result: Any) -> Any:
        result.run_dir = str(self.out)
        atomic_write_json(self.out / "summary.json", result.summary())
        return result


def run_one(cfg: RunConfig, out: Path, *, resume: bool = False, data: Any = None,
            report: Callable[[Any], None] | None = None, progress: bool = False) -> Any:
    """Train `cfg` into the run folder `out` (continuing from its checkpoint with `resume`)."""
    from .trainer import train

    writer = RunWriter(cfg, out, then=report)
    state = writer.resume_state(resume)
    hook = StepProgress(sys.stderr) if progress else None
    return writer.finish(train(cfg, data=data, report=writer, resume=state, on_step=hook))


class StepProgress:
    """A progress line within a slow epoch, on a terminal only (nothing in logs and CI): after
    `after` seconds of an epoch, redraw `step/steps` at most every `every` seconds."""

    def __init__(self, stream: Any, after: float = 5.0, every: float = 1.0) -> None:
        self.stream, self.after, self.every = stream, after, every
        self.live = bool(getattr(stream, "isatty", lambda: False)())
        self.t0 = self.last = 0.0

    def __call__(self, step: int, steps: int) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if step == 1:
            self.t0, self.last = now, now
        elif step == steps:
            if now - self.t0 >= self.after:
                self.stream.write("\r\033[K")
                self.stream.flush()
        elif now - self.t0 >= self.after and now - self.last >= self.every:
            self.last = now
            rate = step / max(now - self.t0, 1e-9)
            self.stream.write(f"\r  step {step}/{steps}  ({rate:.1f} steps/s, "
                              f"{(steps - step) / rate:.0f} s left in this epoch)\033[K")
            self.stream.flush()


def seeds_for(cfg: RunConfig, n: int | None) -> list[int]:
    """`--seeds N`: the config's first N seeds (or seed, seed+1, ...); default: the config's list."""
    listed = list(cfg.seeds) if cfg.seeds else [cfg.seed]
    if n is None:
        return listed
    if n < 1:
        raise ConfigError(f"--seeds {n}: need at least 1 seed")
    return listed[:n] if len(listed) >= n else listed + [max(listed) + i + 1
                                                         for i in range(n - len(listed))]


def epoch_line(prefix: str, m: dict[str, float], epochs: int) -> str:
    val = "" if math.isnan(m["val_acc"]) else f"  val_acc {m['val_acc']:.4f}  val_loss {m['val_loss']:.4f}"
    return (f"{prefix}epoch {int(m['epoch'])}/{epochs}  loss {m['train_loss']:.4f} "
            f"(ce {m['train_ce']:.4f}, kl {m['train_kl']:.4f}){val}  lr {m['lr']:.4g}  "
            f"{m['epoch_seconds']:.2f} s  {m['images_per_s']:.0f} img/s")


def prepare_out(out: Path, seeds: list[int], resume: bool) -> None:
    for seed in seeds:
        ck = out / f"seed{seed}" / "checkpoint.pt"
        if ck.exists() and not resume:
            raise ConfigError(f"{ck.parent} already holds a run; pass --resume to continue it or "
                              f"--out NEW_FOLDER")
    try:
        ensure_writable_dir(out)
    except OSError as exc:
        raise EnvironmentProblem(f"--out {out}: cannot write there ({exc.strerror or exc}); pass a "
                                 f"writable --out or --storage") from None


def check_teacher(cfg: RunConfig, in_channels: int, source: str = "config", prefix: str = "",
                  num_classes: int | None = None) -> None:
    """Load the teacher checkpoint of a kd/tfkd_self config on the CPU: a missing, truncated or
    mismatched (architecture, class count, channels) file fails here, before any run starts."""
    if cfg.method not in TEACHER_METHODS or cfg.teacher is None:
        return
    import torch

    from .errors import CheckpointError
    from .trainer import load_teacher

    try:
        load_teacher(cfg, in_channels, torch.device("cpu"), num_classes)
    except (CheckpointError, ConfigError) as err:  # ConfigError: the architecture a checkpoint names
        raise type(err)(f"{source}: {prefix}teacher.checkpoint: {err}") from None


def check_dataset(cfg: RunConfig, source: str = "config", prefix: str = "") -> Any:
    """The facts of `cfg`'s dataset (data.describe_dataset: every check of the data, no decoding),
    then the config checks that need its class count (imagefolder/npz: loss.a > 1/C)."""
    from .data import describe_dataset

    try:
        facts = describe_dataset(cfg.data, with_test=cfg.evaluate_test)
    except DataError as err:
        raise DataError(f"{source}: {prefix}data: {err}") from None
    if cfg.data.dataset in USER_DATASETS:
        build_run_config(config_to_dict(cfg), source, prefix.rstrip("."),
                         num_classes=facts.num_classes)
    return facts


def check_fits(line: str, fits: bool, fix: str) -> None:
    """A dataset too large for the GPU's memory is an error before anything starts."""
    if not fits:
        raise DataError(f"the resident dataset does not fit the GPU: {line}; {fix}")


def preflight(cfg: RunConfig, source: str = "config", prefix: str = "", *, load: bool = True,
              models: bool = True, origins: dict[str, str] | None = None
              ) -> tuple[Any, Any, list[Any]]:
    """Check the dataset, the models (`preflight_model.check_models`, unless `models` is false: a
    search checks them itself) and the teacher, and load the data of `cfg`, before any folder or
    MLflow run is made, so that bad data, a model that does not build, a bad checkpoint or a
    missing dataset fails in seconds and leaves nothing behind. Returns (DatasetFacts, the loaded
    DataSplits or None without `load`: train() can reuse them, the checked models' facts). Loading
    an imagefolder/npz dataset decodes it into the cache once. `origins`: the `--set` overrides by
    path, named in a model's error instead of the file."""
    from .preflight_model import check_models, shape_of
    from .trainer import load_run_data

    facts = check_dataset(cfg, source, prefix)
    model_facts = (check_models(cfg, source, prefix, origins=origins, shape=shape_of(facts))
                   if models else [])
    check_teacher(cfg, facts.channels, source, prefix, facts.num_classes)
    return facts, (load_run_data(cfg) if load else None), model_facts


def train_seeds(cfg: RunConfig, seeds: list[int], out: Path, *, resume: bool, gpus: float,
                tracker: Any | None, printer: Printer, data: Any = None, progress: bool = False,
                ray_options: Any = None, facts: Any = None, models: list[Any] = ()) -> list[Any]:
    """Train one run per seed (sequentially, or in parallel through Ray when `gpus` > 0).

    `data`, `facts`, `models`: the splits, the dataset's facts and the checked models' facts that
    preflight() returned (the splits are shared by the sequential seeds: the split does not depend
    on the seed; the facts go to MLflow)."""
    parent = None
    if tracker is not None:
        parent = tracker.start_parent(f"train:{out.resolve()}", f"train-{cfg.name}",
                                      tags={"tfkd.role": "final"})
        tracker.log_params(parent, {**flatten(config_to_dict(cfg)),
                                    **{k: v for f in models for k, v in f.mlflow_params().items()}})
        if facts is not None:
            tracker.log_dataset(parent, facts)
    cfgs = {s: cfg.model_copy(update={"seed": s}) for s in seeds}
    results: list[Any] = []
    if gpus and len(seeds) > 1:
        results = train_parallel([(cfgs[s], out / f"seed{s}") for s in seeds], gpus=gpus,
                                 resume=resume, printer=printer, ray_options=ray_options)
        if tracker is not None:
            for seed, res in zip(seeds, results):
                run = tracker.child(f"{parent}:seed{seed}", f"seed{seed}", params={"seed": seed})
                for row in res.history:
                    tracker.log_epoch(run, row, int(row["epoch"]))
                tracker.end_child(f"{parent}:seed{seed}", res.status, _final_tags(res))
    else:
        for seed in seeds:
            run = (tracker.child(f"{parent}:seed{seed}", f"seed{seed}", params={"seed": seed})
                   if tracker is not None else None)
            prefix = f"seed {seed} " if len(seeds) > 1 else ""

            def report(ep: Any, run: Any = run, prefix: str = prefix) -> None:
                printer(epoch_line(prefix, dict(ep.metrics), ep.epochs))
                if ep.eager_reason:
                    printer(f"{prefix}note: {ep.eager_reason}")
                if tracker is not None:
                    tracker.log_epoch(run, ep.metrics, ep.epoch)

            res = run_one(cfgs[seed], out / f"seed{seed}", resume=resume, data=data, report=report,
                          progress=progress)
            results.append(res)
            if tracker is not None:
                tracker.end_child(f"{parent}:seed{seed}", res.status, _final_tags(res))
    summary = summarize(results)
    if tracker is not None and parent is not None:
        tracker.log_metrics(parent, {k: v for k, v in summary.items() if isinstance(v, float)})
        tracker.finish(parent, "FINISHED")
    printer(summary_text(summary, seeds))
    return results


def _train_remote(cfg_dict: dict[str, Any], run_dir: str, resume: bool) -> Any:
    return run_one(build_run_config(cfg_dict), Path(run_dir), resume=resume)


def train_parallel(runs: list[tuple[RunConfig, Path]], *, gpus: float, resume: bool,
                   printer: Printer, ray_options: Any = None) -> list[Any]:
    """Final runs (config, run folder) in parallel, one Ray task with one GPU each; results in order."""
    from .search import RayOptions, init_ray

    ray = init_ray(ray_options or RayOptions(), gpus, printer)
    task = ray.remote(num_gpus=1, num_cpus=1)(_train_remote)
    refs = [task.remote(config_to_dict(cfg), str(out), resume) for cfg, out in runs]
    results = []
    for (cfg, out), ref in zip(runs, refs):
        res = ray.get(ref)
        test = f"{res.test_acc:.4f}" if res.test_acc is not None else "n/a"
        printer(f"{out}: {res.status}, best val_acc {_num(res.best_val_acc)}, test_acc {test}")
        results.append(res)
    return results


def _num(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _final_tags(res: Any) -> dict[str, Any]:
    from .tracking import GRAPHS_TAG

    return {"tfkd.best_val_acc": res.best_val_acc, "tfkd.test_acc": res.test_acc,
            "tfkd.epochs": res.epochs,
            GRAPHS_TAG: f"off: {res.eager_reason}" if res.eager_reason else None}


def summarize(results: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(results),
                           "diverged": sum(r.status == "diverged" for r in results)}
    for key in ("test_acc", "best_val_acc", "last_val_acc"):
        vals = [float(getattr(r, key)) for r in results
                if getattr(r, key) is not None and math.isfinite(float(getattr(r, key)))
                and float(getattr(r, key)) >= 0]
        if vals:
            out[f"{key}_mean"] = statistics.fmean(vals)
            out[f"{key}_n"] = len(vals)
            if len(vals) > 1:
                out[f"{key}_std"] = statistics.stdev(vals)
    return out


def summary_text(s: dict[str, Any], seeds: list[int]) -> str:
    parts = [f"{s['runs']} run(s), seeds {seeds}"]
    if s["diverged"]:
        parts.append(f"{s['diverged']} diverged")
    for key in ("test_acc", "best_val_acc", "last_val_acc"):
        if f"{key}_mean" in s:
            spread = f" ± {s[key + '_std']:.4f} (n={s[key + '_n']})" if f"{key}_std" in s else ""
            parts.append(f"{key} {s[key + '_mean']:.4f}{spread}")
    return "summary: " + ", ".join(parts)


def resolve_paths(cfg: RunConfig) -> RunConfig:
    """Make relative data/teacher paths absolute (trials and Ray tasks run in other folders)."""
    from .search.storage import resolve_paths as resolve_dict

    return build_run_config(resolve_dict(config_to_dict(cfg)))
