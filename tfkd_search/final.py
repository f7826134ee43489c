"""`tfkd-search final RUN_DIR`: the final comparison. Every config a search exported
(`best/rank<k>.yaml`) and the baselines (`best/baseline-ce.yaml`, `best/baseline-lsr.yaml`) trained on
the same seeds at the full schedule, then one table: mean ± std over seeds and the paired difference
to each baseline with its 95% interval and verdict (`finalists.standings`, as the search's finalists
stage). Sequential on the CPU, in parallel on `--gpus`; resumable (a finished run is never trained
again, an unfinished one continues from its checkpoint); tracked in MLflow (one parent run, a child
run per config and seed, the table as an artifact).

Files: `<run>/final/<config>/seed<k>/` (the run folders of `tfkd-search train`), `<run>/final/results.parquet`
(one row per run) and `<run>/final/answer.txt`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .config import RunConfig, load_run_config
from .errors import ConfigError
from .finalists import BASELINES, format_standings, per_seed, standings
from .io import atomic_write_parquet, atomic_write_text
from .runfolder import BEST_DIR, RunFolder
from .runs import preflight, prepare_out, resolve_paths, run_one, seeds_for, train_parallel

Printer = Callable[[str], None]
FINAL_DIR = "final"
RESULTS_FILE = "results.parquet"
ANSWER_FILE = "answer.txt"
SUMMARY = "summary.json"


def exported_configs(run_dir: Path) -> dict[str, Path]:
    """The exported configs of a search by name (rank1, rank2, ..., ce, lsr), ranks first."""
    best = run_dir / BEST_DIR
    ranks = sorted(best.glob("rank*.yaml"), key=lambda p: int(p.stem[4:]) if p.stem[4:].isdigit() else 0)
    out = {p.stem: p for p in ranks}
    out.update({b: best / f"baseline-{b}.yaml" for b in BASELINES if (best / f"baseline-{b}.yaml").exists()})
    return out


def metric_of(summary: Mapping[str, Any]) -> tuple[str, float]:
    """What a final run is judged on: its test accuracy (exported configs evaluate the test set),
    else its last validation accuracy; NaN for a run that diverged or has neither."""
    if summary.get("status") == "diverged":
        return "test_acc", math.nan
    for key in ("test_acc", "last_val_acc"):
        v = summary.get(key)
        if v is not None and math.isfinite(float(v)) and float(v) >= 0:
            return key, float(v)
    return "test_acc", math.nan


def run_final(run_dir: str | Path, *, seeds: int | None = None, gpus: float = 0, resume: bool = False,
              overrides: Mapping[str, Any] | None = None, tracker: Any = None, ray_options: Any = None,
              printer: Printer = print) -> tuple[Any, str]:
    """Train every exported config and baseline on the same seeds; returns (results table, answer)."""
    folder = RunFolder(run_dir)
    configs = exported_configs(folder.path)
    if not any(n.startswith("rank") for n in configs):
        raise ConfigError(f"{folder.path / BEST_DIR}: no exported configs (rank<k>.yaml); export the "
                          f"search first: tfkd-search export {folder.path}")
    cfgs: dict[str, RunConfig] = {n: resolve_paths(load_run_config(p, dict(overrides or {})))
                                  for n, p in configs.items()}
    seed_list = seeds_for(cfgs["rank1"] if "rank1" in cfgs else next(iter(cfgs.values())), seeds)
    out = folder.path / FINAL_DIR
    data = None  # loaded once here for runs in this process; Ray tasks (--gpus) load their own
    for n, cfg in cfgs.items():  # every config's data, models and teacher before anything is written
        _, loaded, _ = preflight(cfg, source=str(configs[n]), load=data is None and not gpus)
        data = loaded if data is None else data
    for n in cfgs:
        prepare_out(out / n, [s for s in seed_list if not (resume and _done(out / n / f"seed{s}"))],
                    resume)
    jobs = [(n, s) for n in cfgs for s in seed_list]
    printer(f"final runs of {folder.path.name}: {', '.join(cfgs)} on seeds {seed_list}, "
            f"{next(iter(cfgs.values())).schedule.trained_epochs} epochs each ({len(jobs)} runs); "
            f"folders in {out}")
    parent = None
    if tracker is not None:
        parent = tracker.start_parent(f"final:{out.resolve()}", f"final-{folder.path.name}",
                                      tags={"tfkd.role": "final", "tfkd.search": str(folder.path)})
        tracker.log_params(parent, {"seeds": json.dumps(seed_list), "configs": ",".join(cfgs)})
    summaries: dict[tuple[str, int], dict[str, Any]] = {}
    todo = []
    for n, s in jobs:
        d = out / n / f"seed{s}"
        if resume and _done(d):
            summaries[(n, s)] = json.loads((d / SUMMARY).read_text())
            printer(f"{n} seed {s}: finished before, kept ({d})")
        else:
            todo.append((n, s))
    runs = {(n, s): (cfgs[n].model_copy(update={"seed": s}), out / n / f"seed{s}") for n, s in todo}
    if gpus and len(todo) > 1:
        for key, res in zip(todo, train_parallel(list(runs.values()), gpus=gpus, resume=resume,
                                                 printer=printer, ray_options=ray_options)):
            summaries[key] = res.summary()
    else:
        for key in todo:
            cfg, d = runs[key]
            res = run_one(cfg, d, resume=resume, data=data)
            summaries[key] = res.summary()
            measure, score = metric_of(summaries[key])
            printer(f"{key[0]} seed {key[1]}: {res.status}, {measure} {score:.4f}")
    table = _table(jobs, summaries, out)
    atomic_write_parquet(table, out / RESULTS_FILE)
    rows, measure = final_standings(table)
    answer = (f"final runs on seeds {seed_list} at the full schedule, judged on {measure}; "
              f"ranked by their mean:\n" + format_standings(rows, measure))
    atomic_write_text(out / ANSWER_FILE, answer + "\n")
    if tracker is not None and parent is not None:
        for (n, s), summ in summaries.items():
            key = f"{parent}:{n}:seed{s}"
            run = tracker.child(key, f"{n}-seed{s}", params={"config": n, "seed": s},
                                tags={"tfkd.stage": "final", "tfkd.config": n})
            tracker.log_metrics(run, {k: float(v) for k, v in summ.items()
                                      if isinstance(v, (int, float)) and not isinstance(v, bool)})
            tracker.end_child(key, str(summ.get("status", "completed")))
        tracker.log_metrics(parent, {f"final.{r.name}.mean": r.summary.mean for r in rows})
        tracker.log_artifact(parent, out / ANSWER_FILE)
        tracker.log_artifact(parent, out / RESULTS_FILE)
        tracker.finish(parent, "FINISHED")
    printer(answer)
    return table, answer


def final_standings(table: Any) -> tuple[list[Any], str]:
    """The final runs' answer (`finalists.standings`) from results.parquet, and the measure used."""
    scores, examples = per_seed((r["config"], r["seed"], r["score"], r.get("correct"))
                                for _, r in table.iterrows())
    measure = str(table["measure"].iloc[0]) if len(table) else "test_acc"
    ranks = sorted((n for n in scores if n not in BASELINES), key=lambda n: int(n[4:] or 0))
    return standings(scores, ranks, "max", examples=examples), measure


def read_results(run_dir: str | Path) -> Any:
    """final/results.parquet of a search's run folder, or None before `tfkd-search final` ran."""
    import pandas as pd

    path = Path(run_dir) / FINAL_DIR / RESULTS_FILE
    return pd.read_parquet(path) if path.exists() else None


def _done(run: Path) -> bool:
    return (run / SUMMARY).exists()


def _table(jobs: list[tuple[str, int]], summaries: Mapping[tuple[str, int], Mapping[str, Any]],
           out: Path) -> Any:
    import pandas as pd

    rows = []
    for n, s in jobs:
        summ = summaries[(n, s)]
        measure, score = metric_of(summ)
        rows.append({"config": n, "seed": s, "status": summ.get("status"), "measure": measure,
                     "score": score, "test_acc": summ.get("test_acc"),
                     # the per-image results the score was measured on (stats.pack_correct)
                     "correct": summ.get("test_correct" if measure == "test_acc" else "val_correct"),
                     "best_val_acc": summ.get("best_val_acc"), "epochs": summ.get("epochs"),
                     "run_dir": str(out / n / f"seed{s}")})
    return pd.DataFrame(rows)
