"""The finalists stage of a search: the best configs of the halving and the baselines CE and LSR,
trained again at the search budget on fresh seeds, through the same Ray Tune machinery as the search
(packing, resources, retries, checkpoints, MLflow children, `--resume`).

Which configs become finalists and how they rank is `tfkd_search.finalists` (shared with the export and
`benchmarks/replay.py`); this module only plans the runs and drives Tune. The plan is saved in
`search.json` before any run starts, so a resumed search trains exactly the same runs, and Tune's
experiment lives in `<run>/finalists/`, so `--resume` continues it without repeating a finished seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..export import plain_value
from ..finalists import BASELINES, baseline_overrides, choose, fresh_seeds, label, seeds_avoiding
from ..runfolder import FINALISTS_DIR, Ranking, TrialRecord
from ..spaces import Space
from .storage import join_uri
from .trial import record_of, restore, run_config, run_finalist, trainable


def make_plan(space: Space, ranked: Any, teacher_seed: int | None,
              eval_size: int | None = None) -> dict[str, Any]:
    """The finalists stage's runs from the search's ranked trials (`Ranking.rank` of trials.parquet):
    {"seeds": [...], "entries": [{name, role, search_rank, params, overrides}, ...], "eval_size"}.
    Seeds are fresh (none equal to the search's) and none equal to the teacher's (a student replaying
    its teacher's initialisation and data order would not be an independent run). `eval_size`: the
    validation split's size where known (None: not read, e.g. on a cluster joined with --address)."""
    f = space.spec.search.finalists
    base = space.base
    taken = {base.seed} | ({teacher_seed} if teacher_seed is not None else set())
    seeds = seeds_avoiding(fresh_seeds(base.seed, f.seeds), taken)
    params = list(space.params)
    rows = [{k: plain_value(r[k]) for k in params} for _, r in ranked.iterrows()]
    entries: list[dict[str, Any]] = []
    for k, p in enumerate(choose(rows, f.top), start=1):
        entries.append({"name": f"finalist{k}", "role": "finalist", "search_rank": k, "params": p,
                        "label": label(p), "overrides": dict(p)})
    for b in BASELINES:
        entries.append({"name": b, "role": "baseline", "search_rank": None, "params": {},
                        "label": b, "overrides": baseline_overrides(b, base.loss.eps)})
    return {"seeds": seeds, "entries": entries, "eval_size": eval_size}


def runs_of(plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One Tune config per (entry, seed), entry-major: what the stage's grid runs."""
    return [{"name": e["name"], "role": e["role"], "search_rank": e.get("search_rank"), "seed": s,
             "params": dict(e["params"]), "overrides": {**e["overrides"], "seed": s}}
            for e in plan["entries"] for s in plan["seeds"]]


def describe_run(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str], str]:
    """MLflow params, tags and the progress title of one finalists-stage trial (its Tune config)."""
    run = config.get("run") or {}
    params = {**run.get("params", {}), "seed": run.get("seed"), "finalist": run.get("name")}
    if run.get("role") == "baseline":
        params.update(run.get("overrides", {}))
    tags = {"tfkd.stage": "finalists", "tfkd.role": str(run.get("role")),
            "tfkd.finalist": str(run.get("name")), "tfkd.seed": str(run.get("seed"))}
    return params, tags, f"{run.get('name')} seed {run.get('seed')}"


def tuner(space: Space, plan: Mapping[str, Any], ranking: Ranking, *, base: dict[str, Any],
          gpu_share: float, conc: int | None, exp_path: str, resume: bool, callback: Any,
          registry: Any = None) -> Any:
    """A Tune Tuner of the stage: a grid over the planned runs, no early stopping, the search's
    resources, retries and checkpoint rules; its experiment is `<exp_path>/finalists`."""
    from ray import tune
    from ray.tune import TuneConfig, Tuner

    fn = trainable(run_finalist, space, ranking, base=base, gpu_share=gpu_share, rungs=[],
                   registry=registry)
    path = stage_path(exp_path)
    if resume:
        return restore(path, fn)
    return Tuner(
        fn, param_space={"run": tune.grid_search(runs_of(plan))},
        tune_config=TuneConfig(max_concurrent_trials=conc, reuse_actors=True,
                               trial_dirname_creator=lambda t: f"trial_{t.trial_id}"),
        run_config=run_config(space, name=FINALISTS_DIR, storage_path=exp_path, callback=callback))


def stage_path(exp_path: str) -> str:
    """The stage's Tune experiment: `<exp_path>/finalists` (a folder, or an object-store URI)."""
    return join_uri(exp_path, FINALISTS_DIR)


def record(result: Any, space: Space, ranking: Ranking) -> tuple[dict[str, Any], TrialRecord]:
    """A Tune `Result` of the stage as (its planned run, the run folder's trial record)."""
    run = dict((result.config or {}).get("run") or {})
    return run, record_of(result, dict(run.get("params") or {}), budget=space.budget, ranking=ranking)
