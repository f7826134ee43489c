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
from .finalists import BASELINES, baseline_overrides, format_standings, row_labels, seeds_avoiding
from .stats import format_comparison, format_summary
from .io import atomic_write_text
from .runfolder import RunFolder


def scaled_milestones(milestones: list[int], searched_epochs: int, epochs: int) -> list[int]:
    """The recipe's lr milestones moved from a schedule of `searched_epochs` to one of `epochs`."""
    if epochs <= 1:
        return []
    return sorted({min(epochs - 1, max(1, round(m * epochs / searched_epochs))) for m in milestones})


def final_seeds(seeds: list[int], teacher: int | None) -> list[int]:
    """The final runs' seeds, none equal to the teacher's (`finalists.seeds_avoiding`)."""
    return seeds_avoiding(seeds, [] if teacher is None else [teacher])


def teacher_seed(base: dict[str, Any]) -> int | None:
    """The seed the base config's teacher checkpoint was trained with (None: no teacher, or unknown)."""
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


ANSWER_FILE = "answer.txt"  # best/answer.txt: the finalists' table, as export prints it


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
    seeds = final_seeds(list(seeds or export_cfg["seeds"]), teacher_seed(base))
    trials = folder.read_trials()
    params = [c for c in trials.columns if "." in c]
    ranking = folder.ranking()
    folder.best_dir.mkdir(exist_ok=True)
    for old in [*folder.best_dir.glob("rank*.yaml"), *folder.best_dir.glob("baseline-*.yaml"),
                folder.best_dir / ANSWER_FILE]:
        old.unlink(missing_ok=True)
    files: list[tuple[str, dict[str, Any], str]] = []  # (file stem, config changes, header)
    rows = folder.standings()
    if rows:  # the finalists' order: mean over fresh seeds, paired with the baselines
        plan = {e["name"]: e for e in state["finalists_plan"]["entries"]}
        for rank, r in enumerate([r for r in rows if r.role == "finalist"][:top], start=1):
            e = plan[r.name]
            files.append((f"rank{rank}", dict(e["params"]),
                          f"# {r.name} of the finalists stage (rank {e['search_rank']} in the search): "
                          f"{ranking.metric} {format_summary(r.summary, 100)} over fresh seeds "
                          f"{sorted(r.scores)}\n"
                          + "".join(f"# vs {b.upper()}: {format_comparison(c, 100)}\n"
                                    for b, c in r.versus.items())
                          + f"# found: {_found(e['params'])}\n"))
        extra = {r.name: f"# {r.name} baseline of the finalists stage: {ranking.metric} "
                         f"{format_summary(r.summary, 100)} over seeds {sorted(r.scores)}\n"
                 for r in rows if r.role == "baseline"}
    else:
        for rank, (_, row) in enumerate(ranking.rank(trials).head(top).iterrows(), start=1):
            values = {k: plain_value(row[k]) for k in params}
            files.append((f"rank{rank}", values,
                          f"# trial {row['trial_id']} ({row['status']}, {int(row['epochs'])} epochs): "
                          f"score {row['score']:.4f} ({ranking.describe()}), best val_acc "
                          f"{row['best_val_acc']:.4f}; one seed, no finalists stage\n"
                          f"# found: {_found(values)}\n"))
        extra = {}
    eps = float((base.get("loss") or {}).get("eps", 0.1))
    for b in BASELINES:
        files.append((f"baseline-{b}", baseline_overrides(b, eps),
                      extra.get(b, "") + "# the same recipe as the exported ranks, for a paired "
                      "comparison on the same seeds\n"))
    paths = []
    for stem, changes, header in files:
        cfg = _final_config(base, changes, f"{state['name']}-{stem}", export_cfg, seeds,
                            source=str(folder.trials_path))
        text = (f"# tfkd-search export: {stem} of search {state['name']!r}\n{header}"
                f"# run it: tfkd-search train --config THIS_FILE --seeds {len(seeds)}; all of them "
                f"on the same seeds: tfkd-search final {folder.path}\n")
        path = folder.best_dir / f"{stem}.yaml"
        atomic_write_text(path, text + yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        paths.append(path)
    answer = answer_text(folder.path, rows)
    if answer:
        atomic_write_text(folder.best_dir / ANSWER_FILE, answer + "\n")
    return paths


def answer_text(run_dir: str | Path, rows: list[Any] | None = None) -> str | None:
    """The finalists stage's answer as text: is the found config better than CE and LSR, and how
    sure is that (None for a search without a finalists stage). `rows`: the folder's standings when
    the caller has read them already."""
    folder = RunFolder(run_dir)
    rows = folder.standings() if rows is None else rows
    if not rows:
        return None
    plan = folder.read_state()["finalists_plan"]
    labels = row_labels(plan)
    ranking = folder.ranking()
    return (f"finalists and baselines on fresh seeds {plan['seeds']} at the search budget, ranked by "
            f"their mean score ({ranking.describe().split(';')[0]}); rank 1 is best/rank1.yaml:\n"
            + format_standings(rows, ranking.metric, labels) + _split_caveat(plan.get("eval_size"),
                                                                            ranking.metric, rows))


def _split_caveat(eval_size: int | None, metric: str, rows: list[Any]) -> str:
    """What the intervals of the search's answer cover where they miss the validation split's own
    sampling noise (no per-image results: runs of older versions): the seeds' spread on that one split
    (README, "How the winner is chosen": on digits' 288 images that noise made 7-9% of near-ties read
    `better`). Nothing where every interval holds it."""
    comparisons = [c for r in rows for c in r.versus.values() if c.low is not None]
    if not eval_size or (comparisons and all(c.examples for c in comparisons)):
        return ""
    one = f" one image is {100 / eval_size:.2f} points, so" if metric.endswith("acc") else ""
    return (f"\n(the intervals cover seeds, not the validation split's own sampling noise: on its "
            f"{eval_size:,} images{one} a small difference may not hold on new data; "
            f"`tfkd-search final` compares on the test split)")


def _final_config(base: dict[str, Any], changes: dict[str, Any], name: str, export_cfg: dict[str, Any],
                  seeds: list[int], source: str) -> Any:
    """The searched recipe with `changes`, on the final runs' schedule: full length (lr milestones
    scaled when the length differs), test evaluation on, the seeds list."""
    raw = with_overrides(with_overrides(base, changes), {
        "name": name, "schedule.epochs": export_cfg["epochs"], "schedule.budget": None,
        "evaluate_test": True, "seeds": list(seeds), "data.val_fraction": export_cfg["val_fraction"],
        "device": "auto"})
    searched_epochs = base.get("schedule", {}).get("epochs", 200)
    if export_cfg["epochs"] != searched_epochs:
        ms = base.get("schedule", {}).get("milestones", [60, 120, 160])
        raw["schedule"]["milestones"] = scaled_milestones(ms, searched_epochs, export_cfg["epochs"])
    return build_run_config(raw, source=source)


def _found(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _export_block(folder: RunFolder) -> dict[str, Any]:
    from .spaces import ExportBlock

    return ExportBlock.model_validate(folder.read_space_raw().get("export", {}) or {}).model_dump()


def plain_value(v: Any) -> Any:
    """A table cell as a plain Python value (numpy scalars unwrapped)."""
    if hasattr(v, "item"):
        return v.item()
    return v
