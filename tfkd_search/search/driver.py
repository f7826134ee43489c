"""The search driver: Ray Tune trials of `train()`, successive halving, Optuna, MLflow, export.

`run_search` checks its inputs, starts or joins Ray, runs the trials, writes the run folder through
`tfkd_search.runfolder`, exports the best configs and writes the report.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..overrides import flatten
from ..errors import Interrupted, TfkdError
from ..runfolder import Ranking, RunFolder, TrialRecord, TrialStatus
from ..scheduling import Halving
from ..spaces import Space, concurrency, packs
from ..tracking import Tracker, check_reachable, default_tracking_uri, git_revision, package_versions
from . import finalstage
from .cluster import RayOptions, check_inputs_on_nodes, init_ray, preflight
from .hosting import start_registry, stop_registry
from .progress import make_callback
from .scheduler import RUNGS_FILE, make_scheduler, read_halving
from .storage import is_object_store, join_uri, prepare_run_dir, resolve_paths, space_digest, \
    upload_results
from .trial import SCORE, record_of, restore, run_config, run_trial, to_tune, trainable

Printer = Callable[[str], None]
SHOWN = 5  # trials in the end-of-search table
# a trial with one of these statuses will not run again (a trial stopped at a rung neither: the halving
# records it)
ENDED = (TrialStatus.ERRORED, TrialStatus.DIVERGED, TrialStatus.COMPLETED)


@dataclass
class SearchOutcome:
    run_dir: Path
    trials: Any  # pandas DataFrame, one row per trial (runfolder schema)
    exported: list[Path]
    mlflow_uri: str
    parent_run_id: str | None
    already_finished: bool = False


def ranking_of(space: Space) -> Ranking:
    return Ranking.of_space(space.spec.search.scheduler)


def halving_of(space: Space) -> Halving | None:
    """The space's scheduler as the decision object the search and the replays share."""
    sch = space.spec.search.scheduler
    if sch.kind != "asha":
        return None
    return Halving(sch.rung_epochs(space.budget), sch.reduction_factor, sch.mode,
                   synchronous=sch.synchronous, total_trials=space.num_trials())


def run_search(space: Space, *, gpus: float = 0, ray_options: RayOptions = RayOptions(),
               storage: str = "./tfkd_runs", name: str | None = None, resume: bool = False,
               mlflow_uri: str | None = None, results_dir: str | None = None,
               printer: Printer = print, dataset: Any = None, models: list[Any] = ()
               ) -> SearchOutcome:
    """Run (or resume) a search and export its best configs. `dataset`: the base config's
    data.DatasetFacts when the driver checked them; `models`: the facts of its checked models
    (`preflight_model.check_space_models`); both are logged to the parent MLflow run."""
    address = ray_options.address
    preflight(address, gpus, mlflow_uri)
    if not address:  # embedded Ray on loopback only: must be set before Ray is imported
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # a snapshot after every trial checkpoint is intended (see _tuner): no warning about it
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    name = name or space.spec.name
    s = space.spec.search
    ranking = ranking_of(space)
    storage_root, folder, state = prepare_run_dir(space, storage, name, resume, results_dir)
    run_dir = folder.path
    if resume and state.get("finished"):
        return _already_finished(folder, state, space, ranking, printer)
    if gpus == 0 and s.resources.gpu > 0:
        printer(f"note: --gpus 0, so trials run on the CPU (the space asks {s.resources.gpu:g} GPU "
                f"each)")
    gpu_share = s.resources.gpu if gpus > 0 else 0.0
    object_store = is_object_store(storage)
    try:
        # all MLflow logging happens here on the driver, so a local SQLite store works on clusters too
        uri = mlflow_uri or state.get("mlflow_uri") or default_tracking_uri(run_dir.parent)
        check_reachable(uri)
        ray = init_ray(ray_options, gpus, printer,  # first: no MLflow run if it fails
                       storage_dir=None if object_store else run_dir)
        base = resolve_paths(space.base_dict())
        if ray_options.address:  # the trials read the data on the cluster's nodes: check it there
            check_inputs_on_nodes(ray, base, str(space.source), printer)
        tracker = Tracker(uri, name, debug=ray_options.debug)
        parent_id = tracker.start_parent(state["key"], f"search-{name}",
                                         tags={"tfkd.space": space.spec.name})
    except BaseException:
        if not resume and run_dir.is_dir() and not any(p.name != "mlflow.db" for p in run_dir.iterdir()):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    cpus = float(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    conc = concurrency(space, gpus, cpus)
    if gpu_share == 0:
        base["device"] = "cpu"
    state.update({"space_file": space.source, "space_digest": space_digest(space),
                  "space_raw": space.raw, "name": name, "mlflow_uri": uri,
                  "parent_run_id": parent_id, "created": state.get("created", time.time()),
                  "base": base, "finished": False})
    folder.write_state(state)
    folder.write_space(space.raw)
    tracker.log_params(parent_id, {"space": space.spec.name, "searcher": s.searcher.kind,
                                   "scheduler": s.scheduler.kind, "num_trials": space.num_trials(),
                                   "budget_epochs": space.budget, "gpus": gpus,
                                   "ranking": ranking.describe(),
                                   **{f"base.{k}": v for k, v in flatten(base).items()},
                                   **{k: v for f in models for k, v in f.mlflow_params().items()}})
    tracker.set_tags(parent_id, {"tfkd.git": git_revision() or "none",
                                 "tfkd.versions": json.dumps(package_versions()),
                                 "tfkd.cluster": json.dumps(ray.cluster_resources())})
    if dataset is not None:
        tracker.log_dataset(parent_id, dataset)
    tracker.log_artifact(parent_id, folder.space_path)
    orphans = tracker.close_orphans() if resume else 0
    if orphans:
        printer(f"closed {orphans} MLflow runs left RUNNING by the interrupted driver")

    halving = halving_of(space)
    tracking = {"uri": uri, "experiment": name, "parent_id": parent_id, "debug": ray_options.debug}
    exp_path = join_uri(storage_root, name) if object_store else run_dir.as_posix()
    registry = None
    if packs(space, gpu_share):
        registry = start_registry(max_trials=max(8, 2 * round(1 / gpu_share))
                                  if gpu_share else 64)
        printer(f"packing: the {round(1 / gpu_share)} trials of each GPU run in one host process, each "
                f"on its own CUDA stream (search.resources.pack: false runs one process per trial)"
                if gpu_share else "packing: the trials of each node run in one host process "
                "(search.resources.pack: true on the CPU)")
    restore = resume and _tune_started(exp_path)
    if resume and not restore:  # stopped after its run folder was made, before Tune wrote anything
        printer(f"note: {name!r} was stopped before any trial started: starting its trials now")
    tuner = _tuner(space, ranking, halving, base=base, gpu_share=gpu_share, conc=conc,
                   registry=registry,
                   storage_root=storage_root, name=name, run_dir=run_dir, resume=restore,
                   exp_path=exp_path, callback=make_callback(
                       tracking, list(space.params), space.budget, ranking, space.num_trials(),
                       printer))
    printer(f"search {name!r}: {space.num_trials()} trials of up to {space.budget} epochs, "
            f"{conc or 'unlimited'} at a time; results in {exp_path}")
    if halving is not None:
        printer(f"early stopping: rungs at epochs {halving.rungs}, keep the best 1/"
                f"{s.scheduler.reduction_factor:g} at each "
                f"({'decided when the rung is complete' if s.scheduler.synchronous else 'asynchronous'})")
    printer(f"ranking: {ranking.describe()}")
    _print_mlflow(printer, tracker, parent_id)
    t0 = time.time()
    previous = _sigterm_as_ctrl_c()
    try:
        results = _fit(tuner, tracker, parent_id, name, exp_path)
        # Tune takes the first Ctrl-C itself: it saves the experiment state and returns early, with
        # trials still pending, running or paused (it marks them all terminated). Nothing is lost,
        # but the search has not finished.
        records = [_record(r, space, ranking) for r in results]
        unfinished = len(_unfinished(records, run_dir / RUNGS_FILE))
        if unfinished:
            _interrupted(tracker, parent_id, f"search {name!r} interrupted: "
                         f"{len(results) - unfinished} of {len(results)} trials finished; their "
                         f"results and the other trials' checkpoints are saved in {exp_path}")
        trials = folder.write_tables(records, list(space.params))
        tracker.close_orphans()
        if s.finalists.enabled and ranking.best(trials) is not None:
            _finalists_stage(space, folder, ranking.rank(trials), ranking, tracker=tracker,
                             parent_id=parent_id, tracking=tracking, base=base, gpu_share=gpu_share,
                             conc=conc, registry=registry, exp_path=exp_path, resume=resume,
                             printer=printer, eval_size=dataset.n_val if dataset is not None else None)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if registry is not None:
            stop_registry(registry, printer)
    wall = time.time() - t0
    exported = _export(folder, space, printer)
    for p in exported:
        tracker.log_artifact(parent_id, p, "best")
    _log_answer(folder, tracker, parent_id)
    tracker.log_artifact(parent_id, folder.trials_path)
    _report(folder, tracker, parent_id, printer)
    best = ranking.best(trials)
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    summary = {"wall_seconds": wall, "trials": len(trials),
               **{f"trials_{k}": v for k, v in counts.items()}}
    if best is not None:
        summary["best_score"] = float(best["score"])
        summary["best_val_acc"] = float(best["best_val_acc"])
        tracker.log_params(parent_id, {f"best.{k}": best[k] for k in space.params})
        tracker.set_tags(parent_id, {"tfkd.best_trial": best["trial_id"],
                                     "tfkd.export": str(folder.best_dir)})
    tracker.log_metrics(parent_id, summary)
    tracker.finish(parent_id, "FINISHED")
    folder.update_state(finished=True, finished_at=time.time(), wall_seconds=wall)
    if object_store:
        try:
            upload_results(run_dir, exp_path)
            printer(f"results copied to {exp_path} (local copy: {run_dir})")
        except Exception as err:  # noqa: BLE001 - the local copy is complete; say how to retry
            printer(f"warning: could not copy the results to {exp_path} ({type(err).__name__}: "
                    f"{err}); they are complete in {run_dir}")
    printer(f"search finished in {wall:.0f} s")
    printer(summary_text(trials, space, ranking, exported, folder.path))
    _print_mlflow(printer, tracker, parent_id)
    return SearchOutcome(run_dir=run_dir, trials=trials, exported=exported,
                         mlflow_uri=uri, parent_run_id=parent_id)


def _tuner(space: Space, ranking: Ranking, halving: Halving | None, *, base: dict[str, Any],
           gpu_share: float, conc: int | None, storage_root: str, name: str, run_dir: Path,
           resume: bool, exp_path: str, callback: Any, registry: Any = None) -> Any:
    from ray.tune import TuneConfig, Tuner

    s = space.spec.search
    fn = trainable(run_trial, space, ranking, base=base, gpu_share=gpu_share, registry=registry,
                   rungs=halving.rungs if halving is not None else [])
    if resume:
        return restore(exp_path, fn)
    from .searchers import make_searcher

    # With synchronous rungs, trials waiting at a rung hold no resources: the searcher caps only the
    # others (told which wait by the scheduler), and only where the space sets max_concurrent (the
    # resources cap the rest); the scheduler caps the trials it resumes.
    sync = halving is not None and halving.synchronous
    searcher = make_searcher(space, ranking, conc if not sync or s.max_concurrent else None,
                             rungs_wait=sync)
    scheduler = (make_scheduler(halving, run_dir / RUNGS_FILE, max_running=conc if sync else None)
                 if halving is not None else None)
    return Tuner(
        fn,
        param_space={k: to_tune(d) for k, d in space.params.items()},
        tune_config=TuneConfig(metric=SCORE, mode=ranking.mode, search_alg=searcher,
                               scheduler=scheduler, num_samples=s.num_samples,
                               trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
                               reuse_actors=True),  # torch imports once per actor, not per trial
        run_config=run_config(space, name=name, storage_path=storage_root, callback=callback))


def _fit(tuner: Any, tracker: Tracker, parent_id: str, name: str, exp_path: str) -> Any:
    try:
        return tuner.fit()
    except KeyboardInterrupt:  # a second Ctrl-C, while Tune saves after the first
        tracker.finish(parent_id, "KILLED")
        raise Interrupted(f"search {name!r} interrupted while Tune saved its state; the trials' "
                          f"checkpoints are in {exp_path}") from None


def _interrupted(tracker: Tracker, parent_id: str, message: str) -> None:
    tracker.close_orphans()
    tracker.finish(parent_id, "KILLED")
    raise Interrupted(message)


def _finalists_stage(space: Space, folder: RunFolder, ranked: Any, ranking: Ranking, *,
                     tracker: Tracker, parent_id: str, tracking: dict[str, Any], base: dict[str, Any],
                     gpu_share: float, conc: int | None, registry: Any, exp_path: str, resume: bool,
                     printer: Printer, eval_size: int | None = None) -> Any:
    """Train the finalists and baselines on fresh seeds (`finalstage`) and write finalists.parquet.
    The plan is saved in search.json first, so `--resume` runs exactly the same runs. `eval_size`: the
    validation split's size, when the driver read the dataset's facts (the answer says it)."""
    from ..export import teacher_seed

    state = folder.read_state()
    plan = state.get("finalists_plan")
    if not plan:
        plan = finalstage.make_plan(space, ranked, teacher_seed(space.base_dict()), eval_size)
        folder.update_state(finalists_plan=plan)
    runs = finalstage.runs_of(plan)
    path = finalstage.stage_path(exp_path)
    restore = resume and _tune_started(path)
    names = ", ".join(f"{e['name']} ({e['label']})" for e in plan["entries"])
    printer(f"finalists: {len(runs)} runs of {space.budget} epochs: {names}, on seeds {plan['seeds']}"
            f"{' (resumed)' if restore else ''}")
    tuner = finalstage.tuner(space, plan, ranking, base=base, gpu_share=gpu_share, conc=conc,
                             exp_path=exp_path, resume=restore, registry=registry,
                             callback=make_callback(tracking, [], space.budget, ranking, len(runs),
                                                    printer, describe=finalstage.describe_run))
    results = _fit(tuner, tracker, parent_id, space.spec.name, path)
    done = [finalstage.record(r, space, ranking) for r in results]
    left = [rec for _, rec in done if rec.status not in ENDED]
    if left or len(done) < len(runs):
        _interrupted(tracker, parent_id, f"search {tracking['experiment']!r} interrupted in its "
                     f"finalists stage: {len(done) - len(left)} of {len(runs)} runs finished; their "
                     f"results and the other runs' checkpoints are saved in {path}")
    order = {(r["name"], r["seed"]): i for i, r in enumerate(runs)}
    done.sort(key=lambda d: order.get((d[0].get("name"), d[0].get("seed")), len(order)))
    frame = folder.write_finalists(done, list(space.params))
    tracker.close_orphans()
    tracker.log_artifact(parent_id, folder.finalists_path)
    return frame


def _tune_started(exp_path: str) -> bool:
    """Whether Tune saved an experiment at `exp_path` (a folder or an object-store URI) to restore."""
    from ray.tune import Tuner

    return bool(Tuner.can_restore(exp_path))


def _sigterm_as_ctrl_c() -> Any:
    """A SIGTERM (`kill`, a batch system's preemption notice) stops the search as Ctrl-C does: Tune
    saves its state and the search exits to be resumed, instead of Ray's handler aborting the
    driver. Returns the handler it replaced (None off the main thread, where none can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))


def _unfinished(records: list[TrialRecord], rungs_file: Path) -> list[str]:
    """Trials that have not ended: not errored, not diverged, short of the budget and not stopped at
    a rung (the halving's own record, `rungs_file`)."""
    saved = read_halving(rungs_file)
    stopped = saved.ended() if saved is not None else set()
    return [r.trial_id for r in records if r.status not in ENDED and r.trial_id not in stopped]


def _record(result: Any, space: Space, ranking: Ranking) -> TrialRecord:
    """A Tune `Result` of the search as the run folder's trial record."""
    config = result.config or {}  # None for a trial that never started
    return record_of(result, {k: config.get(k) for k in space.params}, budget=space.budget,
                     ranking=ranking)


def _export(folder: RunFolder, space: Space, printer: Printer) -> list[Path]:
    from ..export import export_best

    try:
        return export_best(folder.path, top=space.spec.export.top_k)
    except TfkdError as err:  # the trials are saved; a bad export block must not lose them
        printer(f"warning: export failed: {err}; fix the space's export block and run "
                f"'tfkd-search export {folder.path}'")
        return []


def _log_answer(folder: RunFolder, tracker: Tracker, parent_id: str) -> None:
    """The finalists' answer on the parent run: the table as an artifact, each finalist's and
    baseline's mean as a metric, rank 1's verdict against the stronger baseline as tags."""
    from ..export import ANSWER_FILE

    rows = folder.standings()
    if not rows:
        return
    answer = folder.best_dir / ANSWER_FILE
    if answer.exists():
        tracker.log_artifact(parent_id, answer, "best")
    tracker.log_metrics(parent_id, {f"final.{r.name}.mean": r.summary.mean for r in rows})
    top = rows[0].headline()
    if top is not None:
        tracker.set_tags(parent_id, {"tfkd.verdict": f"{top.verdict} ({rows[0].against})",
                                     "tfkd.verdict_diff": f"{top.diff:+.4f}",
                                     "tfkd.verdict_interval": "none" if top.low is None
                                     else f"[{top.low:+.4f}, {top.high:+.4f}]"})


def _report(folder: RunFolder, tracker: Tracker, parent_id: str, printer: Printer) -> None:
    step = "written"
    try:  # the report is a bonus: it must never make a finished search fail
        from ..report import report_files, write_report

        index = write_report(folder.path, log_mlflow=False, warn=lambda m: printer(f"warning: {m}"))
        step = "logged to MLflow"
        for p in report_files(index):
            tracker.log_artifact(parent_id, p, "report")
        printer(f"report: {index}")
    except Exception as err:  # noqa: BLE001
        printer(f"warning: the report could not be {step} ({type(err).__name__}: {err}); the "
                f"search is saved, retry with 'tfkd-search report {folder.path}'")


def _print_mlflow(printer: Printer, tracker: Tracker, parent_id: str) -> None:
    printer(f"MLflow: {tracker.uri} (experiment {tracker.experiment!r}); the trials are child runs "
            f"folded under the parent run 'search-{tracker.experiment}' in the experiment's Runs tab")
    for line in tracker.ui_hints(parent_id):
        printer(f"  {line}")


def _already_finished(folder: RunFolder, state: dict[str, Any], space: Space, ranking: Ranking,
                      printer: Printer) -> SearchOutcome:
    note = folder.rebuild_tables()
    if note:
        printer(note)
    trials = folder.read_trials()
    exported = sorted(folder.best_dir.glob("rank*.yaml"))
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(state.get("finished_at") or 0))
    printer(f"search {state.get('name')!r} already finished ({when}); nothing to resume. Its results "
            f"({folder.path}):")
    printer(summary_text(trials, space, ranking, exported, folder.path))
    return SearchOutcome(run_dir=folder.path, trials=trials, exported=exported,
                         mlflow_uri=str(state.get("mlflow_uri") or ""),
                         parent_run_id=state.get("parent_run_id"), already_finished=True)


def summary_text(trials: Any, space: Space, ranking: Ranking, exported: list[Path],
                 run_dir: Path | None = None) -> str:
    """The end-of-search summary: outcome counts, the top trials by the ranking rule, the finalists'
    answer, next steps."""
    from ..export import answer_text

    counts = trials["status"].value_counts() if len(trials) else {}
    lines = [f"{len(trials)} trials: " + ", ".join(f"{n} {k.replace('_', ' ')}"
                                                  for k, n in counts.items())]
    ranked = ranking.rank(trials)
    if len(ranked):
        cols = ["trial_id", "status", "epochs", "score", "best_val_acc", *space.params]
        shown = min(SHOWN, len(ranked))
        lines.append(f"top {shown} of {len(trials)} trials, ranked by {ranking.describe()} "
                     f"(all trials: trials.parquet):")
        lines.append(ranked.head(SHOWN)[cols].to_string(index=False,
                                                        float_format=lambda v: f"{v:.4g}"))
    answer = answer_text(run_dir) if run_dir is not None else None
    if answer:
        lines.append(answer)
    if exported:
        lines.append("exported configs for full runs:")
        lines += [f"  {p}" for p in exported]
        lines.append(f"next: tfkd-search final {run_dir}   (every exported config and baseline on "
                     f"the same seeds, full schedule)" if run_dir is not None else
                     f"next: tfkd-search train --config {exported[0]} --seeds 3")
    return "\n".join(lines)
