"""Search results on disk (`trials.parquet`, `history.parquet`) and export of the best configs.

`export_best` needs no Ray: it reads the run folder only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from .config import build_run_config, config_to_dict, with_overrides
from .errors import ConfigError
from .io import atomic_write_parquet, atomic_write_text

STATUSES = ("completed", "stopped_early", "diverged", "errored")
HISTORY_COLUMNS = ("epoch", "val_acc", "val_loss", "train_loss", "train_ce", "train_kl", "lr",
                   "images_per_s", "epoch_seconds")


def write_results(results: Any, space: Any, run_dir: Path | None, *, budget: int, metric: str,
                  mode: str) -> Any:
    """One row per trial (trials.parquet) and one per trial-epoch (history.parquet)."""
    import pandas as pd

    from .search import _outcome

    rows, hist = [], []
    for r in results:
        trial_id = r.path.rstrip("/").rsplit("trial_", 1)[-1] if r.path else None
        m = dict(r.metrics or {})
        trial_id = m.get("trial_id", trial_id)
        df = r.metrics_dataframe
        h = _history_frame(df)
        error = r.error
        status = _outcome(m, error, budget)
        valid = h[h.get("diverged", 0) == 0] if len(h) and "diverged" in h else h
        best = float(valid["val_acc"].max()) if len(valid) and "val_acc" in valid else float("nan")
        row = {"trial_id": trial_id, "status": status,
               "epochs": int(m.get("epoch", 0) or 0),
               "best_val_acc": best if not math.isnan(best) else float("nan"),
               "last_val_acc": float(m.get("val_acc", float("nan"))) if status != "diverged" else 0.0,
               "wall_seconds": float(m.get("time_total_s", 0.0) or 0.0),
               "error": (str(error).strip().splitlines() or [""])[-1][:500] if error else None}
        for k in space.params:
            row[k] = r.config.get(k)
        rows.append(row)
        if len(h):
            h = h.copy()
            h.insert(0, "trial_id", trial_id)
            hist.append(h)
    trials = pd.DataFrame(rows, columns=["trial_id", "status", "epochs", "best_val_acc",
                                         "last_val_acc", "wall_seconds", "error", *space.params])
    for k in space.params:  # a column of mixed types (e.g. 0.1 and '1e8') would not fit parquet
        if trials[k].dtype == object and len({type(v) for v in trials[k] if v is not None}) > 1:
            trials[k] = trials[k].map(lambda v: v if v is None else str(v))
    history = (pd.concat(hist, ignore_index=True) if hist
               else pd.DataFrame(columns=["trial_id", *HISTORY_COLUMNS]))
    if run_dir is not None:
        atomic_write_parquet(trials, run_dir / "trials.parquet")
        atomic_write_parquet(history, run_dir / "history.parquet")
    return trials


def _history_frame(df: Any) -> Any:
    import pandas as pd

    if df is None or not len(df) or "epoch" not in df:
        return pd.DataFrame(columns=list(HISTORY_COLUMNS))
    keep = [c for c in (*HISTORY_COLUMNS, "diverged") if c in df]
    out = df[keep].dropna(subset=["epoch"]).copy()
    out["epoch"] = out["epoch"].astype(int)
    # a trial restarted from a checkpoint may report an epoch twice: keep the last report
    return out.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def rank_trials(trials: Any) -> Any:
    """Trials that ran the whole budget first (ranked by best val accuracy), then early-stopped ones.

    Early-stopped trials are only compared among themselves: their accuracy comes from fewer
    epochs and must not be ranked against finished trials.
    """
    ok = trials[trials["status"].isin(["completed", "stopped_early"])].copy()
    ok["_done"] = (ok["status"] == "completed").astype(int)
    ok = ok.sort_values(["_done", "best_val_acc", "epochs"], ascending=[False, False, False])
    return ok.drop(columns="_done")


def export_best(run_dir: str | Path, top: int | None = None, seeds: list[int] | None = None
                ) -> list[Path]:
    """Write best/rank<k>.yaml: complete run configs for the full schedule with the found values."""
    import pandas as pd

    run_dir = Path(run_dir)
    state_path = run_dir / "search.json"
    trials_path = run_dir / "trials.parquet"
    if not state_path.exists() or not trials_path.exists():
        raise ConfigError(f"{run_dir}: not a finished tfkd-search run folder (needs search.json and "
                          f"trials.parquet); pass the folder <storage>/<name> of a search")
    state = json.loads(state_path.read_text())
    export_cfg = _export_block(run_dir)
    top = top or export_cfg["top_k"]
    seeds = seeds or export_cfg["seeds"]
    trials = pd.read_parquet(trials_path)
    params = [c for c in trials.columns if "." in c]
    ranked = rank_trials(trials).head(top)
    out_dir = run_dir / "best"
    out_dir.mkdir(exist_ok=True)
    for old in out_dir.glob("rank*.yaml"):
        old.unlink()
    paths = []
    base = state["base"]
    for rank, (_, row) in enumerate(ranked.iterrows(), start=1):
        values = {k: _plain(row[k]) for k in params}
        raw = with_overrides(base, values)
        raw = with_overrides(raw, {
            "name": f"{state['name']}-rank{rank}", "schedule.epochs": export_cfg["epochs"],
            "schedule.budget": None, "evaluate_test": True, "seeds": list(seeds),
            "data.val_fraction": export_cfg["val_fraction"], "device": "auto"})
        searched_epochs = base.get("schedule", {}).get("epochs", 200)
        if export_cfg["epochs"] != searched_epochs:
            # the final runs use the same recipe on another length: scale the lr milestones
            ms = base.get("schedule", {}).get("milestones", [60, 120, 160])
            raw["schedule"]["milestones"] = sorted({
                min(export_cfg["epochs"] - 1, max(1, round(m * export_cfg["epochs"] / searched_epochs)))
                for m in ms}) if export_cfg["epochs"] > 1 else []
        cfg = build_run_config(raw, source=str(trials_path))
        header = (f"# tfkd-search export: rank {rank} of search {state['name']!r}\n"
                  f"# trial {row['trial_id']} ({row['status']}, {int(row['epochs'])} epochs): "
                  f"best val_acc {row['best_val_acc']:.4f}\n"
                  f"# found: {', '.join(f'{k}={v}' for k, v in values.items())}\n"
                  f"# run it: tfkd-search train --config THIS_FILE --seeds {len(seeds)}\n")
        path = out_dir / f"rank{rank}.yaml"
        atomic_write_text(path, header + yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        paths.append(path)
    return paths


def _export_block(run_dir: Path) -> dict[str, Any]:
    raw = yaml.safe_load((run_dir / "space.yaml").read_text()) if (run_dir / "space.yaml").exists() \
        else {}
    from .spaces import ExportBlock

    return ExportBlock.model_validate((raw or {}).get("export", {})).model_dump()


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return v
