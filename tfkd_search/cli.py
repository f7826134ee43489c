"""Command line: `tfkd-search --space FILE` (the search) and the subcommands train/export/validate/report.

Exit codes (one rule, `errors.py`): 0 success; 2 the input is wrong (a config, a space, a flag value,
a path, a missing dataset, a corrupt checkpoint: fix the command or a file); 3 the environment is wrong
(a Ray cluster or MLflow server that does not answer, GPUs the machine or cluster lacks, a storage
folder that cannot be written or seen from the nodes); 1 the run itself failed (no trial finished,
every seed diverged, an unexpected error). Errors print one message without a traceback (`--debug`
shows it).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import ConfigError, Interrupted, TfkdError

EPILOG = """examples:
  tfkd-search --space search_spaces/quickstart.yaml              # CPU, digits, about a minute
  tfkd-search --space search_spaces/tfkd_reg.yaml --gpus 8        # 8 GPUs, packed trials
  tfkd-search --space search_spaces/tfkd_reg.yaml --dry-run       # show the plan only
  tfkd-search --space SPACE --resume --name NAME                  # continue an interrupted search
  tfkd-search export tfkd_runs/NAME --top 3                       # best configs -> NAME/best/
  tfkd-search final tfkd_runs/NAME --gpus 4                       # exported configs vs CE and LSR
  tfkd-search train --config tfkd_runs/NAME/best/rank1.yaml --seeds 3 --gpus 3
  mlflow ui --backend-store-uri sqlite:///$PWD/tfkd_runs/mlflow.db --host 127.0.0.1
"""
SUBCOMMANDS = ("train", "export", "final", "validate", "report")
# overrides that come from flags, named by their flag in error messages
FLAG_LABELS = {"base.data.data_dir": "--data-dir", "base.data.download": "--download"}


def _common(p: argparse.ArgumentParser, overrides: bool = True) -> None:
    if overrides:
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value by its dotted path, e.g. --set loss.tau=20 "
                            "(repeatable; values are YAML)")
    p.add_argument("--debug", action="store_true",
                   help="show Python tracebacks on errors and the libraries' INFO lines")


def _code_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--code-dir", action="append", default=[], metavar="DIR",
                   help="a folder holding the modules your model references name (repeatable); it "
                        "is put on the import path here and shipped to every Ray worker (the "
                        "current folder is searched too)")


def _training_flags(p: argparse.ArgumentParser, data_default: str, mlflow_default: str) -> None:
    """The flags of the commands that train run configs (train, final)."""
    p.add_argument("--data-dir", help=f"dataset folder (default {data_default})")
    p.add_argument("--download", action="store_true", help="download CIFAR if missing")
    p.add_argument("--mlflow-uri", help=f"MLflow tracking URI (default {mlflow_default})")
    p.add_argument("--no-mlflow", action="store_true", help="do not track in MLflow")
    _code_flag(p)
    _ray_flags(p)


def _ray_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpu-wait", type=float, default=float(os.environ.get("TFKD_GPU_WAIT_S") or 0),
                   metavar="SECONDS", help="on an autoscaling cluster, ask for the GPUs and wait up "
                                           "to SECONDS for them (default 0; env TFKD_GPU_WAIT_S)")
    p.add_argument("--ray-temp-dir", default=os.environ.get("TFKD_RAY_TMPDIR"), metavar="DIR",
                   help="session folder of the embedded Ray (default Ray's /tmp/ray; env "
                        "TFKD_RAY_TMPDIR)")


def _search_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tfkd-search", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Search Teacher-free KD hyperparameters (tau, alpha, a) with Ray Tune, ASHA, "
                    "Optuna and MLflow. Subcommands: train, export, final, validate, report "
                    "(tfkd-search SUBCOMMAND --help).")
    p.add_argument("--space", required=True, help="search-space YAML (see search_spaces/)")
    p.add_argument("--gpus", type=float, default=0,
                   help="GPUs the search may use (0 = CPU only); the space's resources.gpu says "
                        "what share of one GPU a trial takes")
    p.add_argument("--address", help="join an existing Ray cluster (auto or HOST:PORT); default: "
                                     "start an embedded local Ray")
    p.add_argument("--storage", default="./tfkd_runs",
                   help="folder or s3:// / gs:// URI for results (default ./tfkd_runs)")
    p.add_argument("--results-dir", default=os.environ.get("TFKD_RESULTS_DIR"), metavar="DIR",
                   help="with an object-store --storage: the local folder for the result files, "
                        "copied to the bucket at the end (default ./tfkd_runs; env TFKD_RESULTS_DIR)")
    p.add_argument("--name", help="run name (default: the space's name); results in STORAGE/NAME")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search")
    p.add_argument("--mlflow-uri", help="MLflow tracking URI (default sqlite in --storage)")
    p.add_argument("--data-dir", help="dataset folder (default ./data)")
    p.add_argument("--download", action="store_true", help="download CIFAR if missing (network)")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything the real run checks (space, models, GPUs, address, MLflow, "
                        "dataset, teacher) and print the plan with each model's size; starts no Ray "
                        "and writes nothing")
    _code_flag(p)
    _ray_flags(p)
    _common(p)
    return p


def _sub_parser(cmd: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"tfkd-search {cmd}")
    if cmd == "train":
        p.description = "Train one run config (e.g. an exported best/rank1.yaml), for one or more seeds."
        p.add_argument("--config", required=True, help="run-config YAML")
        p.add_argument("--seeds", type=int, help="number of seeds (default: the config's seeds)")
        p.add_argument("--gpus", type=float, default=0, help="train seeds in parallel on N GPUs")
        p.add_argument("--out", help="run folder (default STORAGE/train/NAME)")
        p.add_argument("--storage", default="./tfkd_runs", help="default ./tfkd_runs")
        p.add_argument("--resume", action="store_true", help="continue from the run's checkpoints")
        _training_flags(p, data_default="./data", mlflow_default="sqlite in --storage")
    elif cmd == "export":
        p.description = ("Write the top-k configs of a search to RUN_DIR/best/rank<k>.yaml (in the "
                         "finalists' order, when the search had finalists) and the baselines "
                         "baseline-ce.yaml, baseline-lsr.yaml with the same recipe; print the answer "
                         "table (mean ± std over seeds, difference to CE and LSR with 95% intervals).")
        p.add_argument("run_dir")
        p.add_argument("--top", type=int, help="how many configs (default: the space's export.top_k)")
    elif cmd == "final":
        p.description = ("The final comparison: train every exported config of a search "
                         "(RUN_DIR/best/rank<k>.yaml) and the baselines (baseline-ce.yaml, "
                         "baseline-lsr.yaml) on the same seeds at the full schedule, then print mean "
                         "± std over seeds and the paired difference to CE and LSR with 95% intervals "
                         "and a verdict. Run folders in RUN_DIR/final/; --resume continues them.")
        p.add_argument("run_dir")
        p.add_argument("--seeds", type=int, help="number of seeds (default: the exported configs' seeds)")
        p.add_argument("--gpus", type=float, default=0, help="train the runs in parallel on N GPUs")
        p.add_argument("--resume", action="store_true",
                       help="keep finished runs, continue unfinished ones from their checkpoints")
        _training_flags(p, data_default="the configs' data.data_dir",
                        mlflow_default="sqlite beside RUN_DIR")
    elif cmd == "validate":
        p.description = "Check a search space (or run config with --config) and print the plan."
        p.add_argument("space", nargs="?")
        p.add_argument("--config", help="validate a run config instead")
        _code_flag(p)
    elif cmd == "report":
        p.description = "Write RUN_DIR/report/index.html with plots of a search."
        p.add_argument("run_dir")
    _common(p, overrides=cmd in ("train", "validate"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv[0] if argv and argv[0] in SUBCOMMANDS else "search"
    parser = _sub_parser(cmd) if cmd != "search" else _search_parser()
    args = parser.parse_args(argv[1:] if cmd != "search" else argv)
    _quiet_libraries(args.debug)
    if not hasattr(args, "overrides"):
        args.overrides = []
    try:
        return _dispatch(cmd, args)
    except Interrupted as err:
        print(f"tfkd-search: {err}; continue with: {_resume_command(argv)}", file=sys.stderr)
        return err.exit_code
    except TfkdError as err:
        if args.debug:
            raise
        print(f"tfkd-search: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 1)
    except KeyboardInterrupt:
        hint = (f"; the runs' checkpoints are kept: continue with: {_resume_command(argv)}"
                if cmd == "train" else "")
        print(f"tfkd-search: interrupted{hint}", file=sys.stderr)
        return Interrupted.exit_code
    except Exception as err:  # noqa: BLE001 - last resort: one line, no traceback
        if args.debug:
            raise
        print(f"tfkd-search: error: {type(err).__name__}: {err} (run with --debug for details)",
              file=sys.stderr)
        return 1


def _resume_command(argv: list[str]) -> str:
    """The command line that continues an interrupted search or train: the same, with --resume."""
    return shlex.join(["tfkd-search", *argv, *([] if "--resume" in argv else ["--resume"])])


def _quiet_libraries(debug: bool) -> None:
    """Library INFO chatter (MLflow's table creation, Tune's state writes) only with --debug."""
    import logging

    if debug:
        return
    for name in ("mlflow", "alembic", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _printer(msg: str) -> None:
    print(msg, flush=True)


def _dispatch(cmd: str, args: argparse.Namespace) -> int:
    from .overrides import parse_set

    overrides = parse_set(args.overrides)
    if cmd == "search":
        return _search(args, overrides)
    if cmd == "train":
        return _train(args, overrides)
    if cmd == "export":
        from .export import answer_text, export_best

        for p in export_best(args.run_dir, top=args.top):
            print(p)
        answer = answer_text(args.run_dir)
        if answer:
            print(answer)
        return 0
    if cmd == "final":
        return _final(args)
    if cmd == "validate":
        return _validate(args, overrides)
    if cmd == "report":
        from .report import write_report

        print(write_report(args.run_dir))
        return 0
    raise AssertionError(cmd)


def describe_user_data(cfg: object, source: str, prefix: str = "") -> object:
    """The checked facts of an imagefolder/npz dataset (relative paths from here), no decoding."""
    from .runs import check_dataset, resolve_paths

    return check_dataset(resolve_paths(cfg), source, prefix)


def _ray_options(args: argparse.Namespace, code_dirs: list[Path], tree: object) -> object:
    """How to reach Ray, with the user's model code that `tree` (a config or space) names."""
    from .search import RayOptions
    from .usercode import py_modules, targets_in

    address = getattr(args, "address", None)
    return RayOptions(address=address, gpu_wait=args.gpu_wait, temp_dir=args.ray_temp_dir,
                      debug=args.debug,
                      py_modules=tuple(py_modules(code_dirs, targets_in(tree), cluster=bool(address))))


def _search(args: argparse.Namespace, overrides: dict[str, object]) -> int:
    from .config import USER_DATASETS
    from .spaces import describe, load_space

    if args.gpus < 0:
        raise ConfigError(f"--gpus {args.gpus:g}: must be 0 (CPU only) or more")
    if args.data_dir:
        overrides["base.data.data_dir"] = os.path.abspath(args.data_dir)
    if args.download:
        overrides["base.data.download"] = True
    space = load_space(args.space, overrides, labels=FLAG_LABELS)
    from .preflight_model import check_space_models, shape_of
    from .search import preflight, run_search, shutdown
    from .usercode import use_code_dirs

    # the dry run checks exactly what the real run checks before it starts Ray
    code_dirs = use_code_dirs(args.code_dir)
    preflight(args.address, args.gpus, args.mlflow_uri)
    facts = gpu = None
    if not args.address:
        # Everything runs on this machine: check the base config's dataset (described from its
        # listing and headers), models and teacher checkpoint now, not in every trial (on a cluster
        # those files live on the worker nodes: the search checks them there, check_inputs_on_nodes).
        # The real search then decodes your own images into
        # the cache here, once, before any trial starts.
        from .data import visible_gpu
        from .runs import check_fits, preflight as check_inputs, resolve_paths
        from .spaces import dataset_memory
        from .trainer import load_run_data

        base = resolve_paths(space.base)
        user = base.data.dataset in USER_DATASETS
        facts, _, _ = check_inputs(base, source=args.space, prefix="base.", load=False, models=False)
        if user:  # the searched values that depend on the class count (loss.a > 1/C)
            space = load_space(args.space, overrides, labels=FLAG_LABELS,
                               num_classes=facts.num_classes)
        gpu = visible_gpu() if args.gpus else None
        check_fits(*dataset_memory(space, args.gpus, facts, gpu),
                   fix="set base.data.image_size smaller, put fewer trials on a GPU "
                   "(search.resources.gpu) or pack them (search.resources.pack: true: one copy per GPU)")
    # the driver imports the user's model code, as the trials will
    models = check_space_models(space, zoo=args.dry_run,
                                shape=shape_of(facts) if facts is not None else None)
    if facts is not None and not (args.dry_run and user):
        load_run_data(base)
    if args.dry_run:
        print(describe(space, gpus=args.gpus, cpus=os.cpu_count(), facts=facts, gpu=gpu,
                       models=models))
        print("dry run: every check passed; nothing started")
        return 0
    if not args.debug:  # a failed trial is reported once by the search (and kept in trials.parquet,
        # MLflow and the trial's error.txt); Ray Tune would also print its traceback every attempt
        import logging

        logging.getLogger("ray.tune.execution.tune_controller").addFilter(
            lambda record: not str(record.msg).startswith("Trial task failed"))
        # after a Ctrl-C the search says what was saved and how to go on (`--resume`, not Tune's
        # `Tuner.restore`), and the trials that never started are no failure
        for logger, dropped in (("ray.tune.tune", ("Trials did not complete", "Experiment has been "
                                                   "interrupted")),
                                ("ray.tune.analysis.experiment_analysis", ("Failed to fetch metrics",))):
            logging.getLogger(logger).addFilter(
                lambda record, dropped=dropped: not str(record.msg).startswith(dropped))
    try:
        ray_options = _ray_options(args, code_dirs, space.raw)
        outcome = run_search(space, gpus=args.gpus, ray_options=ray_options,
                             storage=args.storage, name=args.name, resume=args.resume,
                             mlflow_uri=args.mlflow_uri, results_dir=args.results_dir,
                             printer=_printer, dataset=facts, models=models)
    finally:
        shutdown()
    trials = outcome.trials
    if len(trials) and not trials["status"].isin(["completed", "stopped_early"]).any():
        counts = ", ".join(f"{n} {k}" for k, n in trials["status"].value_counts().items())
        print(f"tfkd-search: error: no trial finished ({counts}); the reasons are in the 'error' "
              f"column of {outcome.run_dir / 'trials.parquet'} and the tfkd.error tags of the "
              f"MLflow trial runs", file=sys.stderr)
        return 1
    return 0


def _train(args: argparse.Namespace, overrides: dict[str, object]) -> int:
    from .config import config_to_dict, load_run_config, override_labels
    from .modelref import model_label
    from .runs import check_fits, preflight, prepare_out, resolve_paths, seeds_for, train_seeds
    from .usercode import use_code_dirs

    code_dirs = use_code_dirs(args.code_dir)
    if args.data_dir:
        overrides["data.data_dir"] = os.path.abspath(args.data_dir)
    if args.download:
        overrides["data.download"] = True
    labels = {k.removeprefix("base."): v for k, v in FLAG_LABELS.items()}
    cfg = resolve_paths(load_run_config(args.config, overrides, labels=labels))
    seeds = seeds_for(cfg, args.seeds)
    out = Path(args.out) if args.out else Path(args.storage) / "train" / cfg.name
    uri = None
    if not args.no_mlflow:
        from .tracking import check_reachable, default_tracking_uri

        uri = args.mlflow_uri or default_tracking_uri(args.storage)
        check_reachable(uri)
    if args.gpus:
        from .search import check_local_gpus

        check_local_gpus(args.gpus)
    # data, models and teacher before any folder or MLflow run exists: a bad input leaves nothing
    facts, data, models = preflight(cfg, source=args.config,
                                    origins=override_labels(overrides, labels))
    if args.gpus or cfg.device != "cpu":
        from .data import visible_gpu
        from .userdata import memory_plan

        check_fits(*memory_plan(facts.resident_bytes, 1, visible_gpu(here=True)),
                   fix="set data.image_size smaller or train on a GPU with more memory")
    prepare_out(out, seeds, args.resume)
    tracker = None
    if uri is not None:
        from .tracking import Tracker

        Path(args.storage).mkdir(parents=True, exist_ok=True)
        tracker = Tracker(uri, cfg.name.rsplit("-rank", 1)[0], debug=args.debug)
    print(f"training {model_label(cfg.model)} with {cfg.method} on {cfg.data.dataset}: "
          f"{cfg.schedule.trained_epochs} epochs, seeds {seeds}; run folder {out}", flush=True)
    results = train_seeds(cfg, seeds, out, resume=args.resume, gpus=args.gpus, tracker=tracker,
                          printer=_printer, data=data, progress=sys.stderr.isatty(),
                          ray_options=_ray_options(args, code_dirs, config_to_dict(cfg)),
                          facts=facts, models=models)
    if args.gpus:
        from .search import shutdown

        shutdown()
    return 1 if all(r.status == "diverged" for r in results) else 0


def _final(args: argparse.Namespace) -> int:
    from .final import exported_configs, run_final
    from .usercode import use_code_dirs

    if args.gpus < 0:
        raise ConfigError(f"--gpus {args.gpus:g}: must be 0 (CPU only) or more")
    overrides: dict[str, object] = {}
    if args.data_dir:
        overrides["data.data_dir"] = os.path.abspath(args.data_dir)
    if args.download:
        overrides["data.download"] = True
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run folder; pass the folder <storage>/<name> of a search")
    tracker = None
    if not args.no_mlflow:
        from .tracking import Tracker, check_reachable, default_tracking_uri

        uri = args.mlflow_uri or default_tracking_uri(run_dir.resolve().parent)
        check_reachable(uri)
        tracker = Tracker(uri, run_dir.resolve().name, debug=args.debug)
    if args.gpus:
        from .search import check_local_gpus

        check_local_gpus(args.gpus)
    from .config import read_yaml

    code_dirs = use_code_dirs(args.code_dir)
    trees = [read_yaml(p) for p in exported_configs(run_dir).values()]  # the models they name
    table, _ = run_final(run_dir, seeds=args.seeds, gpus=args.gpus, resume=args.resume,
                         overrides=overrides, tracker=tracker,
                         ray_options=_ray_options(args, code_dirs, trees), printer=_printer)
    if args.gpus:
        from .search import shutdown

        shutdown()
    try:  # the report's answer section gains the final runs; a report failure loses nothing
        from .report import write_report

        print(f"report: {write_report(run_dir, log_mlflow=False)}")
    except Exception as err:  # noqa: BLE001
        print(f"warning: the report could not be written ({type(err).__name__}: {err}); retry with "
              f"'tfkd-search report {run_dir}'", file=sys.stderr)
    return 1 if len(table) and table["score"].isna().all() else 0


def _validate(args: argparse.Namespace, overrides: dict[str, object]) -> int:
    from .config import USER_DATASETS
    from .preflight_model import check_models, check_space_models, shape_of
    from .usercode import use_code_dirs

    if args.config:
        from .config import load_run_config, override_labels
        from .modelref import model_label

        cfg = load_run_config(args.config, overrides)
        use_code_dirs(args.code_dir)
        facts = describe_user_data(cfg, args.config) if cfg.data.dataset in USER_DATASETS else None
        models = check_models(cfg, args.config, origins=override_labels(overrides),
                              shape=shape_of(facts) if facts is not None else None)
        print(f"{args.config}: valid run config ({cfg.method} on {cfg.data.dataset}, "
              f"{model_label(cfg.model)})")
        if facts is not None:
            print(f"  dataset: {facts.summary()}")
        for f in models:
            print(f"  {f.plan_line()}")
        return 0
    if not args.space:
        raise ConfigError("validate: pass a search-space file (or --config RUN.yaml)")
    from .spaces import describe, load_space

    space = load_space(args.space, overrides)
    use_code_dirs(args.code_dir)
    facts = None
    if space.base.data.dataset in USER_DATASETS:  # your own data is checked here too (cheaply)
        facts = describe_user_data(space.base, args.space, "base.")
        space = load_space(args.space, overrides, num_classes=facts.num_classes)
    models = check_space_models(space, shape=shape_of(facts) if facts is not None else None)
    print(describe(space, cpus=os.cpu_count(), facts=facts, models=models))
    print(f"{args.space}: valid")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
