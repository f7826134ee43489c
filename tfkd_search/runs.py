"""Single and multi-seed training runs (`tfkd-search train`), tracked in MLflow beside searches."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import TEACHER_METHODS, RunConfig, config_to_dict, flatten
from .errors import ConfigError
from .io import ensure_writable_dir

Printer = Callable[[str], None]


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
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc}); pass a writable "
                          f"--out or --storage") from None


def check_teacher(cfg: RunConfig, source: str = "config", prefix: str = "") -> None:
    """Load the teacher checkpoint of a kd/tfkd_self config on the CPU: a missing, truncated or
    mismatched (architecture, class count, channels) file fails here, before any run starts."""
    if cfg.method not in TEACHER_METHODS or cfg.teacher is None:
        return
    import torch

    from .data import dataset_info
    from .errors import CheckpointError
    from .io import load_checkpoint
    from .trainer import load_teacher

    try:
        path = cfg.teacher.checkpoint
        held = load_checkpoint(path, "teacher checkpoint").get("model_name")
        if cfg.teacher.model and held and held != cfg.teacher.model:
            raise CheckpointError(
                f"teacher checkpoint {path}: holds a {held!r} but teacher.model is "
                f"{cfg.teacher.model!r}; set teacher.model: {held} or leave it out (it is read from "
                f"the checkpoint)")
        load_teacher(cfg, dataset_info(cfg.data.dataset).in_channels, torch.device("cpu"))
    except CheckpointError as err:
        raise CheckpointError(f"{source}: {prefix}teacher.checkpoint: {err}") from None


def preflight(cfg: RunConfig, source: str = "config", prefix: str = "") -> Any:
    """Check the teacher and load the data of `cfg` before any folder or MLflow run is made, so
    that a bad checkpoint or a missing dataset fails in seconds and leaves nothing behind.
    Returns the loaded DataSplits (train() can reuse them)."""
    from .data import load_splits

    check_teacher(cfg, source, prefix)
    d = cfg.data
    return load_splits(d.dataset, d.data_dir, val_fraction=d.val_fraction, split_seed=d.split_seed,
                       with_test=cfg.evaluate_test, download=d.download,
                       synthetic_size=d.synthetic_size)


def train_seeds(cfg: RunConfig, seeds: list[int], out: Path, *, resume: bool, gpus: float,
                tracker: Any | None, printer: Printer, data: Any = None) -> list[Any]:
    """Train one run per seed (sequentially, or in parallel through Ray when `gpus` > 0).

    `data`: the splits preflight() loaded (shared by the sequential seeds: the split does not
    depend on the seed)."""
    from .trainer import train

    parent = None
    if tracker is not None:
        parent = tracker.start_parent(f"train:{out.resolve()}", f"train-{cfg.name}",
                                      tags={"tfkd.role": "final"})
        tracker.log_params(parent, {k: v for k, v in flatten(config_to_dict(cfg)).items()})
    cfgs = {s: cfg.model_copy(update={"seed": s}) for s in seeds}
    results: list[Any] = []
    if gpus and len(seeds) > 1:
        from .search import train_parallel

        results = train_parallel(cfgs, out, gpus=gpus, resume=resume, printer=printer)
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
                if tracker is not None:
                    tracker.log_epoch(run, ep.metrics, ep.epoch)

            res = train(cfgs[seed], run_dir=out / f"seed{seed}", report=report, resume=resume,
                        data=data)
            results.append(res)
            if tracker is not None:
                tracker.end_child(f"{parent}:seed{seed}", res.status, _final_tags(res))
    summary = summarize(results)
    if tracker is not None and parent is not None:
        tracker.log_metrics(parent, {k: v for k, v in summary.items() if isinstance(v, float)})
        tracker.finish(parent, "FINISHED")
    printer(summary_text(summary, seeds))
    return results


def _final_tags(res: Any) -> dict[str, Any]:
    return {"tfkd.best_val_acc": res.best_val_acc, "tfkd.test_acc": res.test_acc,
            "tfkd.epochs": res.epochs}


def summarize(results: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(results),
                           "diverged": sum(r.status == "diverged" for r in results)}
    for key in ("test_acc", "best_val_acc", "last_val_acc"):
        vals = [float(getattr(r, key)) for r in results
                if getattr(r, key) is not None and not math.isnan(float(getattr(r, key)))
                and float(getattr(r, key)) >= 0]
        if vals:
            out[f"{key}_mean"] = statistics.fmean(vals)
            out[f"{key}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return out


def summary_text(s: dict[str, Any], seeds: list[int]) -> str:
    parts = [f"{s['runs']} run(s), seeds {seeds}"]
    if s["diverged"]:
        parts.append(f"{s['diverged']} diverged")
    for key in ("test_acc", "best_val_acc", "last_val_acc"):
        if f"{key}_mean" in s:
            parts.append(f"{key} {s[key + '_mean']:.4f} ± {s[key + '_std']:.4f}")
    return "summary: " + ", ".join(parts)


def resolve_paths(cfg: RunConfig) -> RunConfig:
    """Make relative data/teacher paths absolute (trials run in other folders)."""
    data = cfg.data.model_copy(update={"data_dir": os.path.abspath(cfg.data.data_dir or "data")})
    upd: dict[str, Any] = {"data": data}
    if cfg.teacher is not None:
        upd["teacher"] = cfg.teacher.model_copy(
            update={"checkpoint": os.path.abspath(cfg.teacher.checkpoint)})
    return cfg.model_copy(update=upd)
