"""The compute a search spent, against what all its planned trials would cost without early stopping."""

from __future__ import annotations

from dataclasses import dataclass

from ..runfolder import FINISHED
from .data import RunData


@dataclass
class Compute:
    unit: str               # "GPU-hours" or "CPU-hours"
    share: float            # GPUs (or CPUs) per trial
    trials: int
    planned: int
    budget: int | None
    epochs_used: int
    epochs_full: int | None
    wall_seconds: float
    seconds_per_epoch: float
    hours_used: float
    hours_full: float
    finished: int = 0          # trials that completed or were stopped early
    in_progress: bool = False  # read from Ray's result files: more trials and epochs may come
    grid: bool = True          # the searcher is a grid (else: the planned samples)

    @property
    def saved(self) -> float:
        """Share of the full budget's trial-epochs that early stopping saved (NaN: not meaningful)."""
        if not self.epochs_full or not self.finished or self.in_progress:
            return float("nan")
        return 1.0 - self.epochs_used / self.epochs_full

    @property
    def full_label(self) -> str:
        return ("full grid, no early stopping" if self.grid
                else "all planned trials, no early stopping")


def compute_summary(data: RunData) -> Compute:
    res = data.resources
    gpu = float(res.get("gpu", 0) or 0)
    cpu = float(res.get("cpu", 1) or 1)
    base = data.state.get("base") if isinstance(data.state.get("base"), dict) else {}
    on_gpu = gpu > 0 and base.get("device") != "cpu"  # a search started with --gpus 0 ran on CPUs
    t = data.trials
    epochs_used = int(t["epochs"].sum()) if len(t) else 0
    wall = float(t["wall_seconds"].fillna(0).sum()) if len(t) else 0.0
    ran = t[t["epochs"] > 0] if len(t) else t
    spe = (float(ran["wall_seconds"].fillna(0).sum()) / int(ran["epochs"].sum())
           if len(ran) and int(ran["epochs"].sum()) else float("nan"))
    planned = max(data.planned or 0, len(t))
    epochs_full = planned * data.budget if data.budget else None
    share = gpu if on_gpu else cpu
    return Compute(unit="GPU-hours" if on_gpu else "CPU-hours", share=share, trials=len(t),
                   planned=planned, budget=data.budget, epochs_used=epochs_used,
                   epochs_full=epochs_full, wall_seconds=wall, seconds_per_epoch=spe,
                   hours_used=wall * share / 3600,
                   hours_full=(epochs_full * spe * share / 3600) if epochs_full else float("nan"),
                   finished=int(t["status"].isin(FINISHED).sum()) if len(t) else 0,
                   in_progress=data.in_progress,
                   grid=data.searcher.get("kind", "grid") == "grid")
