"""The search: Ray Tune trials of `train()` with successive halving, Optuna and MLflow.

This package is the only place that imports Ray. Its modules, each about one thing:
`driver` (run_search), `trial` (the trainable), `scheduler` (Tune glue of `tfkd_search.scheduling`),
`progress` (progress lines and MLflow child runs), `cluster` (Ray start-up and cluster checks),
`storage` (the run folder and object-store copies).
"""

from __future__ import annotations

from .cluster import RayOptions, check_local_gpus, init_ray, preflight, shutdown
from .driver import SearchOutcome, run_search, summary_text
from .trial import run_trial, to_tune

__all__ = ["RayOptions", "SearchOutcome", "check_local_gpus", "init_ray", "preflight", "run_search",
           "run_trial", "shutdown", "summary_text", "to_tune"]
