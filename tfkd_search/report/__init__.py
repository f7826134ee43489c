"""The search report: `RUN_DIR/report/index.html`, a self-contained page of matplotlib figures.

`tfkd-search report RUN_DIR` writes it on demand; every search writes it at the end. It needs no Ray:
it reads the run folder through `runfolder.RunFolder` (`trials.parquet`, `history.parquet`,
`search.json`, the typed `space.yaml`, and, for a search still in progress or killed before it wrote
`trials.parquet`, Ray's per-trial `trial_*/result.json`). The best trial is the ranking rule's
(`RunFolder.ranking()`: the space's metric, mode and window), the same row the export and MLflow use;
tables and plots show that `score`. The figures are PNGs in `RUN_DIR/report/` and are also embedded in
the page as data URIs, so the page opens from disk, from a copy of the page alone, or from MLflow's
artifact view.

Modules: `data` (reading the run), `compute` (compute spent), `study` (in-memory Optuna studies and
importances at one fidelity), `figures`, `page` (the HTML), `publish` (writing it, logging to MLflow).
"""

from __future__ import annotations

from .compute import Compute, compute_summary
from .data import Param, RunData, load_run
from .page import build_report
from .publish import INDEX, REPORT_DIR, log_report, report_files, write_report
from .study import Importance, fidelity, param_importances

__all__ = ["write_report", "load_run", "build_report", "log_report", "report_files", "RunData", "Param",
           "param_importances", "Importance", "fidelity", "compute_summary", "Compute", "REPORT_DIR",
           "INDEX"]
