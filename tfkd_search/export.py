"""Export of a search's best configs: `best/rank<k>.yaml`, complete run configs for the final runs.

Needs no Ray: it reads the run folder through `tfkd_search.runfolder` and ranks with its one rule.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .config import TEACHER_METHODS, build_run_config, config_to_dict
from .overrides import with_overrides
from .errors import CheckpointError, ConfigError
from .io import atomic_write_text
from .runfolder import RunFolder


def scaled_milestones(milestones: list[int], searched_epochs: int, epochs: int) -> list[int]:
    """The recipe's lr milestones moved from a schedule of `searched_epochs` to one of `epochs`."""
    if epochs <= 1:
        return []
    return sorted({min(epochs - 1, max(1, round(m * epochs / searched_epochs))) for m in milestones})


def final_seeds(seeds: list[int], teacher_seed: int | None) -> list[int]:
    """The final runs' seeds, none equal to the teacher's: a self-distilled student that replayed its
    teacher's initialisation and data order would not be an independent run."""
    if teacher_seed is None or teacher_seed not in seeds:
        return list(seeds)
    out = [s for s in seeds if s != teacher_seed]
    nxt = max([*seeds, teacher_seed]) + 1
    while len(out) < len(seeds):
        out.append(nxt)
        nxt += 1
    return out


def _teacher_seed(base: dict[str, Any]) -> int | None:
    teacher = base.get("teacher") or {}
    if base.get("method") not in TEACHER_METHODS or not teacher.get("checkpoint"):
        return None
    from .io import load_checkpoint

    try:
        cfg = load_checkpoint(teacher["checkpoint"], "teacher checkpoint").get("config") or {}
    except CheckpointError:
        return None  # the search already checked it; the export must not fail on a moved file
    seed = cfg.get("seed")
    return int(seed) if isinstance(seed, int) else None


def export_best(run_dir: str | Path, top: int | None = None, seeds: list[int] | None = None,
                printer: Callable[[str], None] | None = None) -> list[Path]:
    """Write best/rank<k>.yaml: complete run configs for the full schedule with the found values.
    Tables of a finished search that are missing or unreadable are rebuilt first
    (`RunFolder.rebuild_tables`), and `printer` (default: standard error) says so."""
    folder = RunFolder(run_dir)
    state = folder.read_state(strict=True)
    note = folder.rebuild_tables()
    if note:
        (printer or (lambda line: print(line, file=sys.stderr)))(note)
    if state and not state.get("finished") and not folder.trials_path.exists():
        again = shlex.join(["tfkd-search", "--space", str(state.get("space_file") or "SPACE"),
                            "--storage", str(folder.path.parent), "--name",
                            str(state.get("name") or folder.path.name), "--resume"])
        raise ConfigError(f"{folder.path}: search {state.get('name')!r} has not finished (interrupted, "
                          f"or still running); continue it with: {again}; "
                          f"'tfkd-search report {folder.path}' shows its trials so far")
    if not state or not folder.trials_path.exists():
        raise ConfigError(f"{folder.path}: not a finished tfkd-search run folder (needs search.json and "
                          f"trials.parquet); pass the folder <storage>/<name> of a search")
    export_cfg = _export_block(folder)
    top = top or export_cfg["top_k"]
    if top < 1:
        raise ConfigError(f"--top {top}: must be 1 or more")
    base = state["base"]
    seeds = final_seeds(list(seeds or export_cfg["seeds"]), _teacher_seed(base))
    trials = folder.read_trials()
    params = [c for c in trials.columns if "." in c]
    ranking = folder.ranking()
    ranked = ranking.rank(trials).head(top)
    folder.best_dir.mkdir(exist_ok=True)
    for old in folder.best_dir.glob("rank*.yaml"):
        old.unlink()
    paths = []
    searched_epochs = base.get("schedule", {}).get("epochs", 200)
    for rank, (_, row) in enumerate(ranked.iterrows(), start=1):
        values = {k: _plain(row[k]) for k in params}
        raw = with_overrides(base, values)
        raw = with_overrides(raw, {
            "name": f"{state['name']}-rank{rank}", "schedule.epochs": export_cfg["epochs"],
            "schedule.budget": None, "evaluate_test": True, "seeds": list(seeds),
            "data.val_fraction": export_cfg["val_fraction"], "device": "auto"})
        if export_cfg["epochs"] != searched_epochs:
            # the final runs use the same recipe on another length: scale the lr milestones
            ms = base.get("schedule", {}).get("milestones", [60, 120, 160])
            raw["schedule"]["milestones"] = scaled_milestones(ms, searched_epochs, export_cfg["epochs"])
        cfg = build_run_config(raw, source=str(folder.trials_path))
        header = (f"# tfkd-search export: rank {rank} of search {state['name']!r}\n"
                  f"# trial {row['trial_id']} ({row['status']}, {int(row['epochs'])} epochs): "
                  f"score {row['score']:.4f} ({ranking.describe()}), best val_acc "
                  f"{row['best_val_acc']:.4f}\n"
                  f"# found: {', '.join(f'{k}={v}' for k, v in values.items())}\n"
                  f"# run it: tfkd-search train --config THIS_FILE --seeds {len(seeds)}\n")
        path = folder.best_dir / f"rank{rank}.yaml"
        atomic_write_text(path, header + yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        paths.append(path)
    return paths


def _export_block(folder: RunFolder) -> dict[str, Any]:
    from .spaces import ExportBlock

    return ExportBlock.model_validate(folder.read_space_raw().get("export", {}) or {}).model_dump()


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return v
